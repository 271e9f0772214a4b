"""The stock gate's record of since when the store holds every replay mark, under races."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.redis import get_store
from mall import stock_gate


async def test_a_read_in_flight_never_undoes_a_loss_told_meanwhile(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sold-out request's read of marks-since leaves before a lost mark is told to the store
    and answers after: the process must still not trust the marks."""
    monkeypatch.setattr(stock_gate, "_marks", {"since": 0.0, "checked_at": float("-inf"), "lost": 0.0})
    store = get_store()
    key = stock_gate.store_key("gate", "marks-since")
    await store.set(key, str(time.time() - stock_gate.REPLAY_TTL - 10))  # every mark held
    read = store.get
    answered, held = asyncio.Event(), asyncio.Event()

    async def slow_get(wanted: str) -> bytes | None:
        value = await read(wanted)  # the store answers with what it holds now ...
        if wanted == key and not answered.is_set():
            answered.set()
            await held.wait()  # ... and the answer is still on its way
        return value

    monkeypatch.setattr(store, "get", slow_get)
    reader = asyncio.ensure_future(stock_gate.marks_complete())
    await answered.wait()
    loss = time.time()
    stock_gate.note_lost_mark(loss)
    await stock_gate._publishing["task"]
    assert float(await read(key)) == loss
    held.set()
    assert await reader is False
    assert not await stock_gate.marks_complete()
