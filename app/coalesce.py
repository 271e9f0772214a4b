"""After-commit work queued by participant id and done in a few batches per process.

Work that must follow a commit soon but not before its caller answers (refresh a credit
standing, publish an account-change notice) is queued: the caller returns at once, and one
flusher task per process waits `delay` seconds (less once `limit` ids wait), then hands
everything queued to `run` as one batch. An id queued again before its batch starts is done
once; an id queued while its batch runs is done again in the next batch, since its new change
may have come too late for the running one. `flush()` does what is queued now (shutdown, tests).
A failed batch is logged, never raised: the changes behind it are committed already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)


class Coalescer:
    """Participant ids waiting for one kind of batched after-commit work."""

    def __init__(self, run: Callable[[list[int]], Awaitable[object]], *, what: str, delay: float,
                 limit: int) -> None:
        self._run = run
        self._what = what
        self._delay = delay
        self._limit = limit
        self._queued: set[int] = set()
        self._running: frozenset[int] = frozenset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._full = asyncio.Event()
        self._one_batch = asyncio.Lock()

    def __contains__(self, participant_id: object) -> bool:
        """True while the id waits for its batch or its batch is running."""
        return participant_id in self._queued or participant_id in self._running

    def add(self, participant_ids: Iterable[int]) -> None:
        """Queue ids: done after the delay, sooner once `limit` ids wait."""
        self._queued.update(participant_ids)
        if not self._queued:
            return
        loop = self._bind()
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_later())
        if len(self._queued) >= self._limit:
            self._full.set()

    async def flush(self) -> None:
        """Do what is queued now, once the batch already running (if any) has ended."""
        self._bind()
        async with self._one_batch:
            await self._run_queued()

    def _bind(self) -> asyncio.AbstractEventLoop:
        # The flusher, event and lock belong to one event loop; a process may run several in turn.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._flusher = loop, None
            self._full, self._one_batch = asyncio.Event(), asyncio.Lock()
        return loop

    async def _flush_later(self) -> None:
        try:
            while self._queued:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._delay):
                        await self._full.wait()
                async with self._one_batch:
                    await self._run_queued()
        except asyncio.CancelledError:
            # Cancelled as the event loop closes (asyncio.run cancels what is left): do the queue.
            await self.flush()
            raise

    async def _run_queued(self) -> None:
        if not self._queued:
            return
        batch = sorted(self._queued)
        self._queued.clear()
        self._full.clear()
        self._running = frozenset(batch)
        try:
            await self._run(batch)
        except asyncio.CancelledError:
            self._queued.update(batch)  # interrupted (the loop is closing): the final flush redoes it
            raise
        except Exception:
            log.warning("could not %s for %d participants", self._what, len(batch), exc_info=True)
        finally:
            self._running = frozenset()
