"""Store listeners behind accountChanged: ready on entry, shared, released (Redis or stand-in)."""

from __future__ import annotations

import asyncio

from app.events import account_changed, account_channel
from app.redis import get_store
from tests.helpers import unique

WAIT = 10.0  # a hang guard, not a latency assertion


async def _next(listener) -> str:
    async with asyncio.timeout(WAIT):
        return await listener.next()


async def test_listeners_of_one_channel_each_receive_and_leave_independently(database):
    store = get_store()
    channel = unique("puhui:test:")
    async with store.listen(channel) as first:
        async with store.listen(channel) as second:
            await store.publish(channel, "one")
            assert await _next(first) == "one" and await _next(second) == "one"
        await store.publish(channel, "two")
        assert await _next(first) == "two"
    async with store.listen(channel) as again:
        await store.publish(channel, "three")
        assert await _next(again) == "three"
        assert again.drain() == 0


async def test_account_changed_reaches_only_that_participants_listeners(database):
    store = get_store()
    async with store.listen(account_channel(10**12 + 1)) as mine, \
            store.listen(account_channel(10**12 + 2)) as other:
        await account_changed([10**12 + 1, 10**12 + 1])
        assert await _next(mine) == "changed"
        await account_changed([10**12 + 2])
        assert await _next(other) == "changed"
        assert mine.drain() == 0


async def test_many_listeners_share_one_connection(database):
    store = get_store()
    channels = [unique("puhui:test:") for _ in range(80)]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_listen_once(store, c)) for c in channels]
    assert [t.result() for t in tasks] == channels


async def _listen_once(store, channel: str) -> str:
    async with store.listen(channel) as listener:
        await store.publish(channel, channel)
        return await _next(listener)
