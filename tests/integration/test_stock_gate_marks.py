"""The stock gate's record of since when the store holds every replay mark, read in the take."""

from __future__ import annotations

import time

import httpx
import pytest

from app.redis import get_store
from mall import stock_gate
from tests.helpers import unique
from tests.mall_support import (
    approved_merchant,
    as_at_start,
    listed_right,
    marks_since_key,
    outcome,
    redeem,
    resident,
)

pytestmark = pytest.mark.usefixtures("every_mark_held_afterwards")


async def test_a_sold_out_answer_reads_the_stores_marks_since_in_the_same_step(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever any process read before, each sold-out answer says what the store holds at that
    moment: every mark (sold out), a mark lost within the day (ask the database), or nothing at
    all (the store lost what it held: let the database decide for two minutes, on the store's
    clock, and start the count again)."""
    as_at_start(monkeypatch)
    store = get_store()
    right_id = 10**9 + 7  # the gate alone: a counter set by hand
    marks_since = marks_since_key()
    await store.set(stock_gate.gate_key(right_id), "0", stock_gate.GATE_TTL)
    try:
        await store.set(marks_since, repr(time.time() - stock_gate.REPLAY_TTL - 1))
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT
        # Another process tells a mark it could not write (its redemption committed): the next
        # answer knows it at once, and asks the database whether the key redeemed.
        assert await store.raise_number(marks_since, time.time()) > time.time() - 60
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT_RECENT
        # This process could not write a mark and has not told the store yet: it asks too.
        await store.set(marks_since, repr(time.time() - stock_gate.REPLAY_TTL - 1))
        monkeypatch.setattr(stock_gate, "_marks", {"lost": time.time()})
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT_RECENT
        as_at_start(monkeypatch)
        # The store lost everything it held but the counter (rebuilt already): unsure, and the
        # count starts again (from now, or a day back when no redemption was made in the day).
        await store.delete(marks_since)
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT_UNSURE
        restarted = float(await store.get(marks_since))
        assert time.time() - 60 < restarted <= time.time()
        # The window stays open for its two minutes, and is not stretched by the answers in it.
        unsure = stock_gate.store_key("gate", "unsure")
        assert await store.get(unsure) is not None
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT_UNSURE
        assert float(await store.get(marks_since)) == restarted
        await store.delete(unsure)  # two minutes on
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT_RECENT
    finally:
        await store.delete(stock_gate.gate_key(right_id))


async def test_a_store_that_lost_its_count_gets_it_back_only_with_its_window(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the count of marks comes back after the store lost its data (a lost mark told
    late, a process starting after redemptions today, a sold-out answer), a first request
    still under way is covered: its retry goes to the database for the window's two minutes."""
    store = get_store()
    right_id = 10**9 + 8
    marks_since = marks_since_key()
    unsure = stock_gate.store_key("gate", "unsure")
    await store.set(stock_gate.gate_key(right_id), "0", stock_gate.GATE_TTL)
    try:
        # A mark lost during the outage is told once the store answers: no count is made.
        await store.delete(marks_since, unsure)
        as_at_start(monkeypatch)
        stock_gate.note_lost_mark(time.time())
        await stock_gate._publishing["task"]
        assert await store.get(marks_since) is None
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT_UNSURE
        assert await store.get(unsure) is not None
        # A process starting after a redemption was made today starts the count with a window.
        merchant = await approved_merchant(client)
        right = await listed_right(client, merchant, pointsPrice="1", stock=1)
        assert outcome(await redeem(client, await resident(points=5), right)) == "OK"
        await store.delete(marks_since, unsure)
        await stock_gate.start_count()
        assert await store.get(marks_since) is not None and await store.get(unsure) is not None
        assert await stock_gate.take(right_id, 1, "s", unique("k")) is stock_gate.Gate.SOLD_OUT_UNSURE
    finally:
        await store.delete(stock_gate.gate_key(right_id))
