"""Error codes of the mall that clients switch on."""

from __future__ import annotations

from app.errors import DomainError


class OutOfStock(DomainError):
    """The right has fewer items left than asked."""

    code = "OUT_OF_STOCK"


class PerPersonLimit(DomainError):
    """The person would hold more of this right than its per-person limit."""

    code = "PER_PERSON_LIMIT"


class RateLimited(DomainError):
    """Too many voucher lookups by one merchant in a short time."""

    code = "RATE_LIMITED"
