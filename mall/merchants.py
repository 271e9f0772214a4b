"""Merchants: applying with a credit code, review by center or exchange, suspension, balances."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app import audit
from app.auth import Principal
from app.errors import Duplicate, InvalidInput, InvalidState, NotFound
from app.ledger.accounts import balances
from app.ledger.models import Asset
from app.participants import organisation_id
from mall import catalog
from mall.models import Merchant, MerchantStatus
from mall.rules import check_merchant_application

log = logging.getLogger(__name__)
MAX_COMMENT = 1000


async def apply_merchant(principal: Principal, name: str, credit_code: str, contact: str) -> Merchant:
    """An organisation with the merchant role applies to join the mall (one application per code)."""
    org = principal.require_org("merchant")
    name, code, contact = check_merchant_application(name, credit_code, contact, org)
    participant_id = await organisation_id(code, name)
    if await Merchant.filter(credit_code=code).exists():
        raise Duplicate("This organisation has already applied.", "creditCode")
    try:
        merchant = await Merchant.create(
            participant_id=participant_id,
            credit_code=code,
            name=name,
            contact=contact,
            applied_by=principal.subject,
        )
    except IntegrityError:
        raise Duplicate("This organisation has already applied.", "creditCode") from None
    log.info("merchant %s applied", merchant.id)
    return merchant


def _comment(comment: str | None) -> str | None:
    text = (comment or "").strip()
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"comment must be at most {MAX_COMMENT} characters.", "comment")
    return text or None


async def _transition(
    principal: Principal,
    merchant_id: int,
    allowed_from: MerchantStatus,
    to: MerchantStatus,
    comment: str | None,
    action: str,
) -> Merchant:
    comment = _comment(comment)
    async with in_transaction() as conn:
        merchant = await Merchant.filter(id=merchant_id).select_for_update().using_db(conn).first()
        if merchant is None:
            raise NotFound("No such merchant.", "id")
        if merchant.status != allowed_from:
            raise InvalidState(
                f"The merchant is {merchant.status}; only a {allowed_from} merchant can be {to.lower()}.",
                "id",
            )
        merchant.status = to.value
        merchant.reviewed_by = principal.subject
        merchant.review_comment = comment
        merchant.reviewed_at = datetime.now(UTC)
        await merchant.save(
            using_db=conn, update_fields=["status", "reviewed_by", "review_comment", "reviewed_at"]
        )
    await audit.record(principal, action, "merchant", merchant.id, comment or "")
    await catalog.invalidate()
    return merchant


async def review_merchant(
    principal: Principal, merchant_id: int, approve: bool, comment: str | None
) -> Merchant:
    """Center or exchange approves or rejects a PENDING application."""
    principal.require("center", "exchange")
    to = MerchantStatus.APPROVED if approve else MerchantStatus.REJECTED
    return await _transition(principal, merchant_id, MerchantStatus.PENDING, to, comment, "merchant.review")


async def suspend_merchant(principal: Principal, merchant_id: int, reason: str | None) -> Merchant:
    """Suspend an approved merchant: its rights leave the mall, issued vouchers stay valid."""
    principal.require("center", "exchange")
    return await _transition(
        principal, merchant_id, MerchantStatus.APPROVED, MerchantStatus.SUSPENDED, reason, "merchant.suspend"
    )


async def reinstate_merchant(principal: Principal, merchant_id: int, reason: str | None) -> Merchant:
    """Lift a suspension: the merchant's rights return to the mall."""
    principal.require("center", "exchange")
    return await _transition(
        principal, merchant_id, MerchantStatus.SUSPENDED, MerchantStatus.APPROVED, reason,
        "merchant.reinstate",
    )


async def merchant_of(principal: Principal) -> Merchant | None:
    """The merchant application of the organisation the caller acts for, or None."""
    org = principal.require_org("merchant")
    return await Merchant.filter(credit_code=org.strip().upper()).first()


async def own_merchant(principal: Principal) -> Merchant:
    """The caller's merchant, or NOT_FOUND when its organisation has not applied."""
    merchant = await merchant_of(principal)
    if merchant is None:
        raise NotFound("Your organisation has not applied to the mall.")
    return merchant


@dataclass(frozen=True)
class MerchantBalances:
    """A merchant's pooled points (available, and held for buy-backs) and reductions held."""

    pooled_points: int
    points_on_hold: int
    reduction_grams: int


async def merchant_balances(participant_id: int) -> MerchantBalances:
    """The balances of a merchant's organisation accounts."""
    held = await balances(participant_id)
    points, points_pending = held[Asset.POINTS]
    grams, grams_pending = held[Asset.REDUCTION_GRAMS]
    return MerchantBalances(points - points_pending, points_pending, grams - grams_pending)
