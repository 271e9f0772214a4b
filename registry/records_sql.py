"""Records on PostgreSQL: the lookups a batch needs, set-based, and its accepted rows by COPY.

Gives the same per-item answers as the portable path (both go by `rules.classify` and
`rules.earn`). Each lookup is an index probe per row on a unique or leading index (never a scan
or hash of a whole table); the accepted records are written with one binary COPY
(`registry.records_copy`). What depends on other batches runs under the scenario row lock the
caller holds (`apply_items`); what does not is looked up before it is taken (`prepare`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from asyncpg.exceptions import UniqueViolationError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from registry import records_copy, rules
from registry.rules import Decision, Item, Locked, Terms

RESIDENT_CACHE = 200_000
_residents: dict[str, int] = {}  # subject -> participant id of a resident; ids never change

_ONCE = "registry_record_once"

# Items (as ordinals into the arrays) whose person had no active consent at occurredAt.
_UNAUTHORIZED = """
SELECT c.n FROM unnest($2::bigint[], $3::timestamptz[]) WITH ORDINALITY AS c(pid, at, n)
WHERE (SELECT 1 FROM registry_scenario_authorization a
        WHERE a.scenario_code = $1 AND a.participant_id = c.pid AND a.granted_at <= c.at
          AND (a.revoked_at IS NULL OR c.at < a.revoked_at)
        LIMIT 1) IS NULL
"""

# Grams already earned per (participant, day) that has any record: one probe of the
# (scenario, day, participant) index per pair, the pairs given distinct in that index's order.
_USED = """
WITH u AS MATERIALIZED (
    SELECT d.pid, d.day,
           (SELECT SUM(r.earned_grams) FROM registry_scenario_record r
             WHERE r.scenario_id = $1 AND r.day = d.day AND r.participant_id = d.pid) AS used
    FROM unnest($2::date[], $3::bigint[]) AS d(day, pid)
)
SELECT pid, day, used FROM u WHERE used IS NOT NULL
"""

_STORED = """
SELECT s.ref FROM unnest($2::text[]) AS s(ref)
WHERE EXISTS (SELECT 1 FROM registry_scenario_record r
               WHERE r.scenario_id = $1 AND r.external_ref = s.ref)
"""


class AlreadyStored(Exception):
    """A batch written on the assumption that none of its externalRefs was stored met one."""


async def _resident_ids(raw: Any, subjects: set[str]) -> dict[str, int]:
    """Participant ids of residents by subject: this process's cache, then one query."""
    missing = [subject for subject in subjects if subject not in _residents]
    if missing:
        if len(_residents) + len(missing) > RESIDENT_CACHE:
            _residents.clear()
            missing = list(subjects)
        rows = await raw.fetch(
            "SELECT subject, id FROM participant"
            " WHERE kind = 'individual' AND subject = ANY($1::text[])",
            missing,
        )
        _residents.update((r["subject"], r["id"]) for r in rows)
    # This batch's own answer: the shared cache may be emptied by another batch meanwhile.
    return {subject: _residents[subject] for subject in subjects if subject in _residents}


async def _stored(raw: Any, scenario_id: int, refs: Iterable[str]) -> set[str]:
    wanted = list(set(refs))
    if not wanted:
        return set()
    return {r[0] for r in await raw.fetch(_STORED, scenario_id, wanted)}


async def _unauthorized(raw: Any, code: str, candidates: list[tuple[Item, int]]) -> set[int]:
    if not candidates:
        return set()
    rows = await raw.fetch(
        _UNAUTHORIZED, code, [pid for _, pid in candidates], [i.occurred_at for i, _ in candidates]
    )
    return {candidates[n - 1][0].index for (n,) in rows}


def usage_keys(accepted: list[tuple[Item, int, int]]) -> tuple[list[date], list[int]]:
    """The distinct (day, participant) pairs of accepted items, sorted, as two arrays."""
    pairs = sorted({(item.day, pid) for item, pid, _ in accepted})
    return [day for day, _ in pairs], [pid for _, pid in pairs]


async def _used(
    raw: Any, terms: Terms, keys: tuple[list[date], list[int]]
) -> dict[tuple[int, date], int]:
    if not keys[0]:
        return {}
    rows = await raw.fetch(_USED, terms.scenario_id, *keys)
    return {(pid, day): int(used) for pid, day, used in rows}


