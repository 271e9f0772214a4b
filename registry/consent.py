"""What one process remembers of residents' consent to scenarios, for the records it ingests.

Whether a person's consent to a scenario was active at an instant that has passed never
changes: a grant or a revocation takes effect at the moment it is made, and is stamped then. So
a person's grant intervals, read at time L, answer for every occurredAt before L - MARGIN (the
margin covers grants and revocations stamped before L but not yet committed when they were
read), however long they are kept. An item that occurred later than what its person's memory
answers for is looked up afresh, as is a person not yet remembered. Records are sent minutes to
days after they occur, so after a person's first batch their consent is rarely read again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from registry.rules import Item, authorized_at

Interval = tuple[datetime, datetime | None]
Lookup = Callable[[list[int]], Awaitable[Mapping[int, Sequence[Interval]]]]

MARGIN = timedelta(seconds=60)
CAPACITY = 200_000  # people remembered by one process, over all scenarios

# scenario code -> participant id -> (the instant the intervals answer up to, the intervals)
_memory: dict[str, dict[int, tuple[datetime, tuple[Interval, ...]]]] = {}
_size = 0


def forget() -> None:
    """Forget everything remembered (when full, and for tests that rewrite consent in place)."""
    global _size
    _memory.clear()
    _size = 0


def _remember(code: str, found: Mapping[int, Sequence[Interval]], until: datetime) -> None:
    global _size
    if _size + len(found) > CAPACITY:
        forget()
    known = _memory.setdefault(code, {})
    for pid, intervals in found.items():
        if pid not in known:
            _size += 1
        known[pid] = (until, tuple(intervals))


async def unauthorized(code: str, candidates: Sequence[tuple[Item, int]], lookup: Lookup) -> set[int]:
    """Indexes of the candidate (item, participant id) pairs whose person had no active consent
    to scenario `code` at the item's occurredAt; `lookup` reads the intervals of the people the
    memory cannot answer for."""
    known = _memory.get(code, {})
    missing: set[int] = set()
    for item, pid in candidates:
        entry = known.get(pid)
        if entry is None or item.occurred_at >= entry[0]:
            missing.add(pid)
    fresh: Mapping[int, Sequence[Interval]] = {}
    if missing:
        read_at = datetime.now(UTC)
        fresh = await lookup(sorted(missing))
        _remember(code, fresh, read_at - MARGIN)
    refused: set[int] = set()
    for item, pid in candidates:
        intervals = fresh[pid] if pid in fresh else known[pid][1]
        if not authorized_at(intervals, item.occurred_at):
            refused.add(item.index)
    return refused
