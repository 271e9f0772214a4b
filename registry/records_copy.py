"""Accepted scenario records as one PostgreSQL binary COPY payload.

The payload is built with `struct` from the values the batch already holds, in the documented
binary COPY format (signature, flags, header extension; per row the field count, then each
field's length and bytes; the trailer -1): int8 and float8 big-endian, text as UTF-8, timestamptz
as microseconds and date as days since 2000-01-01 UTC. asyncpg's generic per-value encoders
cost about three times as much for the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from registry.rules import Item

TABLE = "registry_scenario_record"
COLUMNS = (
    "scenario_id", "external_ref", "participant_id", "quantity", "computed_grams", "earned_grams",
    "occurred_at", "day", "created_at",
)

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(2000, 1, 1).toordinal()
_MICROSECOND = timedelta(microseconds=1)
# One row: field count, scenario_id, external_ref (length, bytes), then participant_id,
# quantity, computed_grams, earned_grams, occurred_at, day, created_at; one Struct per ref length.
_ROW = ">hiqi{}siqidiqiqiqiiiq"
_ROWS: dict[int, struct.Struct] = {}


def _row(size: int) -> struct.Struct:
    """The Struct of a row whose external_ref is `size` bytes long."""
    found = _ROWS.get(size)
    if found is None:
        found = _ROWS[size] = struct.Struct(_ROW.format(size))
    return found


def micros(moment: datetime) -> int:
    """An aware instant as PostgreSQL's binary timestamptz: microseconds since 2000-01-01 UTC."""
    return (moment - _EPOCH) // _MICROSECOND


def payload(scenario_id: int, accepted: Sequence[tuple[Item, int]], created_at: datetime) -> bytes:
    """The COPY ... (FORMAT binary) bytes of the accepted (item, participant id) rows; each
    earns its computed grams until its issuance settles the daily cap."""
    created = micros(created_at)
    parts = [_SIGNATURE]
    append = parts.append
    rows = _ROWS
    for item, pid in accepted:
        ref = item.external_ref.encode()
        size = len(ref)
        row = rows.get(size) or _row(size)
        grams = item.grams
        append(
            row.pack(
                9, 8, scenario_id, size, ref,
                8, pid, 8, float(item.quantity), 8, grams, 8, grams,
                8, (item.occurred_at - _EPOCH) // _MICROSECOND,
                4, item.day.toordinal() - _EPOCH_DAY, 8, created,
            )
        )
    append(_TRAILER)
    return b"".join(parts)
