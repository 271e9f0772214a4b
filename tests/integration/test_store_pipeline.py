"""The stock gate's counter under concurrent calls (Redis or the stand-in). On Redis, takes and
give-backs made together share one pipeline: each caller still gets its own answer, a failed
round trip fails every caller in it, and a server that forgot the scripts is taught them again."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.redis import TAKE_BYPASS, TAKE_DONE, TAKE_MISSING, TAKE_SHORT, RedisStore, Store, get_store
from tests.helpers import unique

TTL = 60
WAIT = 10.0  # a hang guard, not a latency assertion


@pytest.fixture
def store() -> Store:
    """The process's store: Redis when PUHUI_REDIS_URL is set, else the stand-in."""
    return get_store()


async def test_concurrent_takes_are_answered_in_order_and_never_take_more_than_the_counter_holds(
    store: Store,
):
    key = unique("gate")
    await store.set(key, "100", TTL)
    amounts = [1 + i % 3 for i in range(600)]  # more than two pipelines' worth
    results = await asyncio.gather(*(store.take(key, amount, unique("replay")) for amount in amounts))

    left, expected = 100, []
    for amount in amounts:
        expected.append(TAKE_DONE if amount <= left else TAKE_SHORT)
        left -= amount if amount <= left else 0
    assert results == expected
    assert left == 0
    assert await store.get(key) == b"0"


async def test_a_replay_and_a_missing_counter_are_answered_among_other_takes(store: Store):
    key, missing, replay = unique("gate"), unique("gate"), unique("replay")
    await store.set(key, "5", TTL)
    await store.set(replay, "1", TTL)
    results = await asyncio.gather(
        store.take(key, 1, unique("replay")),
        store.take(key, 1, replay),
        store.take(missing, 1, unique("replay")),
        store.take(key, 10, unique("replay")),
        store.take(key, 1, unique("replay")),
    )
    assert results == [TAKE_DONE, TAKE_BYPASS, TAKE_MISSING, TAKE_SHORT, TAKE_DONE]
    assert await store.get(key) == b"3"
    assert await store.get(missing) is None


async def test_give_backs_among_takes_add_only_to_counters_that_exist(store: Store):
    key, missing = unique("gate"), unique("gate")
    await store.set(key, "5", TTL)
    await store.take(missing, 1, unique("replay"))  # both scripts known to Redis: no reload,
    await store.incr_if_exists(missing, 1)  # so the calls below run in the order made
    results = await asyncio.gather(
        store.take(key, 1, unique("replay")),
        store.incr_if_exists(key, 4),
        store.incr_if_exists(missing, 4),
        store.take(key, 8, unique("replay")),
    )
    assert results == [TAKE_DONE, 8, None, TAKE_DONE]
    assert await store.get(key) == b"0"
    assert await store.get(missing) is None


class _Relay:
    """A TCP relay to the Redis server that a test can hold (forward nothing until released) or
    cut (close a connection as soon as the client writes to it, forwarding nothing)."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._path = parts.path
        self.connections = 0
        self.cut = False
        self.forwarding = asyncio.Event()
        self.forwarding.set()
        self.written = asyncio.Event()  # set when a client writes anything
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        """A Redis URL to the relay, on the same database."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._path}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)

        async def answers() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        back = asyncio.create_task(answers())
        try:
            while data := await reader.read(65536):
                self.written.set()
                if self.cut:
                    break
                await self.forwarding.wait()
                up_writer.write(data)
                await up_writer.drain()
        finally:
            back.cancel()
            up_writer.close()
            writer.close()


