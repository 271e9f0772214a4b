"""The flash-sale stock gate: a counter per right in the store, in front of the database.

When thousands press "redeem" for a few hundred items, the database should only see the
requests that can still win. Each right has a counter in the store (Redis across workers, the
in-process stand-in otherwise) that starts at the right's `stock_remaining` in the database. A
redemption first takes its quantity from the counter with one atomic step (Lua: decrement only
if enough is left): if too little is left it is refused as OUT_OF_STOCK without touching the
database; otherwise it goes on to the database transaction, which stays the source of truth
(conditional UPDATE of the stock). When the transaction refuses or fails, the quantity is
given back to the counter.

Drift is always towards letting too many through, never too few, except for one case:
- A counter missing (first use, evicted, expired) is rebuilt from the database with SET NX.
  Rebuilt while redemptions are in flight, it counts their items twice: more requests reach
  the database, which refuses the extra ones. Safe.
- Stock added back (restock, cancellation, expiry) is added to the counter after commit.
- A worker dying between taking and giving back (or a request cancelled while the store
  answers its take) leaves the counter too low; the counter expires after GATE_TTL seconds and
  is rebuilt, which heals it.

A request that takes a token also marks its idempotency key in the store: the same request sent
again, even at the same moment, goes past the counter to the database, which replays the
redemption (or refuses it exactly as it would alone) instead of answering sold out. When such a
twin reaches the database first and redeems, the token's holder gets the replay and keeps its
token taken: it paid for its twin's item (`mall.redeeming`).
- The store unreachable: the gate is bypassed and the database decides alone.

A key's mark may be missing though it redeemed: the store restarted empty, or a mark could not
be written while it was unreachable. The store keeps the moment since which it holds every mark
(marks-since), and the take reads it in the same atomic step: when the counter is short and
that moment is within a day, the request asks the database whether its key redeemed before, so
a retry still gets its first result; when the moment is gone too (the store just restarted or
was flushed), or a window of UNSURE_S opened when the count started again is still open, the
request goes to the database, which replays or refuses it (waiting for a first request still
under way), and the count of marks starts again from now (`mall.redeeming`). No process keeps
its own reading of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from enum import Enum

from app.redis import (
    TAKE_BYPASS,
    TAKE_DONE,
    TAKE_MISSING,
    TAKE_RECENT,
    TAKE_SHORT,
    TAKE_UNSURE,
    get_store,
)
from mall.keys import store_key
from mall.models import Redemption, Right

log = logging.getLogger(__name__)
GATE_TTL = 60
REPLAY_TTL = 24 * 3600
PUBLISH_RETRY_S = 0.5  # how often a lost mark's moment is offered to a store that is away
# For this long after the store lost its data (a key expiring on the store's own clock), a
# sold-out request goes to the database whatever its key: a first request with the same key may
# have passed the gate and not yet claimed its key (the lane, its group's reads), so only the
# database's claim can order the two. Far longer than any request. A mark that could not be
# written belongs to a redemption already committed, so it opens no such window.
UNSURE_S = 2 * GATE_TTL
_marks = {"lost": 0.0}  # a mark this process could not write, not yet told to the store
_publishing: dict[str, asyncio.Task[None]] = {}


class Gate(Enum):
    """What the gate said: go on holding a token, go on without one, or sold out. Sold out and
    recent: the store has not held every mark for a day, so ask the database whether the key
    redeemed before. Sold out and unsure: the store lost what it held, now or moments ago; let
    the database decide."""

    TOKEN = "token"
    PASS = "pass"
    SOLD_OUT = "sold_out"
    SOLD_OUT_RECENT = "sold_out_recent"
    SOLD_OUT_UNSURE = "sold_out_unsure"


def gate_key(right_id: int) -> str:
    """The store key of a right's counter."""
    return store_key("gate", right_id)


def replay_key(subject: str, idempotency_key: str) -> str:
    """The store key marking a redemption already made with this idempotency key."""
    digest = hashlib.sha256(f"{subject}\x00{idempotency_key}".encode()).hexdigest()[:40]
    return store_key("redeemed", digest)


async def _rebuild(right_id: int) -> bool:
    """Set a missing counter from the database; False when the right does not exist."""
    stock = await Right.filter(id=right_id).values_list("stock_remaining", flat=True)
    if not stock:
        return False
    await get_store().set_nx(gate_key(right_id), str(stock[0]), GATE_TTL)
    return True


