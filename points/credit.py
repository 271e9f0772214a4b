"""Credit standing kept current: read, refresh after commit, and what the mall needs.

The standing is stored per participant together with the grams and points balances it was
computed at. Code that changes a participant's history calls `refresh_credit` after its commit;
a reader that finds the stored balances differ from the ledger (a change made elsewhere, or two
refreshes racing) recomputes before answering, so a stale standing is never served.
A snapshot is kept whenever the score or grade changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from points.credit_rules import (
    CANCELLATION_WINDOW_DAYS,
    GRADES,
    CreditInputs,
    CreditResult,
    compute_credit,
    grade_rank,
)
from points.models import CreditSnapshot, CreditStanding, VoucherCancellation
from points.sql import as_datetime, fetch

__all__ = [
    "GRADES",
    "Standing",
    "current_grade",
    "current_standing",
    "grade_at_least",
    "note_voucher_cancellation",
    "recompute_credit",
    "refresh_credit",
    "refresh_credit_many",
]

log = logging.getLogger(__name__)

_INPUTS_SQL = """
SELECT p.created_at AS opened_at,
       COALESCE(s.reductions_earned, 0) AS reductions_earned,
       COALESCE(s.points_earned, 0) AS points_earned,
       COALESCE(s.points_spent, 0) AS points_spent,
       COALESCE((SELECT balance FROM ledger_account
                 WHERE participant_id = $1 AND asset = 'REDUCTION_GRAMS'), 0) AS grams_balance,
       COALESCE((SELECT balance FROM ledger_account
                 WHERE participant_id = $1 AND asset = 'POINTS'), 0) AS points_balance,
       COALESCE((SELECT total FROM points_experience WHERE participant_id = $1), 0) AS experience,
       (SELECT COUNT(*) FROM points_misconduct_flag WHERE participant_id = $1
          AND lifted_at IS NULL AND kind = 'FRAUDULENT_RECORDS') AS fraud_flags,
       (SELECT COUNT(*) FROM points_misconduct_flag WHERE participant_id = $1
          AND lifted_at IS NULL AND kind <> 'FRAUDULENT_RECORDS') AS other_flags,
       (SELECT COUNT(*) FROM points_voucher_cancellation WHERE participant_id = $1
          AND created_at >= $2) AS recent_cancellations,
       c.score AS old_score, c.grade AS old_grade
FROM participant p
LEFT JOIN (
    SELECT SUM(CASE WHEN e.asset = 'REDUCTION_GRAMS' AND e.kind = 'ISSUANCE' AND e.amount > 0
                    THEN e.amount ELSE 0 END) AS reductions_earned,
           SUM(CASE WHEN e.asset = 'POINTS' AND e.amount > 0 AND e.kind IN ('CONVERSION', 'ISSUANCE')
                    THEN e.amount ELSE 0 END) AS points_earned,
           SUM(CASE WHEN e.asset = 'POINTS' AND e.kind IN ('REDEMPTION', 'REFUND')
                    THEN -e.amount ELSE 0 END) AS points_spent
    FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
    WHERE a.participant_id = $1
) s ON 1 = 1
LEFT JOIN points_credit_standing c ON c.participant_id = p.id
WHERE p.id = $1
"""

_CURRENT_SQL = """
SELECT c.score AS score, c.grade AS grade, c.factors AS factors, c.updated_at AS updated_at,
       c.grams_mark AS grams_mark, c.points_mark AS points_mark,
       COALESCE((SELECT balance FROM ledger_account
                 WHERE participant_id = $1 AND asset = 'REDUCTION_GRAMS'), 0) AS grams_balance,
       COALESCE((SELECT balance FROM ledger_account
                 WHERE participant_id = $1 AND asset = 'POINTS'), 0) AS points_balance
FROM participant p LEFT JOIN points_credit_standing c ON c.participant_id = p.id
WHERE p.id = $1
"""


@dataclass(frozen=True)
class Standing:
    """A participant's credit standing as clients see it."""

    score: int
    grade: str
    updated_at: datetime
    factors: tuple[tuple[str, int], ...]


