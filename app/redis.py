"""Redis access, or an in-process stand-in when PUHUI_REDIS_URL is not set.

Redis holds only what can be rebuilt: caches, rate-limit counters, the flash-sale stock gate and
pub/sub for live updates. Both stores offer the same small async interface.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from app.fanout import Listener, MemoryFanout, RedisFanout
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Store(Protocol):
    """What the service needs from Redis."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes | str, ttl: int | None = None) -> None: ...
    async def delete(self, *keys: str) -> None: ...
    async def delete_pattern(self, pattern: str) -> None: ...
    async def incr(self, key: str, amount: int = 1, ttl: int | None = None) -> int: ...
    async def mget(self, *keys: str) -> list[bytes | None]: ...
    async def set_nx(self, key: str, value: bytes | str, ttl: int | None = None) -> bool: ...
    async def set_nx_many(self, values: dict[str, str], ttl: int | None = None) -> None: ...
    async def take(self, key: str, amount: int, bypass_key: str, mark_ttl: int = 0,
                   witness_key: str | None = None, witness_after: float = 0.0,
                   unsure_key: str | None = None) -> int: ...
    async def incr_if_exists(self, key: str, amount: int) -> int | None: ...
    async def raise_number(self, key: str, value: float) -> float | None: ...
    async def publish(self, channel: str, message: str) -> None: ...
    async def publish_many(self, messages: Iterable[tuple[str, str]]) -> None: ...
    def subscribe(self, channel: str) -> AsyncIterator[str]: ...
    def listen(self, channel: str) -> AbstractAsyncContextManager[Listener]: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


# `take` answers: done (decremented), short (too little left), missing (rebuild the counter from
# the database), bypass (`bypass_key` exists: skip the counter, e.g. an idempotent replay).
# With a `mark_ttl`, a successful take also sets `bypass_key` for that many seconds. Given a
# `witness_key` (a moment, as a number) and an `unsure_key`, short becomes unsure when the
# witness is gone (the store lost what it held: it restarted empty, or was flushed) or the
# unsure key exists, and recent when the witness's moment is after `witness_after`: in each case
# a missing `bypass_key` proves nothing.
TAKE_DONE, TAKE_SHORT, TAKE_MISSING, TAKE_BYPASS, TAKE_UNSURE, TAKE_RECENT = 1, 0, -1, 2, 3, 4
TAKE_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if tonumber(current) < tonumber(ARGV[1]) then
  if KEYS[3] then
    local since = redis.call('GET', KEYS[3])
    if not since or (KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1) then return 3 end
    if tonumber(since) > tonumber(ARGV[3]) then return 4 end
  end
  return 0
