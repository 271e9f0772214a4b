"""Applying a large chunk of records on PostgreSQL with COPY and set-based SQL.

Gives the same per-item answers as `registry.records.apply_items` (the portable path): the same
precedence (duplicate, then OUT_OF_PERIOD, then NOT_AUTHORIZED), the same duplicate rule (an
externalRef already accepted, earlier or earlier in the call), and the same clipping in index
order at the daily cap. The caller holds the scenario row lock in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.db import dialect
from registry import rules
from registry.records import Locked, Terms, apply_batch, lock_scenario
from registry.rules import Item, Outcome, Rejection

STAGE = "puhui_record_stage"
STAGE_COLUMNS = ("idx", "subject", "quantity", "grams", "occurred_at", "day", "external_ref")

_CREATE_STAGE = f"""
CREATE TEMP TABLE {STAGE} (
    idx bigint NOT NULL, subject text NOT NULL, quantity double precision NOT NULL,
    grams bigint NOT NULL, occurred_at timestamptz NOT NULL, day date NOT NULL,
    external_ref text NOT NULL
) ON COMMIT DROP
"""

# $1 scenario id, $2 scenario code, $3 now, $4 now - 90 days, $5 issued_through, $6 daily cap
_APPLY = f"""
WITH st AS (
    SELECT s.idx, s.quantity, s.grams, s.occurred_at, s.day, s.external_ref, p.id AS pid,
           EXISTS (SELECT 1 FROM registry_scenario_record r
                   WHERE r.scenario_id = $1 AND r.external_ref = s.external_ref) AS seen,
           (s.occurred_at > $3 OR s.occurred_at < $4
            OR ($5::timestamptz IS NOT NULL AND s.occurred_at <= $5::timestamptz)) AS out_of_period,
           EXISTS (SELECT 1 FROM registry_scenario_authorization a
                   WHERE a.scenario_code = $2 AND a.participant_id = p.id
                     AND a.granted_at <= s.occurred_at
                     AND (a.revoked_at IS NULL OR s.occurred_at < a.revoked_at)) AS authorized
    FROM {STAGE} s
    LEFT JOIN participant p ON p.subject = s.subject AND p.kind = 'individual'
),
own AS (
    SELECT st.*, CASE WHEN out_of_period THEN 'OUT_OF_PERIOD'
                      WHEN NOT authorized THEN 'NOT_AUTHORIZED' END AS own_code
    FROM st
),
cls AS (
    SELECT own.*,
           CASE WHEN seen OR idx > MIN(idx) FILTER (WHERE own_code IS NULL)
                                     OVER (PARTITION BY external_ref) THEN 'DUPLICATE'
                ELSE COALESCE(own_code, 'ACCEPTED') END AS status
    FROM own
),
ok AS (
    SELECT c.idx, c.pid, c.day, c.quantity, c.grams, c.occurred_at, c.external_ref,
           COALESCE(u.grams, 0)
             + SUM(c.grams) OVER (PARTITION BY c.pid, c.day ORDER BY c.idx
                                  ROWS UNBOUNDED PRECEDING)
             - c.grams AS spent
    FROM cls c
    LEFT JOIN registry_daily_usage u
      ON u.scenario_id = $1 AND u.participant_id = c.pid AND u.day = c.day
    WHERE c.status = 'ACCEPTED'
),
ins AS (
    INSERT INTO registry_scenario_record
        (scenario_id, external_ref, participant_id, quantity, computed_grams, earned_grams,
         occurred_at, day, created_at)
    SELECT $1, external_ref, pid, quantity, grams,
           CASE WHEN $6::bigint IS NULL THEN grams
                ELSE GREATEST(0, LEAST(grams, $6::bigint - spent)) END,
           occurred_at, day, $3
    FROM ok ORDER BY idx
    ON CONFLICT (scenario_id, external_ref) DO NOTHING
    RETURNING participant_id, day, earned_grams
),
usage AS (
    INSERT INTO registry_daily_usage (scenario_id, participant_id, day, grams)
    SELECT $1, participant_id, day, SUM(earned_grams) FROM ins
    GROUP BY participant_id, day HAVING SUM(earned_grams) > 0
    ON CONFLICT (scenario_id, participant_id, day)
    DO UPDATE SET grams = registry_daily_usage.grams + EXCLUDED.grams
)
SELECT idx, status FROM cls WHERE status IN ('OUT_OF_PERIOD', 'NOT_AUTHORIZED')
UNION ALL
SELECT -1, (SELECT COUNT(*) FROM ins)::text
UNION ALL
SELECT -2, (SELECT COUNT(*) FROM cls WHERE status IN ('ACCEPTED', 'DUPLICATE'))::text
"""


async def apply_items_sql(
    conn: BaseDBAsyncClient, terms: Terms, locked: Locked, items: list[Item], now: datetime
) -> Outcome:
    """COPY the checked items to a staging table and apply them in one statement."""
    outcome = Outcome()
    if not items:
        return outcome
    async with conn.acquire_connection() as raw:
        await raw.execute(_CREATE_STAGE)
        await raw.copy_records_to_table(
            STAGE,
            columns=STAGE_COLUMNS,
            records=[
                (i.index, i.subject, float(i.quantity), i.grams, i.occurred_at, i.day, i.external_ref)
                for i in items
            ],
        )
        rows = await raw.fetch(
            _APPLY,
            terms.scenario_id,
            terms.code,
            now,
            now - rules.LOOKBACK,
            locked.issued_through,
            terms.daily_cap,
        )
        await raw.execute(f"DROP TABLE {STAGE}")
    counted = 0
    for idx, status in rows:
        if idx == -1:
            outcome.accepted = int(status)
        elif idx == -2:
            counted = int(status)
        else:
            outcome.rejected.append(Rejection(idx, status, rules.MESSAGES[status]))
    outcome.duplicates = counted - outcome.accepted
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
