"""What the records of an issuance earn: the daily cap settled, and each resident's total.

An issuance takes the records of its scenario that occurred in (issued_through, periodEnd]. Each
earns, in the order records were accepted (id order), what is left of the daily cap for its
(person, Shanghai day) after the earlier ones of that day, those of earlier issuances included
(a period may end within a day). Records are stored earning their computed grams; only those the
cap clips are rewritten, so an issuance of a million records rewrites only the few over a cap.
What a record may earn at most is what it is stored earning until then: its computed grams, or
nothing once voided - a record that occurred while its scenario was suspended, accepted before
such records were refused (`_void_suspended`).

On PostgreSQL one statement groups the records by (person, day), totals each person and names
the days the cap clips; a second settles the records of those days alone, record by record. On
SQLite the records are settled in Python by `rules.settle`; both give the same figures.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from app.db import dialect
from registry import rules
from registry.models import Scenario, ScenarioRecord
from registry.suspension import suspended_times

# $1 scenario, $2 period end, $3 issued_through (or EPOCH), $4 where to read from, $5 daily cap,
# $6 the earliest a record read can have been created. Sums stay numeric: a day of
# records may compute more grams than a bigint holds, its cap not.
_TOTALS = """
WITH g AS (
    SELECT participant_id AS pid, day,
           COALESCE(SUM(earned_grams) FILTER (WHERE occurred_at <= $3), 0) AS prior,
           COALESCE(SUM(earned_grams) FILTER (WHERE occurred_at > $3), 0) AS fresh,
           COUNT(*) FILTER (WHERE occurred_at > $3 AND earned_grams > 0) AS records
    FROM registry_scenario_record
    WHERE scenario_id = $1 AND created_at >= $6 AND occurred_at >= $4 AND occurred_at <= $2
    GROUP BY participant_id, day
),
e AS (
    SELECT pid, day, prior, fresh, records,
           CASE WHEN $5::bigint IS NULL THEN fresh ELSE LEAST(fresh, GREATEST($5 - prior, 0)) END AS grams
    FROM g
)
SELECT pid, SUM(grams) AS grams, SUM(records) AS records,
       MIN(day) FILTER (WHERE grams > 0) AS first_day, MAX(day) FILTER (WHERE grams > 0) AS last_day,
       array_agg(day) FILTER (WHERE grams < fresh) AS days,
       array_agg(prior) FILTER (WHERE grams < fresh) AS priors