if os.environ.get("PUHUI_REDIS_URL"):
    # Pipelines, lost scripts and dropped connections exist only on Redis.

    @pytest.fixture
    async def relay() -> AsyncIterator[_Relay]:
        """A relay to the test Redis database."""
        async with _Relay(os.environ["PUHUI_REDIS_URL"]) as relay:
            yield relay

    @pytest.fixture
    async def relayed(relay: _Relay) -> AsyncIterator[RedisStore]:
        """A store of its own, talking to Redis through the relay."""
        store = RedisStore(relay.url)
        try:
            yield store
        finally:
            await store.close()

    async def test_a_failed_round_trip_fails_every_caller_in_it_and_takes_nothing(
        relay: _Relay, relayed: RedisStore
    ):
        key = unique("gate")
        await relayed.set(key, "50", TTL)  # the store now holds one open connection
        relay.cut = True
        results = await asyncio.gather(
            *(relayed.take(key, 1, unique("replay")) for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(result, RedisConnectionError) for result in results), results
        assert relay.connections == 1  # the twenty takes went out together on that connection

        relay.cut = False
        assert await relayed.take(key, 1, unique("replay")) == TAKE_DONE  # a new connection
        assert await relayed.get(key) == b"49"

    async def test_a_caller_cancelled_in_flight_leaves_the_others_their_answers(
        relay: _Relay, relayed: RedisStore
    ):
        key = unique("gate")
        await relayed.set(key, "100", TTL)
        relay.written.clear()
        relay.forwarding.clear()
        takes = [asyncio.create_task(relayed.take(key, 1, unique("replay"))) for _ in range(10)]
        async with asyncio.timeout(WAIT):
            await relay.written.wait()  # the batch is on the wire, held by the relay
        for task in takes[::2]:
            task.cancel()
        relay.forwarding.set()
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(*takes, return_exceptions=True)

        assert all(isinstance(result, asyncio.CancelledError) for result in results[::2])
        assert results[1::2] == [TAKE_DONE] * 5
        assert await relayed.get(key) == b"90"  # sent before the cancels: all ten were taken
        assert await relayed.take(key, 1, unique("replay")) == TAKE_DONE

    async def test_a_caller_cancelled_before_its_batch_is_sent_takes_nothing(relayed: RedisStore):
        key = unique("gate")
        await relayed.set(key, "100", TTL)
        takes = [asyncio.create_task(relayed.take(key, 1, unique("replay"))) for _ in range(10)]
        await asyncio.sleep(0)  # every take has queued; the batch goes out on the next turn
        for task in takes[::2]:
            task.cancel()
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(*takes, return_exceptions=True)

        assert all(isinstance(result, asyncio.CancelledError) for result in results[::2])
        assert results[1::2] == [TAKE_DONE] * 5
        assert await relayed.get(key) == b"95"

    async def test_takes_and_give_backs_work_after_the_server_forgets_the_scripts(relayed: RedisStore):
        key = unique("gate")
        await relayed.set(key, "10", TTL)
        assert await relayed.take(key, 1, unique("replay")) == TAKE_DONE  # the scripts are loaded

        await relayed.client.script_flush()
        together = await asyncio.gather(
            *(relayed.take(key, 1, unique("replay")) for _ in range(3)), relayed.incr_if_exists(key, 5)
        )
        assert together == [TAKE_DONE, TAKE_DONE, TAKE_DONE, 11]

        await relayed.client.script_flush()
        assert await relayed.take(key, 1, unique("replay")) == TAKE_DONE  # a call on its own
        await relayed.client.script_flush()
        assert await relayed.incr_if_exists(key, 1) == 11


async def test_raise_number_keeps_the_larger_number_and_never_creates_one(store: Store) -> None:
    """The stock gate's marks-since only moves forward, however late an older loss is told, and
    a loss told to a store that lost its count starts none (the gate starts it, with a window)."""
    key = unique("max")
    assert await store.raise_number(key, 100.5) is None
    assert await store.get(key) is None
    await store.set(key, "100.5")
    assert await store.raise_number(key, 50.0) == 100.5
    assert float(await store.get(key)) == 100.5
    assert await store.raise_number(key, 200.25) == 200.25
    assert float(await store.get(key)) == 200.25
    await store.delete(key)
