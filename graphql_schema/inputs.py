"""Input types shared by several domains (one GraphQL type name, one definition)."""

from __future__ import annotations

import strawberry


@strawberry.input(description="A staff decision on an application: approve or reject, with a comment.")
class ReviewInput:
    """Used by AssessMethodology, ReviewMerchant and SettleBuyback (contract: id, approve, comment)."""

    id: strawberry.ID
    approve: bool
    comment: str | None = None
