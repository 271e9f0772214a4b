"""Credit standing kept current: read, refresh after commit, and what the mall needs.

The standing is stored per participant together with the grams and points balances it was
computed at. Code that changes a participant's history calls `refresh_credit` after its commit;
that only queues the participant, and one flusher per process recomputes everything queued in
one batch shortly after (a flash sale's thousand refreshes become a few batched statements).
A reader that finds the stored balances differ from the ledger (a refresh still queued, a change
made elsewhere, or two refreshes racing) recomputes before answering. A change the balances do
not show (a misconduct flag) is covered by `current_standing`, which also recomputes while this
process has the participant's refresh queued. A snapshot is kept whenever the score or grade
changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from app.coalesce import Coalescer
from app.sql import as_datetime, fetch, for_dialect
from points.credit_rules import (
    CANCELLATION_WINDOW_DAYS,
    GRADES,
    CreditInputs,
    CreditResult,
    cancellation_penalty,
    compute_credit,
    grade_rank,
)
from points.models import CreditSnapshot, MisconductKind, VoucherCancellation

__all__ = [
    "GRADES",
    "Standing",
    "current_grade",
    "current_standing",
    "flush_refreshes",
    "grade_at_least",
    "note_voucher_cancellation",
    "recompute_credit",
    "recompute_many",
    "refresh_credit",
    "refresh_credit_many",
]

# Inputs of many participants at once: {ids} is replaced by $3, $4, ... (one per participant).
_INPUTS_SQL = """
SELECT p.id AS participant_id, p.created_at AS opened_at,
       COALESCE(s.reductions_earned, 0) AS reductions_earned,
       COALESCE(s.points_earned, 0) AS points_earned,
       COALESCE(s.points_spent, 0) AS points_spent,
       COALESCE(g.balance, 0) AS grams_balance,
       COALESCE(pt.balance, 0) AS points_balance,
       COALESCE(x.total, 0) AS experience,
       COALESCE(f.fraud_flags, 0) AS fraud_flags,
       COALESCE(f.other_flags, 0) AS other_flags,
       COALESCE(v.recent, 0) AS recent_cancellations,
       c.score AS old_score, c.grade AS old_grade
