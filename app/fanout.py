"""Live-update listeners: one Redis pub/sub connection per process, shared by all subscribers.

A websocket subscriber must not hold a pooled Redis connection of its own (a few dozen open
subscriptions would starve the pool). `RedisFanout` keeps one pub/sub connection, subscribes a
channel when its first local listener arrives and unsubscribes when the last one leaves, and
hands each listener its messages. A listener is returned only after Redis confirmed the
subscription, so nothing published afterwards is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)
CONFIRM_TIMEOUT = 5.0


class Listener:
    """Messages of one channel for one subscriber, from the moment it was handed out."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def put(self, message: str) -> None:
        """Deliver a message (called by the store)."""
        self._queue.put_nowait(message)

    async def next(self) -> str:
        """Wait for the next message."""
        return await self._queue.get()

    def drain(self) -> int:
        """Drop messages already waiting (they say the same thing); return how many."""
        dropped = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            dropped += 1
        return dropped


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisFanout:
    """Shares one pub/sub connection of a redis.asyncio client among this process's listeners."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._listeners: dict[str, set[Listener]] = {}
        self._sent: dict[str, int] = {}
        self._confirmed: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listener]:
        """A listener on `channel`, subscribed for as long as the context lasts."""
        listener = Listener()
        await self._add(channel, listener)
        try:
            yield listener
        finally:
            await self._remove(channel, listener)

    async def _add(self, channel: str, listener: Listener) -> None:
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
            listeners = self._listeners.setdefault(channel, set())
            listeners.add(listener)
            if len(listeners) == 1:
                self._sent[channel] = self._sent.get(channel, 0) + 1
                await self._pubsub.subscribe(channel)
            ticket = self._sent[channel]
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="redis-fanout")
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._confirmed.get(channel, 0) >= ticket),
                    CONFIRM_TIMEOUT,
                )
        except BaseException:
            await self._remove(channel, listener)
            raise

    async def _remove(self, channel: str, listener: Listener) -> None:
        async with self._lock:
            listeners = self._listeners.get(channel)
            if listeners is None or listener not in listeners:
                return
            listeners.discard(listener)
            if not listeners:
                del self._listeners[channel]
                try:
                    await self._pubsub.unsubscribe(channel)
                except Exception:  # noqa: BLE001 - the connection is gone; nothing to undo
                    log.warning("could not unsubscribe %s", channel)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("pub/sub read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            kind = _text(message.get("type"))
            channel = _text(message.get("channel"))
            if kind == "subscribe":
                async with self._changed:
                    self._confirmed[channel] = self._confirmed.get(channel, 0) + 1
                    self._changed.notify_all()
            elif kind == "message":
                data = _text(message.get("data"))
                for listener in list(self._listeners.get(channel, ())):
                    listener.put(data)

    async def close(self) -> None:
        """Stop reading and give the connection back."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None


class MemoryFanout:
    """The in-process stand-in: listeners of this process only."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listener]:
        """A listener on `channel` for as long as the context lasts."""
        listener = Listener()
        self._listeners.setdefault(channel, set()).add(listener)
        try:
            yield listener
        finally:
            listeners = self._listeners.get(channel, set())
            listeners.discard(listener)
            if not listeners:
                self._listeners.pop(channel, None)

    def publish(self, channel: str, message: str) -> None:
        """Deliver to this process's listeners of `channel`."""
        for listener in list(self._listeners.get(channel, ())):
            listener.put(message)
