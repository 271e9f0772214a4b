"""After-commit events: tell live subscribers that a participant's account changed.

Notices are queued and published by one flusher per process within NOTICE_DELAY, once per
participant however many changes it had meanwhile (a flash sale's thousand notices to one
merchant become a few), in one round trip to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from app.coalesce import Coalescer
from app.redis import database_digest, get_store

log = logging.getLogger(__name__)
NOTICE_DELAY = 0.02  # seconds; subscribers expect prompt pushes
NOTICE_BATCH = 1_000  # this many waiting notices are published without waiting out the delay


def account_channel(participant_id: int) -> str:
    """The pub/sub channel carrying changes of one participant's account (of this database:
    Redis pub/sub ignores the db number, so servers of other databases may share it)."""
    return f"puhui:{database_digest()}:account:{participant_id}"


async def _publish(participant_ids: list[int]) -> None:
    # An issuance queues one notice per recipient: sent a pipeline of NOTICE_BATCH at a time,
    # so one slow round trip loses at most that many.
    for start in range(0, len(participant_ids), NOTICE_BATCH):
        chunk = participant_ids[start : start + NOTICE_BATCH]
        try:
            await get_store().publish_many([(account_channel(pid), "changed") for pid in chunk])
        except Exception:
            log.warning("could not publish %d account-change notices", len(chunk), exc_info=True)


_notices = Coalescer(_publish, what="publish the account change", delay=NOTICE_DELAY,
                     limit=NOTICE_BATCH)


async def account_changed(participant_ids: Iterable[int]) -> None:
    """Queue a change notice for each participant; call only after the transaction commits."""
    _notices.add(participant_ids)


async def flush_notices() -> None:
    """Publish the notices queued now (at shutdown, or when a caller must know they are out)."""
    await _notices.flush()


async def drain_after_commit() -> None:
    """At shutdown: publish the queued notices, do the queued credit refreshes, close the store."""
    from app.redis import close_store
    from points.credit import flush_refreshes  # points builds on app, not the other way

    await flush_notices()
    await flush_refreshes()
    await close_store()