FROM e GROUP BY pid HAVING SUM(fresh) > 0 ORDER BY pid
"""

# The records of the clipped (person, day) pairs ($6, $7, with $8 granted before), settled in id
# order and rewritten; per person, how many earn nothing though they might have. $1 scenario,
# $2 period end, $3 issued_through (or EPOCH), $4 daily cap, $5 the earliest creation read.
_SETTLE = """
WITH k AS (SELECT * FROM unnest($6::bigint[], $7::date[], $8::bigint[]) AS k(pid, day, prior)),
x AS (
    SELECT r.id, r.participant_id AS pid, r.earned_grams AS earned,
           GREATEST(0, LEAST(r.earned_grams, $4 - k.prior - COALESCE(SUM(r.earned_grams) OVER (
               PARTITION BY r.participant_id, r.day ORDER BY r.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS final
    FROM registry_scenario_record r JOIN k ON k.pid = r.participant_id AND k.day = r.day
    WHERE r.scenario_id = $1 AND r.created_at >= $5 AND r.occurred_at > $3 AND r.occurred_at <= $2
),
u AS (
    UPDATE registry_scenario_record t SET earned_grams = x.final FROM x
    WHERE t.id = x.id AND x.final <> x.earned
)
SELECT pid, COUNT(*) AS nothing FROM x WHERE final = 0 AND earned > 0 GROUP BY pid
"""


@dataclass(frozen=True)
class Total:
    """What one resident receives from an issuance, from how many records, and the first and
    last Shanghai day of the records that earn."""

    participant_id: int
    grams: int
    records: int
    first_day: date
    last_day: date


@dataclass(frozen=True)
class _Period:
    """What an issuance reads: its scenario's records that occurred in (after, end], and from
    `start` those of the day `after` falls in, for the grams already issued on that day; none
    of them created before `start` or before the scenario itself (`created_from`, the later)."""

    scenario_id: int
    end: datetime
    after: datetime
    start: datetime
    daily_cap: int | None
    created_from: datetime


async def settle_period(
    conn: BaseDBAsyncClient, scenario: Scenario, period_end: datetime, daily_cap: int | None
) -> list[Total]:
    """Settle the daily cap of the scenario's records in (issued_through, period_end]; each
    resident's total (those with grams only), in participant order. Inside `conn`'s transaction."""
    issued_through = scenario.issued_through
    start = rules.period_start(issued_through)
    period = _Period(
        scenario.id, period_end, issued_through or rules.EPOCH, start, daily_cap,
        max(start, scenario.created_at),
    )
    await _void_suspended(conn, period)
    if dialect() == "postgres":
        return await _settle_sql(conn, period)
    return await _settle_python(conn, period)


async def _void_suspended(conn: BaseDBAsyncClient, period: _Period) -> None:
    """Records of the period that occurred while the scenario was suspended earn nothing.

    Records are refused at acceptance for that (`rules.classify`); these were accepted before
    they were (a suspension read back from the audit trail by migration registry/0006). Only a
    period that overlaps a suspension reads its records for them.
    """
    for start, end in await suspended_times(conn, period.scenario_id):
        if start > period.end or (end is not None and end <= period.after):
            continue
        inside = ScenarioRecord.filter(
            scenario_id=period.scenario_id, created_at__gte=period.created_from,
            occurred_at__gt=period.after, occurred_at__lte=period.end,
            occurred_at__gte=start, earned_grams__gt=0,
        )
        if end is not None:
            inside = inside.filter(occurred_at__lt=end)
        await inside.using_db(conn).update(earned_grams=0)


async def _settle_sql(conn: BaseDBAsyncClient, period: _Period) -> list[Total]:
    async with conn.acquire_connection() as raw:
        rows = await raw.fetch(
            _TOTALS, period.scenario_id, period.end, period.after, period.start, period.daily_cap,
            period.created_from,
        )
        nothing: dict[int, int] = {}
        clipped = [r for r in rows if r["days"]]
        if clipped:
            pids = [r["pid"] for r in clipped for _ in r["days"]]
            days = [day for r in clipped for day in r["days"]]
            priors = [int(prior) for r in clipped for prior in r["priors"]]  # at most the cap
            settled = await raw.fetch(
                _SETTLE, period.scenario_id, period.end, period.after, period.daily_cap,
                period.created_from, pids, days, priors,
            )
            nothing = {r["pid"]: r["nothing"] for r in settled}
    return [
        Total(r["pid"], int(r["grams"]), int(r["records"]) - nothing.get(r["pid"], 0),
              r["first_day"], r["last_day"])
        for r in rows
        if r["grams"] > 0
    ]


async def _settle_python(conn: BaseDBAsyncClient, period: _Period) -> list[Total]:
    rows = await (
        ScenarioRecord.filter(
            scenario_id=period.scenario_id, created_at__gte=period.created_from,
            occurred_at__gte=period.start, occurred_at__lte=period.end,
        )
        .using_db(conn)
        .values_list("id", "participant_id", "day", "earned_grams", "occurred_at")
    )
    prior: dict[tuple[int, date], int] = defaultdict(int)
    fresh = []
    for record_id, pid, day, earned, occurred_at in rows:
        if occurred_at <= period.after:
            prior[(pid, day)] += earned
        else:
            fresh.append((record_id, pid, day, earned))
    settled = rules.settle(fresh, prior, period.daily_cap)
    earned_before = {record_id: earned for record_id, _, _, earned, _ in rows}
    grams: dict[int, int] = defaultdict(int)
    records: dict[int, int] = defaultdict(int)
    days: dict[int, list[date]] = defaultdict(list)
    for record_id, pid, day, _ in fresh:
        earned = settled[record_id]
        if earned != earned_before[record_id]:
            await ScenarioRecord.filter(id=record_id).using_db(conn).update(earned_grams=earned)
        if earned > 0:
            grams[pid] += earned
            records[pid] += 1
            days[pid].append(day)
    return [Total(pid, grams[pid], records[pid], min(days[pid]), max(days[pid])) for pid in sorted(grams)]