async def take(right_id: int, quantity: int, subject: str, idempotency_key: str) -> Gate:
    """Take `quantity` from the right's counter before the database is asked; taking it also
    marks the idempotency key, so the same request sent again goes past the gate to the
    database (which replays it, or refuses it as it would alone) instead of finding it sold out."""
    store = get_store()
    try:
        for _ in range(2):
            result = await store.take(gate_key(right_id), quantity, replay_key(subject, idempotency_key),
                                      REPLAY_TTL, _marks_key(), time.time() - REPLAY_TTL, _unsure_key())
            if result == TAKE_DONE:
                return Gate.TOKEN
            if result == TAKE_SHORT:
                return Gate.SOLD_OUT_RECENT if _marks["lost"] else Gate.SOLD_OUT
            if result == TAKE_RECENT:
                return Gate.SOLD_OUT_RECENT
            if result == TAKE_UNSURE:
                await start_count(after_loss=True)
                return Gate.SOLD_OUT_UNSURE
            if result == TAKE_BYPASS:
                return Gate.PASS
            if result == TAKE_MISSING and not await _rebuild(right_id):
                return Gate.PASS
    except Exception:  # noqa: BLE001 - the store is a pre-filter: without it the database decides
        log.warning("stock gate unavailable for right %s; asking the database", right_id)
    return Gate.PASS


async def put_back(right_id: int, quantity: int) -> None:
    """Add `quantity` back to the right's counter (a refused attempt, or stock added after commit)."""
    try:
        await get_store().incr_if_exists(gate_key(right_id), quantity)
    except Exception:  # noqa: BLE001 - a lost give-back heals when the counter expires
        log.warning("could not give stock back to the gate of right %s", right_id)


async def mark_redeemed(subject: str, idempotency_key: str) -> None:
    """Remember after commit that this key redeemed, so a retry replays past a sold-out gate
    (needed when the gate was passed without a token; taking one marks the key already)."""
    try:
        await get_store().set(replay_key(subject, idempotency_key), "1", REPLAY_TTL)
    except Exception:  # noqa: BLE001 - the store no longer holds every mark: say so when it can
        log.warning("could not mark a redemption for replay")
        note_lost_mark(time.time())


def note_lost_mark(at: float) -> None:
    """A mark could not be written at `at`: this process stops trusting the marks at once, and
    a task raises the store's marks-since to `at` as soon as the store answers, for every
    process (never lowering it, whatever order the losses arrive in)."""
    _marks["lost"] = max(_marks["lost"], at)
    loop = asyncio.get_running_loop()
    task = _publishing.get("task")
    if task is None or task.done() or task.get_loop() is not loop:  # none running on this loop
        _publishing["task"] = loop.create_task(_publish_lost())


async def _publish_lost(retry: bool = True) -> None:
    while lost := _marks["lost"]:
        try:
            # Raised only if the store still holds a count: one it lost is started afresh, with
            # its window, by the next sold-out answer or process start, never from here.
            await get_store().raise_number(_marks_key(), lost)
        except Exception:  # noqa: BLE001 - the store is still away: try again shortly
            if not retry:
                log.warning("stock gate: a lost mark could not be told to the store")
                return
            await asyncio.sleep(PUBLISH_RETRY_S)
            continue
        if _marks["lost"] == lost:  # a loss noted meanwhile goes round again
            _marks["lost"] = 0.0


async def tell_lost_marks() -> None:
    """At shutdown: tell the store of a lost mark not told yet (one attempt)."""
    await _publish_lost(retry=False)


def _marks_key() -> str:
    return store_key("gate", "marks-since")


def _unsure_key() -> str:
    return store_key("gate", "unsure")


async def start_count(after_loss: bool = False) -> None:
    """Start the store's count of marks if it has none (at startup, or when a sold-out answer
    found it gone): from a day back when no redemption was made in the last day, at startup
    only (no mark can be missing then); otherwise from now, after opening the UNSURE_S window,
    since a redemption under way may have lost its mark. A count already there, or started
    meanwhile, is kept, and so is a window already open."""
    now = time.time()
    store = get_store()
    try:
        if await store.get(_marks_key()) is not None:
            return
        since = now
        if not after_loss:
            newest = await Redemption.all().order_by("-id").first().values_list("created_at", flat=True)
            if not newest or newest.timestamp() <= now - REPLAY_TTL:
                since = now - REPLAY_TTL
        if since == now:
            await store.set_nx(_unsure_key(), "1", UNSURE_S)
        await store.set_nx(_marks_key(), repr(since))
    except Exception:  # noqa: BLE001 - without a count every sold-out answer asks the database
        log.warning("stock gate: could not start the count of replay marks")


async def forget(right_id: int) -> None:
    """Drop a right's counter so the next use rebuilds it from the database."""
    try:
        await get_store().delete(gate_key(right_id))
    except Exception:  # noqa: BLE001 - the counter expires anyway
        log.warning("could not drop the gate of right %s", right_id)


async def live_stock(right_ids: list[int]) -> dict[int, int]:
    """Items left per right as the gate counts them (rebuilding missing counters from the database)."""
    if not right_ids:
        return {}
    store = get_store()
    values = await store.mget(*(gate_key(i) for i in right_ids))
    stock = {i: int(v) for i, v in zip(right_ids, values, strict=True) if v is not None}
    missing = [i for i in right_ids if i not in stock]
    if missing:
        found = dict(await Right.filter(id__in=missing).values_list("id", "stock_remaining"))
        await store.set_nx_many({gate_key(i): str(n) for i, n in found.items()}, GATE_TTL)
        stock.update(found)
    return {i: max(0, stock.get(i, 0)) for i in right_ids}