end
redis.call('DECRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'EX', ARGV[2]) end
return 1
"""
INCR_IF_EXISTS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""
RAISE_NUMBER_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if not current then return nil end
if tonumber(current) >= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return ARGV[1]
"""


class MemoryStore:
    """The in-process stand-in: one process, nothing shared, nothing kept."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self._fanout = MemoryFanout()

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        """The value at `key`, or None."""
        return self._live(key)

    async def set(self, key: str, value: bytes | str, ttl: int | None = None) -> None:
        """Store `value` at `key`, expiring after `ttl` seconds if given."""
        raw = value.encode() if isinstance(value, str) else value
        self._data[key] = (raw, time.monotonic() + ttl if ttl else None)

    async def delete(self, *keys: str) -> None:
        """Remove keys."""
        for key in keys:
            self._data.pop(key, None)

    async def delete_pattern(self, pattern: str) -> None:
        """Remove every key matching a glob pattern."""
        for key in [k for k in self._data if fnmatch.fnmatchcase(k, pattern)]:
            del self._data[key]

    async def incr(self, key: str, amount: int = 1, ttl: int | None = None) -> int:
        """Add `amount` to the integer at `key`; a new key expires after `ttl` seconds."""
        current = self._live(key)
        if current is None:
            value = amount
            self._data[key] = (str(value).encode(), time.monotonic() + ttl if ttl else None)
        else:
            value = int(current) + amount
            self._data[key] = (str(value).encode(), self._data[key][1])
        return value

    async def mget(self, *keys: str) -> list[bytes | None]:
        """The values at `keys`, None where absent."""
        return [self._live(key) for key in keys]

    async def set_nx(self, key: str, value: bytes | str, ttl: int | None = None) -> bool:
        """Store `value` at `key` only if the key is absent; True when stored."""
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def set_nx_many(self, values: dict[str, str], ttl: int | None = None) -> None:
        """set_nx of each key and value."""
        for key, value in values.items():
            await self.set_nx(key, value, ttl)

    async def take(self, key: str, amount: int, bypass_key: str, mark_ttl: int = 0,
                   witness_key: str | None = None, witness_after: float = 0.0,
                   unsure_key: str | None = None) -> int:
        """Decrement the counter at `key` by `amount` if it holds enough (see TAKE_SCRIPT)."""
        if self._live(bypass_key) is not None:
            return TAKE_BYPASS
        current = self._live(key)
        if current is None:
            return TAKE_MISSING
        if int(current) < amount:
            if witness_key is not None:
                since = self._live(witness_key)
                if since is None or (unsure_key is not None and self._live(unsure_key) is not None):
                    return TAKE_UNSURE
                if float(since) > witness_after:
                    return TAKE_RECENT
            return TAKE_SHORT
        self._data[key] = (str(int(current) - amount).encode(), self._data[key][1])
        if mark_ttl > 0:
            await self.set(bypass_key, "1", mark_ttl)
        return TAKE_DONE

    async def incr_if_exists(self, key: str, amount: int) -> int | None:
        """Add `amount` to the counter at `key` if it exists; its new value, or None."""
        if self._live(key) is None:
            return None
        return await self.incr(key, amount)

    async def raise_number(self, key: str, value: float) -> float | None:
        """Raise the number at `key` to `value` unless it is as large; the number kept, or None
        (and nothing stored) when the key is absent."""
        current = self._live(key)
        if current is None:
            return None
        if float(current) >= value:
            return float(current)
        self._data[key] = (repr(value).encode(), self._data[key][1])
        return value

    async def publish(self, channel: str, message: str) -> None:
        """Deliver `message` to this process's subscribers of `channel`."""
        for queue in list(self._subscribers.get(channel, ())):
            queue.put_nowait(message)
        self._fanout.publish(channel, message)

    async def publish_many(self, messages: Iterable[tuple[str, str]]) -> None:
        """Publish (channel, message) pairs in order."""
        for channel, message in messages:
            await self.publish(channel, message)

    def listen(self, channel: str) -> AbstractAsyncContextManager[Listener]:
        """A listener on `channel`, ready on entry, for as long as the context lasts."""
        return self._fanout.listen(channel)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        """Messages published to `channel` from now on."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers[channel].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers[channel].discard(queue)

    async def ping(self) -> bool:
        """Always reachable."""
        return True

    async def close(self) -> None:
        """Nothing to close."""


MAX_CONNECTIONS = 1024
SCRIPT_BATCH = 256  # script calls per pipeline at most; more wait for the next one


class _ScriptCall(NamedTuple):
    script: AsyncScript
    keys: list[str]
    args: list[str | int]
    answer: asyncio.Future[Any]


class _ScriptBatcher:
    """Script calls made close together, sent in one round trip (a non-transactional pipeline).

    The first call starts a sender task. Calls made before it runs (the same event-loop turn) go
    out together, each its own EVALSHA; calls made while that pipeline is in flight go out
    together in the next one, at most SCRIPT_BATCH to a pipeline. Each caller gets its own answer
    or script error; when the round trip fails (connection, timeout) every caller in it raises
    that error, as a single call would. A caller cancelled before its batch is sent is left out.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._queue: list[_ScriptCall] = []
        self._sender: asyncio.Task[None] | None = None

    async def run(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """The script's answer for `keys` and `args`, sent in a pipeline with the calls around it."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_ScriptCall(script, keys, args, answer))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_queued())
        return await answer

    async def _send_queued(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:SCRIPT_BATCH]
                del self._queue[:SCRIPT_BATCH]
                await self._send([call for call in batch if not call.answer.done()])
        finally:
            self._sender = None
            for call in self._queue:  # only when the sender itself was cancelled
                call.answer.cancel()
            self._queue.clear()

    async def _send(self, calls: list[_ScriptCall]) -> None:
        try:
            answers = await self._answers(calls)
        except Exception as error:  # noqa: BLE001 - the round trip failed: it is every caller's error
            answers = [error] * len(calls)
        except BaseException:
            for call in calls:
                call.answer.cancel()
            raise
        for call, answer in zip(calls, answers, strict=True):
            if call.answer.done():
                continue
            if isinstance(answer, Exception):
                call.answer.set_exception(answer)
            else:
                call.answer.set_result(answer)

    async def _answers(self, calls: list[_ScriptCall]) -> list[Any]:
        """One answer per call, run in call order; a script the server lost (NOSCRIPT) is loaded
        and its calls re-sent, so they run after the batch's other calls."""
        if len(calls) == 1:  # alone: a plain call costs less than a pipeline of one
            call = calls[0]
            return [await call.script(call.keys, call.args)]
        answers = await self._pipeline(calls)
        lost = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if lost:
            for script in {calls[i].script for i in lost}:
                script.sha = await self._client.script_load(script.script)
            lost = [i for i in lost if not calls[i].answer.done()]
            for i, answer in zip(lost, await self._pipeline([calls[i] for i in lost]), strict=True):
                answers[i] = answer
        return answers

    async def _pipeline(self, calls: list[_ScriptCall]) -> list[Any]:
        if not calls:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            return await pipe.execute(raise_on_error=False)


class RedisStore:
    """The shared store on a Redis server."""

    def __init__(self, url: str) -> None:
        # A plain pool: taking a connection is a list pop, where the blocking pool takes a lock,
        # a condition and a timeout per command. Its bound is far above one process's
        # concurrency; past it a command fails fast, and callers treat the store as unavailable.
        pool = aioredis.ConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, socket_timeout=5, socket_connect_timeout=5, protocol=3
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self._url = url
        self._take = self.client.register_script(TAKE_SCRIPT)
        self._incr_if_exists = self.client.register_script(INCR_IF_EXISTS_SCRIPT)
        self._raise_number = self.client.register_script(RAISE_NUMBER_SCRIPT)
        self._scripts = _ScriptBatcher(self.client)
        self._fanout = RedisFanout(self.client)

    async def get(self, key: str) -> bytes | None:
        """The value at `key`, or None."""
        return await self.client.get(key)

    async def set(self, key: str, value: bytes | str, ttl: int | None = None) -> None:
        """Store `value` at `key`, expiring after `ttl` seconds if given."""
        await self.client.set(key, value, ex=ttl)

    async def delete(self, *keys: str) -> None:
        """Remove keys."""
        if keys:
            await self.client.delete(*keys)

    async def delete_pattern(self, pattern: str) -> None:
        """Remove every key matching a glob pattern."""
        batch = [key async for key in self.client.scan_iter(match=pattern, count=500)]
        if batch:
            await self.client.delete(*batch)

    async def incr(self, key: str, amount: int = 1, ttl: int | None = None) -> int:
        """Add `amount` to the integer at `key`; a new key expires after `ttl` seconds."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            if ttl:
                pipe.expire(key, ttl, nx=True)
            result = await pipe.execute()
        return int(result[0])

    async def mget(self, *keys: str) -> list[bytes | None]:
        """The values at `keys`, None where absent."""
        return list(await self.client.mget(keys)) if keys else []

    async def set_nx(self, key: str, value: bytes | str, ttl: int | None = None) -> bool:
        """Store `value` at `key` only if the key is absent; True when stored."""
        return bool(await self.client.set(key, value, ex=ttl, nx=True))

    async def set_nx_many(self, values: dict[str, str], ttl: int | None = None) -> None:
        """set_nx of each key and value, in one round trip."""
        if values:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in values.items():
                    pipe.set(key, value, ex=ttl, nx=True)
                await pipe.execute()

    async def take(self, key: str, amount: int, bypass_key: str, mark_ttl: int = 0,
                   witness_key: str | None = None, witness_after: float = 0.0,
                   unsure_key: str | None = None) -> int:
        """Decrement the counter at `key` by `amount` if it holds enough, atomically (Lua)."""
        if witness_key is None:
            return int(await self._scripts.run(self._take, [key, bypass_key], [amount, mark_ttl]))
        keys = [key, bypass_key, witness_key] + ([] if unsure_key is None else [unsure_key])
        return int(await self._scripts.run(self._take, keys, [amount, mark_ttl, repr(witness_after)]))

    async def incr_if_exists(self, key: str, amount: int) -> int | None:
        """Add `amount` to the counter at `key` if it exists; its new value, or None."""
        result = await self._scripts.run(self._incr_if_exists, [key], [amount])
        return None if result is None else int(result)

    async def raise_number(self, key: str, value: float) -> float | None:
        """Raise the number at `key` to `value` unless it is as large, atomically; the number
        kept, or None (and nothing stored) when the key is absent."""
        kept = await self._raise_number(keys=[key], args=[repr(value)])
        return None if kept is None else float(kept)

    async def publish(self, channel: str, message: str) -> None:
        """Publish `message` to every process subscribed to `channel`."""
        await self.client.publish(channel, message)

    async def publish_many(self, messages: Iterable[tuple[str, str]]) -> None:
        """Publish (channel, message) pairs in order, in one round trip (a pipeline)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, message in messages:
                pipe.publish(channel, message)
            await pipe.execute()

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        """Messages published to `channel` from now on, from any process."""
        pubsub = self.client.pubsub()
        await pubsub.subscribe(channel)
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message["data"]
                    yield data.decode() if isinstance(data, bytes) else data
        finally:
            await pubsub.unsubscribe(channel)
            await pubsub.aclose()

    def listen(self, channel: str) -> AbstractAsyncContextManager[Listener]:
        """A listener on `channel` (one shared pub/sub connection per process), subscribed
        before entry returns, for as long as the context lasts."""
        return self._fanout.listen(channel)

    async def ping(self) -> bool:
        """True when the server answers."""
        try:
            return bool(await self.client.ping())
        except aioredis.RedisError:
            return False

    async def close(self) -> None:
        """Close the pool."""
        await self._fanout.close()
        await self.client.aclose()


_store: Store | None = None


@lru_cache(maxsize=1)
def database_digest() -> str:
    """A short digest of the database URL. Store keys and channels that describe one database
    carry it, so servers (or test runs) of different databases can share one Redis."""
    return hashlib.sha256(get_settings().database_url.encode()).hexdigest()[:10]


def get_store(settings: Settings | None = None) -> Store:
    """The process's store: Redis when PUHUI_REDIS_URL is set, else the in-process stand-in."""
    global _store
    if _store is None:
        settings = settings or get_settings()
        _store = RedisStore(settings.redis_url) if settings.redis_url else MemoryStore()
    return _store


async def close_store() -> None:
    """Close and forget the process's store."""
    global _store
    if _store is not None:
        await _store.close()
        _store = None