_INDEX_PROBES = (
    "SET LOCAL jit = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
)


@dataclass
class Prepared:
    """A batch as far as it can be taken without the scenario lock: its people, the items with
    no consent at occurredAt, and - for the issued period as read then, assuming none of its
    externalRefs is stored - its classification and the COPY payload of its accepted items
    (earning their computed grams until the cap is applied under the lock)."""

    residents: Mapping[str, int]
    issued_through: datetime | None
    unauthorized: set[int]
    decision: Decision
    data: bytearray
    earned_at: list[int]
    usage_keys: tuple[list[date], list[int]]


async def prepare(terms: Terms, items: list[Item], now: datetime) -> Prepared:
    """Look up residents and consent, classify and encode, before taking the scenario lock.

    None of it depends on other batches but the externalRefs they store (checked under the lock
    and by the unique constraint), and consent at occurredAt cannot change meanwhile: a grant or
    a revocation takes effect at the moment it is made, after `now`, and records are never later
    than `now`. So only the daily usage, the stored refs of refused items and the write hold the
    lock.
    """
    async with in_transaction() as conn, conn.acquire_connection() as raw:
        await raw.execute(_INDEX_PROBES)
        residents = await _resident_ids(raw, {i.subject for i in items})
        issued_through = await raw.fetchval(
            "SELECT issued_through FROM registry_scenario WHERE id = $1", terms.scenario_id
        )
        candidates = rules.candidates(items, residents, now, issued_through)
        unauthorized = await _unauthorized(raw, terms.code, candidates)
    decision = rules.classify(items, residents, now, issued_through, (), unauthorized)
    data, earned_at = records_copy.payload(terms.scenario_id, decision.accepted, now)
    keys = usage_keys(decision.accepted) if terms.daily_cap is not None else ([], [])
    return Prepared(residents, issued_through, unauthorized, decision, data, earned_at, keys)


async def apply_items(
    conn: BaseDBAsyncClient,
    terms: Terms,
    locked: Locked,
    items: list[Item],
    now: datetime,
    prepared: Prepared,
    probe: bool,
) -> Decision:
    """Finish and write one prepared batch inside `conn`'s transaction, under the lock.

    With `probe` every externalRef is looked up first; without it only those of refused items
    are (a refused item whose ref is stored answers DUPLICATE), and a stored ref among the
    accepted ones raises AlreadyStored from the write, so that the caller applies the batch
    again with `probe` (the transaction must then be rolled back).
    """
    issued_through = locked.issued_through
    residents, unauthorized = prepared.residents, prepared.unauthorized
    decision, data, earned_at = prepared.decision, prepared.data, prepared.earned_at
    keys = prepared.usage_keys
    async with conn.acquire_connection() as raw:
        # Plan for index probes, never a scan, hash or merge of a whole table, whatever the
        # statistics say (a table that grew since it was last analyzed looks empty to the
        # planner); compiling (JIT) would cost more than running the statements.
        await raw.execute(_INDEX_PROBES)
        stored: set[str] = set()
        if probe:
            stored = await _stored(raw, terms.scenario_id, (i.external_ref for i in items))
        elif decision.rejected:
            refused = {r.index for r in decision.rejected}
            refs = (i.external_ref for i in items if i.index in refused)
            stored = await _stored(raw, terms.scenario_id, refs)
        if stored or issued_through != prepared.issued_through:
            # a resend, refused items already counted, or an issuance came between
            decision = rules.classify(items, residents, now, issued_through, stored, unauthorized)
            data, earned_at = records_copy.payload(terms.scenario_id, decision.accepted, now)
            if terms.daily_cap is not None:
                keys = usage_keys(decision.accepted)
        if terms.daily_cap is not None and decision.accepted:
            used = await _used(raw, terms, keys)
            clipped = rules.earn(decision.accepted, used, terms.daily_cap)
            records_copy.set_earned(data, earned_at, decision.accepted, clipped)
        if decision.accepted:
            try:
                await raw.copy_to_table(
                    records_copy.TABLE, source=memoryview(data), columns=records_copy.COLUMNS,
                    format="binary",
                )
            except UniqueViolationError as exc:
                if probe or exc.constraint_name != _ONCE:
                    raise
                raise AlreadyStored() from exc
    return decision
