"""Pure rules of scenario records and issuance: item checks, grams, periods, the daily cap."""

from __future__ import annotations

import math
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from dateutil.parser import isoparse

from app.instants import representable, too_far
from app.text import storable
from app.units import BIGINT_MAX

SHANGHAI = ZoneInfo("Asia/Shanghai")
MAX_BATCH = 1000
LOOKBACK = timedelta(days=90)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
MAX_REF = 128
MAX_SUBJECT = 128
_SERIAL_CODE = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*")

INVALID_INPUT = "INVALID_INPUT"
NOT_AUTHORIZED = "NOT_AUTHORIZED"
OUT_OF_PERIOD = "OUT_OF_PERIOD"

MESSAGES = {
    NOT_AUTHORIZED: "The person has no active authorization for this scenario at occurredAt.",
    OUT_OF_PERIOD: "occurredAt is in the future, older than 90 days, or in a period already issued.",
}
SUSPENDED_MESSAGE = "occurredAt is in a time the scenario was suspended."  # OUT_OF_PERIOD too


Interval = tuple[datetime, datetime | None]  # from, until (None: not over), as a consent grant


@dataclass(frozen=True)
class Terms:
    """What applying records needs to know of a scenario and its methodology."""

    scenario_id: int
    code: str
    grams_per_unit: int
    daily_cap: int | None


@dataclass(frozen=True)
class Locked:
    """The scenario as read under its lock: the end of its issued period, and the times it was
    suspended."""

    issued_through: datetime | None
    suspended: tuple[Interval, ...]


class Item(NamedTuple):
    """A well-formed record: who, how much, when, and the grams it computes to."""

    index: int
    subject: str
    quantity: Decimal
    occurred_at: datetime
    external_ref: str
    grams: int
    day: date


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one item of a batch was not counted."""

    index: int
    code: str
    message: str


@dataclass
class Decision:
    """What a batch of items comes to: the accepted ones (item, participant id), the
    duplicates counted, and the refused ones."""

    accepted: list[tuple[Item, int]] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass
class Outcome:
    """The per-item answer to a batch: counts and the rejected items."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def invalid(index: int, message: str) -> Rejection:
    """An INVALID_INPUT rejection of one item."""
    return Rejection(index, INVALID_INPUT, message)


def shanghai_day(moment: datetime) -> date:
    """The Asia/Shanghai calendar day of an aware instant (the daily cap's day)."""
    return moment.astimezone(SHANGHAI).date()