FROM participant p
LEFT JOIN (
    SELECT a.participant_id AS participant_id,
           SUM(CASE WHEN e.asset = 'REDUCTION_GRAMS' AND e.kind = 'ISSUANCE' AND e.amount > 0
                    THEN e.amount ELSE 0 END) AS reductions_earned,
           SUM(CASE WHEN e.asset = 'POINTS' AND e.amount > 0 AND e.kind IN ('CONVERSION', 'ISSUANCE')
                    THEN e.amount ELSE 0 END) AS points_earned,
           SUM(CASE WHEN e.asset = 'POINTS' AND e.kind IN ('REDEMPTION', 'REFUND')
                    THEN -e.amount ELSE 0 END) AS points_spent
    FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
    WHERE a.participant_id IN ({ids})
    GROUP BY a.participant_id
) s ON s.participant_id = p.id
LEFT JOIN ledger_account g ON g.participant_id = p.id AND g.asset = 'REDUCTION_GRAMS'
LEFT JOIN ledger_account pt ON pt.participant_id = p.id AND pt.asset = 'POINTS'
LEFT JOIN points_experience x ON x.participant_id = p.id
LEFT JOIN (
    SELECT participant_id,
           SUM(CASE WHEN kind = $1 THEN 1 ELSE 0 END) AS fraud_flags,
           SUM(CASE WHEN kind <> $1 THEN 1 ELSE 0 END) AS other_flags
    FROM points_misconduct_flag
    WHERE lifted_at IS NULL AND participant_id IN ({ids})
    GROUP BY participant_id
) f ON f.participant_id = p.id
LEFT JOIN (
    SELECT participant_id, COUNT(*) AS recent FROM points_voucher_cancellation
    WHERE created_at >= $2 AND participant_id IN ({ids})
    GROUP BY participant_id
) v ON v.participant_id = p.id
LEFT JOIN points_credit_standing c ON c.participant_id = p.id
WHERE p.id IN ({ids})
"""

_UPSERT_SQL = """
INSERT INTO points_credit_standing
    (participant_id, score, grade, factors, grams_mark, points_mark, experience_mark, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (participant_id) DO UPDATE SET
    score = excluded.score, grade = excluded.grade, factors = excluded.factors,
    grams_mark = excluded.grams_mark, points_mark = excluded.points_mark,
    experience_mark = excluded.experience_mark, updated_at = excluded.updated_at
WHERE points_credit_standing.updated_at <= excluded.updated_at
"""

_CURRENT_SQL = """
SELECT c.score AS score, c.grade AS grade, c.factors AS factors, c.updated_at AS updated_at,
       c.grams_mark AS grams_mark, c.points_mark AS points_mark,
       c.experience_mark AS experience_mark,
       COALESCE(g.balance, 0) AS grams_balance, COALESCE(pt.balance, 0) AS points_balance,
       COALESCE(x.total, 0) AS experience,
       (SELECT COUNT(*) FROM points_voucher_cancellation v
        WHERE v.participant_id = p.id AND v.created_at >= $2) AS recent_cancellations
FROM participant p
LEFT JOIN ledger_account g ON g.participant_id = p.id AND g.asset = 'REDUCTION_GRAMS'
LEFT JOIN ledger_account pt ON pt.participant_id = p.id AND pt.asset = 'POINTS'
LEFT JOIN points_experience x ON x.participant_id = p.id
LEFT JOIN points_credit_standing c ON c.participant_id = p.id
WHERE p.id = $1
"""
_CHUNK = 400
REFRESH_DELAY = 0.05  # seconds a queued refresh waits for others to share its batch


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


def cancellation_cutoff(now: datetime | None = None) -> datetime:
    """The earliest voucher cancellation that still counts against the standing."""
    return (now or datetime.now(UTC)) - timedelta(days=CANCELLATION_WINDOW_DAYS)


def current_stored(row: dict) -> Standing | None:
    """The stored standing in a raw row if it was computed at the balances, experience and
    recent voucher cancellations held now, else None (a cancellation leaving the 30-day window
    changes the standing though nothing else does)."""
    standing = standing_from_row(row)
    if standing is None:
        return None
    current = (
        int(row["grams_mark"]) == int(row["grams_balance"])
        and int(row["points_mark"]) == int(row["points_balance"])
        and int(row["experience_mark"]) == int(row["experience"])
        and dict(standing.factors).get("voucher_cancellations", 0)
        == cancellation_penalty(int(row["recent_cancellations"]))
    )
    return standing if current else None


async def current_standing(participant_id: int) -> Standing:
    """The participant's standing, recomputed first if it is missing, stale or due a refresh."""
    rows = await fetch(_CURRENT_SQL, [participant_id, cancellation_cutoff()])
    standing = current_stored(rows[0]) if rows and participant_id not in _refreshes else None
    return standing or await recompute_credit(participant_id)


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


async def _store(results: list[tuple[dict, CreditResult]], now: datetime) -> None:
    statement, _ = for_dialect(_UPSERT_SQL, [])
    values = [
        [int(row["participant_id"]), result.score, result.grade,
         json.dumps([list(f) for f in result.factors]), int(row["grams_balance"]),
         int(row["points_balance"]), int(row["experience"]), now]
        for row, result in results
    ]
    client = connections.get("default")
    if len(values) == 1:  # one statement, no batch transaction around it
        await client.execute_query(statement, values[0])
    else:
        await client.execute_many(statement, values)
    changed = [
        CreditSnapshot(participant_id=int(row["participant_id"]), score=result.score,
                       grade=result.grade, factors=[list(f) for f in result.factors],
                       created_at=now)
        for row, result in results
        if row["old_score"] is None or (int(row["old_score"]), row["old_grade"]) != (
            result.score, result.grade)
    ]
    if changed:
        await CreditSnapshot.bulk_create(changed)


async def recompute_many(participant_ids: Iterable[int]) -> dict[int, Standing]:
    """Recompute and store the standings of participants from their history.

    Each standing is stamped with the moment just before its inputs were read, and replaces a
    stored one only if that one is not newer: a batch that read its inputs before a change
    (a misconduct flag, say) never overwrites the standing computed after it."""
    wanted = sorted(set(participant_ids))
    standings: dict[int, Standing] = {}
    for start in range(0, len(wanted), _CHUNK):
        now = datetime.now(UTC)
        cutoff = cancellation_cutoff(now)
        chunk = wanted[start : start + _CHUNK]
        ids = ", ".join(f"${n}" for n in range(3, 3 + len(chunk)))
        rows = await fetch(_INPUTS_SQL.replace("{ids}", ids),
                           [MisconductKind.FRAUDULENT_RECORDS.value, cutoff, *chunk])
        # Stored in participant order, the order every other transaction takes standing rows
        # in (a group of redemptions recomputing its residents' grades), so none deadlock.
        rows.sort(key=lambda row: int(row["participant_id"]))
        results = [(row, compute_credit(_inputs(row, now))) for row in rows]
        if results:
            await _store(results, now)
        for row, result in results:
            standings[int(row["participant_id"])] = Standing(
                result.score, result.grade, now, result.factors)
    return standings


async def recompute_credit(participant_id: int) -> Standing:
    """Recompute and store one participant's standing (the base standing if unknown)."""
    standing = (await recompute_many([participant_id])).get(participant_id)
    if standing is None:
        result = compute_credit(CreditInputs())
        return Standing(result.score, result.grade, datetime.now(UTC), result.factors)
    return standing


_refreshes = Coalescer(recompute_many, what="refresh the credit standing", delay=REFRESH_DELAY,
                       limit=_CHUNK)


async def refresh_credit(participant_id: int) -> None:
    """Queue the standing for a refresh after a commit; a failure is logged, never raised."""
    _refreshes.add((participant_id,))


async def refresh_credit_many(participant_ids: Iterable[int]) -> None:
    """Queue several standings for a refresh after a commit; a failure is logged, never raised."""
    _refreshes.add(participant_ids)


async def flush_refreshes() -> None:
    """Recompute the standings queued now (at shutdown, or before reading stored standings)."""
    await _refreshes.flush()