def grade_at_least(grade: str, minimum: str) -> bool:
    """True when `grade` is `minimum` or above on GRADES; ValueError for an unknown grade."""
    return grade_rank(grade) >= grade_rank(minimum)


def standing_from_row(row: dict) -> Standing | None:
    """The stored standing in a raw row (score, grade, factors, updated_at), or None."""
    if row.get("score") is None:
        return None
    factors = row["factors"]
    if isinstance(factors, str):
        factors = json.loads(factors)
    return Standing(
        score=int(row["score"]),
        grade=row["grade"],
        updated_at=as_datetime(row["updated_at"]),
        factors=tuple((str(name), int(value)) for name, value in factors),
    )


def is_current(row: dict) -> bool:
    """True when a stored standing was computed at the balances the ledger holds now."""
    return (
        row.get("score") is not None
        and int(row["grams_mark"]) == int(row["grams_balance"])
        and int(row["points_mark"]) == int(row["points_balance"])
    )


async def current_standing(participant_id: int) -> Standing:
    """The participant's standing, recomputed first if it is missing or stale."""
    rows = await fetch(_CURRENT_SQL, [participant_id])
    if rows and is_current(rows[0]):
        standing = standing_from_row(rows[0])
        if standing is not None:
            return standing
    return await recompute_credit(participant_id)


async def current_grade(participant_id: int) -> str:
    """The participant's credit grade now (one of GRADES)."""
    return (await current_standing(participant_id)).grade


async def note_voucher_cancellation(participant_id: int, conn: BaseDBAsyncClient) -> None:
    """Note a voucher cancelled by the resident, inside the caller's transaction."""
    await VoucherCancellation.create(
        participant_id=participant_id, created_at=datetime.now(UTC), using_db=conn
    )


def _inputs(row: dict, now: datetime) -> CreditInputs:
    opened = as_datetime(row["opened_at"]) or now
    return CreditInputs(
        reductions_earned_grams=int(row["reductions_earned"]),
        points_earned=int(row["points_earned"]),
        points_spent=int(row["points_spent"]),
        experience=int(row["experience"]),
        days_active=max(0, (now - opened).days),
        fraud_flags=int(row["fraud_flags"]),
        other_flags=int(row["other_flags"]),
        recent_cancellations=int(row["recent_cancellations"]),
    )


async def _store(participant_id: int, result: CreditResult, row: dict, now: datetime) -> None:
    values = {
        "score": result.score,
        "grade": result.grade,
        "factors": [list(f) for f in result.factors],
        "grams_mark": int(row["grams_balance"]),
        "points_mark": int(row["points_balance"]),
        "updated_at": now,
    }
    updated = await CreditStanding.filter(participant_id=participant_id).update(**values)
    if not updated:
        try:
            await CreditStanding.create(participant_id=participant_id, **values)
        except IntegrityError:
            await CreditStanding.filter(participant_id=participant_id).update(**values)
    if row["old_score"] is None or (int(row["old_score"]), row["old_grade"]) != (
        result.score,
        result.grade,
    ):
        await CreditSnapshot.create(
            participant_id=participant_id,
            score=result.score,
            grade=result.grade,
            factors=values["factors"],
            created_at=now,
        )


async def recompute_credit(participant_id: int) -> Standing:
    """Recompute and store the participant's standing from their history."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=CANCELLATION_WINDOW_DAYS)
    rows = await fetch(_INPUTS_SQL, [participant_id, cutoff])
    if not rows:
        result = compute_credit(CreditInputs())
        return Standing(result.score, result.grade, now, result.factors)
    result = compute_credit(_inputs(rows[0], now))
    await _store(participant_id, result, rows[0], now)
    return Standing(result.score, result.grade, now, result.factors)


async def refresh_credit(participant_id: int) -> None:
    """Bring the standing up to date after a commit; a failure is logged, never raised."""
    await refresh_credit_many([participant_id])


async def refresh_credit_many(participant_ids: Iterable[int]) -> None:
    """Refresh several participants after a commit; a failure is logged, never raised."""
    for participant_id in sorted(set(participant_ids)):
        try:
            await recompute_credit(participant_id)
        except Exception:  # noqa: BLE001 - the change is committed; readers recompute if stale
            log.warning("could not refresh credit standing of participant %s", participant_id)