def as_decimal(value: Any) -> Decimal | None:
    """A JSON or GraphQL number as an exact Decimal; None when it is not a finite number.

    A Decimal (exact JSON parsing) and an int are taken as they are; a binary float (GraphQL
    Float) is read through its shortest round-trip text, so 2.3 means 2.3 and never
    2.29999999999999982236431605997495353221893310546875.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = Decimal(repr(value))
    else:
        return None
    return number if number.is_finite() else None


def computed_grams(quantity: Decimal, grams_per_unit: int) -> int:
    """floor(quantity x gramsPerUnit), computed exactly."""
    return int((quantity * grams_per_unit).to_integral_value(rounding="ROUND_FLOOR"))


def check_item(
    index: int,
    subject: Any,
    quantity: Any,
    occurred_at: Any,
    external_ref: Any,
    grams_per_unit: int,
) -> Item | Rejection:
    """Check one item's shape and compute its grams; an INVALID_INPUT rejection when malformed."""
    if not isinstance(external_ref, str) or not 0 < len(external_ref) <= MAX_REF:
        return invalid(index, f"externalRef must be a string of 1 to {MAX_REF} characters.")
    if not storable(external_ref):
        return invalid(index, "externalRef must be text without NUL characters or lone surrogates.")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT:
        return invalid(index, f"subject must be a string of 1 to {MAX_SUBJECT} characters.")
    if not storable(subject):
        return invalid(index, "subject must be text without NUL characters or lone surrogates.")
    number = as_decimal(quantity)
    if number is None:
        return invalid(index, "quantity must be a finite number.")
    if number <= 0:
        return invalid(index, "quantity must be greater than 0.")
    if isinstance(occurred_at, str):
        occurred_at = parse_instant(occurred_at)
    if not isinstance(occurred_at, datetime) or occurred_at.utcoffset() is None:
        return invalid(index, "occurredAt must be an ISO 8601 date-time with an offset.")
    if not representable(occurred_at):
        return invalid(index, too_far("occurredAt"))
    try:
        grams = computed_grams(number, grams_per_unit)
    except (InvalidOperation, OverflowError):
        grams = BIGINT_MAX + 1
    if grams > BIGINT_MAX:
        return invalid(index, "quantity is too large.")
    occurred_at = occurred_at.astimezone(UTC)
    return Item(index, subject, number, occurred_at, external_ref, grams, shanghai_day(occurred_at))


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 date-time read as the GraphQL DateTime scalar reads it (dateutil's isoparse:
    24:00 is the next midnight, an offset has no seconds), or None when the text is not one."""
    try:
        return isoparse(text)
    except (ValueError, OverflowError):
        return None


def item_from_json(index: int, obj: Any, grams_per_unit: int) -> Item | Rejection:
    """Check one decoded NDJSON line: an object with subject, quantity, occurredAt, externalRef."""
    if not isinstance(obj, dict):
        return invalid(index, "Each line must be a JSON object.")
    return check_item(
        index,
        obj.get("subject"),
        obj.get("quantity"),
        obj.get("occurredAt"),
        obj.get("externalRef"),
        grams_per_unit,
    )


def within(intervals: Iterable[Interval], when: datetime) -> bool:
    """True when `when` falls in one interval: start <= when < end (no end: not over yet)."""
    return any(g <= when and (r is None or when < r) for g, r in intervals)


authorized_at = within  # a consent's grant intervals: granted_at <= when < revoked_at


def period_bounds(now: datetime, issued_through: datetime | None) -> tuple[datetime, datetime]:
    """(low, high): an item is in period when low <= occurredAt <= high - not in the future,
    not older than LOOKBACK, and after the issued period (instants are whole microseconds)."""
    low = now - LOOKBACK
    if issued_through is not None and issued_through >= low:
        low = issued_through + _MICROSECOND
    return low, now


def classify(
    items: Sequence[Item],
    participants: Mapping[str, int],
    now: datetime,
    issued_through: datetime | None,
    stored: Container[str],
    unauthorized: Container[int],
    suspended: Sequence[Interval] = (),
) -> Decision:
    """Count, refuse or accept each item (given in index order).

    `stored`: externalRefs already counted; `unauthorized`: indexes of items whose person had no
    active consent at occurredAt; `suspended`: the times the scenario was suspended (an item
    that occurred in one is OUT_OF_PERIOD). Precedence: duplicate, then OUT_OF_PERIOD, then
    NOT_AUTHORIZED; a refused item does not use up its ref. Which items are accepted never
    depends on the cap: what an accepted item earns under it is settled at issuance (`settle`).
    """
    decision = Decision()
    accepted = decision.accepted
    rejected = decision.rejected
    seen: set[str] = set()
    low, high = period_bounds(now, issued_through)
    duplicates = 0
    for item in items:
        index, subject, _, at, ref, _, _ = item
        if ref in seen or ref in stored:
            duplicates += 1
        elif not low <= at <= high:
            rejected.append(Rejection(index, OUT_OF_PERIOD, MESSAGES[OUT_OF_PERIOD]))
        elif suspended and within(suspended, at):
            rejected.append(Rejection(index, OUT_OF_PERIOD, SUSPENDED_MESSAGE))
        else:
            pid = participants.get(subject)
            if pid is None or index in unauthorized:
                rejected.append(Rejection(index, NOT_AUTHORIZED, MESSAGES[NOT_AUTHORIZED]))
            else:
                seen.add(ref)
                accepted.append((item, pid))
    decision.duplicates = duplicates
    return decision


def settle(
    records: Iterable[tuple[int, int, date, int]],
    prior: Mapping[tuple[int, date], int],
    daily_cap: int | None,
) -> dict[int, int]:
    """The earned grams of records being issued: record id -> grams, under the daily cap.

    `records` are (id, participant id, day, computed grams); they earn in id order (the order
    they were accepted in) what is left of the cap for their (participant, day), after the
    grams `prior` issuances already credited for that pair.
    """
    earned: dict[int, int] = {}
    spent: dict[tuple[int, date], int] = {}
    for record_id, pid, day, grams in sorted(records):
        key = (pid, day)
        before = spent[key] if key in spent else prior.get(key, 0)
        if daily_cap is not None:
            left = daily_cap - before
            grams = min(grams, left) if left > 0 else 0
        earned[record_id] = grams
        spent[key] = before + grams
    return earned


def period_start(issued_through: datetime | None) -> datetime:
    """The earliest instant an issuance after `issued_through` has to read records from.

    That is the start of the Shanghai day holding `issued_through`: the records of that day
    issued before count against the cap of those issued after. A record is never created before
    it occurred, so its `created_at` is bounded by the same instant. With nothing issued yet,
    every record of the scenario counts: EPOCH is before any of them.
    """
    if issued_through is None:
        return EPOCH
    local = issued_through.astimezone(SHANGHAI)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def serial_base(scenario_code: str, scenario_id: int, vintage: int) -> str:
    """What the serial prefixes of a scenario's issuances of one vintage start with:
    SH-CI-SC-<CODE>-<YYYY>- (a code not fit for a serial is written S<id>). Two scenarios may
    share a base (codes differing in case, a code S12 and scenario 12's fallback), so the
    sequence that follows counts the lots of the base, not of the scenario."""
    code = scenario_code.upper()
    if not _SERIAL_CODE.fullmatch(code) or len(code) > 40:
        code = f"S{scenario_id}"
    return f"SH-CI-SC-{code}-{vintage:04d}-"


def serial_prefix(base: str, sequence: int) -> str:
    """The serial block prefix of the `sequence`-th issuance of a base: <base><seq>."""
    return f"{base}{sequence:04d}"
