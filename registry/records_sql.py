"""Applying a large chunk of records on PostgreSQL with set-based SQL.

Gives the same per-item answers as `registry.records.apply_items` (the portable path): the same
precedence (duplicate, then OUT_OF_PERIOD, then NOT_AUTHORIZED), the same duplicate rule (an
externalRef already accepted, earlier or earlier in the call), and the same clipping in index
order at the daily cap. The caller holds the scenario row lock in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.db import dialect
from registry import rules
from registry.records import Locked, Terms, apply_batch, lock_scenario
from registry.rules import Item, Outcome, Rejection

RESIDENT_CACHE = 200_000
_residents: dict[str, int] = {}  # subject -> participant id of a resident; ids never change

# Every lookup is a correlated scalar subquery on a unique or leading index, so each costs one
# index probe per row however large the tables grow (never a scan or hash of a whole table).
# $1 scenario id, $2 scenario code, $3 now, $4 now - 90 days, $5 issued_through, $6 daily cap,
# $7.. the chunk as arrays: index, participant id (NULL: no such resident), quantity, grams,
# occurred_at, day, external_ref.
_APPLY = """
WITH st AS MATERIALIZED (
    SELECT s.idx, s.pid, s.quantity, s.grams, s.occurred_at, s.day, s.external_ref,
           (SELECT 1 FROM registry_scenario_record r
             WHERE r.scenario_id = $1 AND r.external_ref = s.external_ref LIMIT 1) IS NOT NULL AS seen,
           (s.occurred_at > $3 OR s.occurred_at < $4 OR s.occurred_at <= $5::timestamptz) IS TRUE
             AS out_of_period
    FROM unnest($7::bigint[], $8::bigint[], $9::float8[], $10::bigint[], $11::timestamptz[],
                $12::date[], $13::text[])
         AS s(idx, pid, quantity, grams, occurred_at, day, external_ref)
),
own AS MATERIALIZED (
    SELECT st.*,
           CASE WHEN seen THEN NULL
                WHEN out_of_period THEN 'OUT_OF_PERIOD'
                WHEN pid IS NULL OR (SELECT 1 FROM registry_scenario_authorization a
                                      WHERE a.scenario_code = $2 AND a.participant_id = st.pid
                                        AND a.granted_at <= st.occurred_at
                                        AND (a.revoked_at IS NULL OR st.occurred_at < a.revoked_at)
                                      LIMIT 1) IS NULL THEN 'NOT_AUTHORIZED'
           END AS own_code
    FROM st
),
cls AS MATERIALIZED (
    SELECT own.*,
           CASE WHEN seen OR idx > MIN(idx) FILTER (WHERE NOT seen AND own_code IS NULL)
                                     OVER (PARTITION BY external_ref) THEN 'DUPLICATE'
                ELSE COALESCE(own_code, 'ACCEPTED') END AS status
    FROM own
),
acc AS MATERIALIZED (
    SELECT cls.*, (SELECT u.grams FROM registry_daily_usage u
                    WHERE u.scenario_id = $1 AND u.participant_id = cls.pid
                      AND u.day = cls.day) AS used
    FROM cls WHERE status = 'ACCEPTED'
),
ok AS MATERIALIZED (
    SELECT acc.*, used IS NOT NULL AS known,
           COALESCE(used, 0)
             + SUM(grams) OVER (PARTITION BY pid, day ORDER BY idx ROWS UNBOUNDED PRECEDING)
             - grams AS spent
    FROM acc
),
earned AS MATERIALIZED (
    SELECT ok.*, CASE WHEN $6::bigint IS NULL THEN grams
                      ELSE GREATEST(0, LEAST(grams, $6::bigint - spent)) END AS earned
    FROM ok
),
ins AS (
    INSERT INTO registry_scenario_record
        (scenario_id, external_ref, participant_id, quantity, computed_grams, earned_grams,
         occurred_at, day, created_at)
    SELECT $1, external_ref, pid, quantity, grams, earned, occurred_at, day, $3
    FROM earned ORDER BY idx
),
usage_new AS (
    INSERT INTO registry_daily_usage (scenario_id, participant_id, day, grams)
    SELECT $1, pid, day, SUM(earned) FROM earned WHERE NOT known
    GROUP BY pid, day HAVING SUM(earned) > 0
),
usage_old AS (
    UPDATE registry_daily_usage u SET grams = u.grams + d.grams
    FROM (SELECT pid, day, SUM(earned) AS grams FROM earned WHERE known
          GROUP BY pid, day HAVING SUM(earned) > 0) d
    WHERE u.scenario_id = $1 AND u.participant_id = d.pid AND u.day = d.day
)
SELECT idx, status FROM cls WHERE status IN ('OUT_OF_PERIOD', 'NOT_AUTHORIZED')
UNION ALL
SELECT -1, (SELECT COUNT(*) FROM earned)::text
UNION ALL
SELECT -2, (SELECT COUNT(*) FROM cls WHERE status = 'DUPLICATE')::text
"""


async def _resident_ids(raw: Any, subjects: set[str]) -> dict[str, int]:
    """Participant ids of residents by subject: this process's cache, then one query."""
    missing = [subject for subject in subjects if subject not in _residents]
    if missing:
        if len(_residents) + len(missing) > RESIDENT_CACHE:
            _residents.clear()
        rows = await raw.fetch(
            "SELECT subject, id FROM participant"
            " WHERE kind = 'individual' AND subject = ANY($1::text[])",
            missing,
        )
        _residents.update((r["subject"], r["id"]) for r in rows)
    return _residents


async def apply_items_sql(
    conn: BaseDBAsyncClient, terms: Terms, locked: Locked, items: list[Item], now: datetime
) -> Outcome:
    """Apply checked items in one statement, the chunk passed as arrays (no staging table)."""
    outcome = Outcome()
    if not items:
        return outcome
    async with conn.acquire_connection() as raw:
        residents = await _resident_ids(raw, {i.subject for i in items})
        columns: list[list[Any]] = [[], [], [], [], [], [], []]
        for i in items:
            row = (i.index, residents.get(i.subject), float(i.quantity), i.grams, i.occurred_at,
                   i.day, i.external_ref)
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        # Plan for index probes; compiling (JIT) would cost more than running the chunk.
        await raw.execute(
            "SET LOCAL jit = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
        )
        rows = await raw.fetch(
            _APPLY,
            terms.scenario_id,
            terms.code,
            now,
            now - rules.LOOKBACK,
            locked.issued_through,
            terms.daily_cap,
            *columns,
        )
    for idx, status in rows:
        if idx == -1:
            outcome.accepted = int(status)
        elif idx == -2:
            outcome.duplicates = int(status)
        else:
            outcome.rejected.append(Rejection(idx, status, rules.MESSAGES[status]))
    outcome.rejected.sort(key=lambda r: r.index)
    return outcome


async def apply_chunk(terms: Terms, entries: list[Item | Rejection], now: datetime) -> Outcome:
    """Apply one chunk of checked entries in its own transaction under the scenario lock.

    PostgreSQL takes the set-based path; SQLite the portable one (same answers).
    """
    if dialect() != "postgres":
        return await apply_batch(terms, entries, now)
    items = [e for e in entries if isinstance(e, Item)]
    async with in_transaction() as conn:
        locked = await lock_scenario(conn, terms)
        outcome = await apply_items_sql(conn, terms, locked, items, now)
    outcome.rejected.extend(e for e in entries if isinstance(e, Rejection))
    outcome.rejected.sort(key=lambda r: r.index)
    return outcome
