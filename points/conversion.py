"""Conversion (Art. 16): the versioned rate, and residents turning grams into points.

Grams go from the resident's lots (oldest first) to the conversion reserve, keeping their lots;
points come from points issuance to the resident. Whole points only, rounding in the reserve's
favour: the remainder stays with the resident. Both legs, the Conversion row and the idempotency
claim commit together or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import InvalidInput, NotFound
from app.events import account_changed
from app.idempotency import claim
from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import Asset, EntryKind
from app.ledger.posting import HotRows, Posting, post
from app.participants import resident_id
from app.units import BIGINT_MAX, grams_to_points
from points.credit import refresh_credit
from points.models import Conversion, ConversionRule

log = logging.getLogger(__name__)
MAX_GRAMS_PER_POINT = 10**12  # a tonne of CO2e is 10**6 g: a point dearer than a megatonne is a mistake

# Every conversion ends by updating the same two system rows (the conversion reserve and points
# issuance), so conversions are serial in the database from that point to their commit whatever
# we do. Queueing that part here, one transaction per process at a time, keeps the row-lock
# holder from waiting behind this process's other conversions for the event loop and the
# connection pool (measured ~1.6x the conversions/s of no queue, bench/convert.py); the rest of
# each conversion (claim, row, the resident's own account and lots) runs meanwhile.
_RESERVE_ROWS = HotRows()


@dataclass(frozen=True)
class Rule:
    """A conversion rule version: grams per point from effective_from on."""

    id: int
    grams_per_point: int
    effective_from: datetime


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion did (also the idempotent replay of it)."""

    id: int
    grams: int
    points: int
    created_at: datetime
    participant_id: int


async def current_rule(now: datetime | None = None) -> Rule:
    """The rule in force at `now` (the latest version that has started)."""
    row = (
        await ConversionRule.filter(effective_from__lte=now or datetime.now(UTC))
        .order_by("-effective_from", "-id")
        .first()
    )
    if row is None:
        raise NotFound("No conversion rule is in force.")
    return Rule(row.id, row.grams_per_point, row.effective_from)


async def rule_in_force() -> tuple[int, int]:
    """(rule id, grams per point) of the rule in force now; conversions and buy-backs use it."""
    rule = await current_rule()
    return rule.id, rule.grams_per_point


async def set_rule(principal: Principal, grams_per_point: int) -> Rule:
    """Center: a new rule version, in force from now on."""
    principal.require("center")
    if not 0 < grams_per_point <= MAX_GRAMS_PER_POINT:
        raise InvalidInput(
            f"gramsPerPoint must be a whole number from 1 to {MAX_GRAMS_PER_POINT}.", "gramsPerPoint")
    row = await ConversionRule.create(
        grams_per_point=grams_per_point, effective_from=datetime.now(UTC), set_by=principal.subject
    )
    log.info("conversion rule %s: %s g per point, by %s", row.id, grams_per_point, principal.subject)
    return Rule(row.id, row.grams_per_point, row.effective_from)


def _result(data: dict) -> ConversionResult:
    return ConversionResult(
        id=int(data["id"]),
        grams=int(data["grams"]),
        points=int(data["points"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        participant_id=int(data["participant_id"]),
    )


async def convert(principal: Principal, grams: int, idempotency_key: str) -> ConversionResult:
    """A resident converts `grams`: whole points at the rule in force, the remainder stays."""
    principal.require("resident")
    if not 0 < grams <= BIGINT_MAX:
        raise InvalidInput("grams must be a whole number above 0.", "grams")
    participant_id = await resident_id(principal)
    rule = await current_rule()
    points, taken = grams_to_points(grams, rule.grams_per_point)
    grams_account = await holder_account_id(participant_id, Asset.REDUCTION_GRAMS)
    points_account = await holder_account_id(participant_id, Asset.POINTS)
    reserve = await system_account_id(SystemAccount.CONVERSION_RESERVE)
    issuance = await system_account_id(SystemAccount.POINTS_ISSUANCE)
    now = datetime.now(UTC)
    async with _RESERVE_ROWS.turn() as take_turn, in_transaction() as conn:
        claimed = await claim(f"convert:{participant_id}", idempotency_key, {"grams": grams}, conn)
        if claimed.replay:  # the first result, whatever the rule in force now
            return _result(claimed.result)
        if points < 1:
            raise InvalidInput(
                f"{grams} g is less than one point ({rule.grams_per_point} g per point).", "grams"
            )
        row = await Conversion.create(
            participant_id=participant_id,
            rule_id=rule.id,
            grams_per_point=rule.grams_per_point,
            asked_grams=grams,
            grams=taken,
            points=points,
            created_at=now,
            using_db=conn,
        )
        result = ConversionResult(row.id, taken, points, now, participant_id)
        await claimed.complete(
            {**result.__dict__, "created_at": now.isoformat()}, conn
        )
        # The ledger legs come last: they lock the hot system accounts for the shortest time.
        reference = f"conversion:{row.id}"
        memo = f"{taken} g -> {points} points at {rule.grams_per_point} g/point"
        await post(
            conn,
            [
                Posting(Asset.REDUCTION_GRAMS, grams_account, reserve, taken,
                        EntryKind.CONVERSION, reference, memo),
                Posting(Asset.POINTS, issuance, points_account, points,
                        EntryKind.CONVERSION, reference, memo),
            ],
            now=now,
            before_shared=take_turn,
        )
    await account_changed([participant_id])
    await refresh_credit(participant_id)
    return result
