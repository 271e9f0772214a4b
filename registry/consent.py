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

from registry.rules import Interval, Item, authorized_at, period_bounds

Lookup = Callable[[list[int]], Awaitable[Mapping[int, Sequence[Interval]]]]

MARGIN = timedelta(seconds=60)
CAPACITY = 200_000  # people remembered by one process, over all scenarios

# scenario code -> participant id -> (the instant the entry answers up to, then the one grant
# interval's start and end, or None, None and all the intervals when there are several or none)
Entry = tuple[datetime, datetime | None, datetime | None, tuple[Interval, ...] | None]
_memory: dict[str, dict[int, Entry]] = {}
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
        if len(intervals) == 1:
            known[pid] = (until, intervals[0][0], intervals[0][1], None)
        else:
            known[pid] = (until, None, None, tuple(intervals))


async def unauthorized(
    code: str,
    items: Sequence[Item],
    residents: Mapping[str, int],
    now: datetime,
    issued_through: datetime | None,
    lookup: Lookup,
) -> set[int]:
    """Indexes of the items in period, of known residents, whose person had no active consent
    to scenario `code` at occurredAt; `lookup` reads the intervals of the people the memory
    cannot answer for. (Items out of period or of unknown people are refused otherwise.)"""
    known = _memory.get(code, {})
    low, high = period_bounds(now, issued_through)
    refused: set[int] = set()
    pending: list[tuple[Item, int]] = []
    for item in items:
        at = item[3]
        if not low <= at <= high:
            continue
        pid = residents.get(item[1])
        if pid is None:
            continue
        entry = known.get(pid)
        if entry is None or at >= entry[0]:
            pending.append((item, pid))
            continue
        _, granted, revoked, several = entry
        if several is None:
            if at < granted or (revoked is not None and at >= revoked):  # type: ignore[operator]
                refused.add(item[0])
        elif not authorized_at(several, at):
            refused.add(item[0])
    if pending:
        read_at = datetime.now(UTC)
        fresh = await lookup(sorted({pid for _, pid in pending}))
        _remember(code, fresh, read_at - MARGIN)
        refused.update(item[0] for item, pid in pending if not authorized_at(fresh[pid], item[3]))
    return refused
