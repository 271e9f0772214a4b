"""Grouped redemptions (mall.redeeming lanes): each request answered as alone, under crowds,
cancellations, a store that is down, clients that go away and keys from before the groups."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.auth import Principal
from app.db import dialect
from app.idempotency import IdempotencyRecord
from app.ledger.verify import verify
from app.participants import resident_id as real_resident_id
from app.redis import get_store
from graphql_schema.ids import decode_id
from mall import redeeming, rights, stock_gate
from mall.models import Merchant, Redemption, RedemptionStatus, RedemptionTally, Right
from points.credit import flush_refreshes
from tests.helpers import unique
from tests.mall_support import (
    approved_merchant,
    as_at_start,
    cancel,
    count_groups,
    hold_every_mark,
    listed_right,
    marks_since_key,
    outcome,
    points_of,
    redeem,
    resident,
    stock_of,
)

pytestmark = pytest.mark.usefixtures("every_mark_held_afterwards")


class _StoreDown:
    """A store whose every call fails, as Redis does when it cannot be reached."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def down(*args: object, **kwargs: object) -> Any:
            raise ConnectionError(f"store down ({name})")

        return down


def _store_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stock gate finds the store unreachable: the database decides alone."""
    monkeypatch.setattr(stock_gate, "get_store", _StoreDown)


async def _gate(right_id: str) -> int | None:
    """The stock gate's counter of a right, None when it is not set."""
    value = await get_store().get(stock_gate.gate_key(decode_id("Right", right_id)))
    return None if value is None else int(value)


async def _issued(right_id: str) -> Counter[int]:
    """Issued or used items of a right per person."""
    rows = await Redemption.filter(
        right_id=decode_id("Right", right_id),
        status__in=[RedemptionStatus.ISSUED.value, RedemptionStatus.USED.value],
    ).values_list("participant_id", "quantity")
    held: Counter[int] = Counter()
    for participant_id, quantity in rows:
        held[participant_id] += quantity
    return held


async def _tallies(right_id: str) -> Counter[int]:
    """The per-person tally rows of a right (zeros left out)."""
    rows = await RedemptionTally.filter(right_id=decode_id("Right", right_id)).values_list(
        "participant_id", "quantity"
    )
    return Counter({participant_id: quantity for participant_id, quantity in rows if quantity})


async def test_a_replay_answers_exactly_as_the_first_request(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests committed in groups and their retries (in groups too) get the same redemption
    fields; the account shows the balance after the one redemption."""
    sizes = count_groups(monkeypatch)
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="30", stock=40, perPersonLimit=2)
    buyers = [await resident(points=100) for _ in range(8)]
    keys = [unique("k") for _ in buyers]
    pairs = list(zip(buyers, keys, strict=True))
    firsts = await asyncio.gather(*(redeem(client, b, right_id, 2, k) for b, k in pairs))
    retries = await asyncio.gather(*(redeem(client, b, right_id, 2, k) for b, k in pairs))
    assert max(sizes) > 1
    assert [outcome(p) for p in firsts + retries] == ["OK"] * 16
    for first, retry in zip(firsts, retries, strict=True):
        assert retry["redemption"] == first["redemption"]
        assert first["account"] == retry["account"] == {"points": "40"}
        assert first["redemption"]["quantity"] == 2 and first["redemption"]["pointsSpent"] == "60"
    assert len({p["redemption"]["voucherCode"] for p in firsts}) == 8
    assert await stock_of(client, right_id, merchant) == 24
    assert await _gate(right_id) == 24


@pytest.mark.parametrize("gate", ["up", "down"])
async def test_every_refusal_in_a_crowd_is_the_one_given_alone(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, gate: str
) -> None:
    """Crowds on rights that refuse some or all of them: each request gets the answer it gets
    alone, with the stock gate working or the store down."""
    if gate == "down":
        _store_down(monkeypatch)
    sizes = count_groups(monkeypatch)
    merchant = await approved_merchant(client)
    suspended = await approved_merchant(client)
    scarce = await listed_right(client, merchant, pointsPrice="10", stock=3)
    limited = await listed_right(client, merchant, pointsPrice="10", stock=50, perPersonLimit=1)
    elite = await listed_right(client, merchant, pointsPrice="10", stock=50, minCreditGrade="A")
    dear = await listed_right(client, merchant, pointsPrice="60", stock=50, perPersonLimit=5)
    keyed = await listed_right(client, merchant, pointsPrice="10", stock=50, perPersonLimit=5)
    paused = await listed_right(client, merchant, pointsPrice="10", stock=50)
    ended = await listed_right(client, merchant, pointsPrice="10", stock=50)
    closed = await listed_right(client, suspended, pointsPrice="10", stock=50)
    await Right.filter(id=decode_id("Right", paused)).update(paused=True)
    await Right.filter(id=decode_id("Right", ended)).update(
        valid_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    await Merchant.filter(participant_id=suspended.participant_id).update(status="SUSPENDED")

    crowd = [await resident(points=100) for _ in range(6)]
    at_limit, ineligible, repeat = [await resident(points=100) for _ in range(3)]
    poor = await resident(points=50)
    assert (await redeem(client, at_limit, limited))["userErrors"] == []
    key = unique("k")
    first = await redeem(client, repeat, keyed, key=key)
    eligible = {b.participant_id for b in crowd}

    async def grade(participant_id: int) -> str:
        return "AA" if participant_id in eligible else "B"

    monkeypatch.setattr(redeeming, "current_grade", grade)
    unknown = "UmlnaHQ6OTk5OTk5OTk5"
    calls = [
        *(redeem(client, b, scarce) for b in crowd),
        *(redeem(client, b, limited) for b in crowd[:3]), redeem(client, at_limit, limited),
        *(redeem(client, b, elite) for b in crowd[:3]), redeem(client, ineligible, elite),
        *(redeem(client, b, dear) for b in crowd[:3]), redeem(client, poor, dear),
        *(redeem(client, b, keyed) for b in crowd[:3]),
        redeem(client, repeat, keyed, key=key), redeem(client, ineligible, keyed, 2),
        *(redeem(client, b, unknown) for b in crowd[:3]),
        *(redeem(client, b, paused) for b in crowd[:3]),
        *(redeem(client, b, ended) for b in crowd[:3]),
        *(redeem(client, b, closed) for b in crowd[:3]),
    ]
    payloads = await asyncio.gather(*calls)
    answers = [outcome(p) for p in payloads]
    assert max(sizes) > 1
    assert sorted(answers[:6]) == ["OK"] * 3 + ["OUT_OF_STOCK"] * 3
    assert answers[6:10] == ["OK"] * 3 + ["PER_PERSON_LIMIT"]
    assert answers[10:14] == ["OK"] * 3 + ["NOT_ELIGIBLE"]
    assert answers[14:18] == ["OK"] * 3 + ["INSUFFICIENT_POINTS"]
    assert answers[18:23] == ["OK"] * 5
    assert payloads[21]["redemption"]["id"] == first["redemption"]["id"]
    assert answers[23:26] == ["NOT_FOUND"] * 3
    assert answers[26:35] == ["INVALID_STATE"] * 9
    assert all(p["redemption"] is None for p, a in zip(payloads, answers, strict=True) if a != "OK")
    assert await points_of(poor.participant_id) == (50, 0)
    assert await points_of(at_limit.participant_id) == (90, 0)
    assert await points_of(ineligible.participant_id) == (80, 0)
    assert await points_of(merchant.participant_id) == (
        10 * (3 + 1 + 3 + 3) + 60 * 3 + 10 * (1 + 3 + 2), 0
    )
    stocks = {r: await stock_of(client, r, merchant) for r in (scarce, limited, elite, dear, keyed)}
    assert stocks == {scarce: 0, limited: 46, elite: 47, dear: 47, keyed: 44}
    for right_id in (limited, elite, dear, keyed, paused, ended):
        assert await _gate(right_id) in (None, await stock_of(client, right_id, merchant))
    for right_id in (scarce, limited, elite, dear, keyed):
        assert await _tallies(right_id) == await _issued(right_id)
    assert (await verify()).ok


@pytest.mark.parametrize("change", ["pause", "price", "suspension"])
async def test_a_group_meets_a_change_made_after_it_first_read_the_right(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A pause, a new price or the merchant's suspension committed while a group is being
    formed (after it read the right, before its transaction) holds for the group, as it would
    for each request alone; only the redemptions made before the change keep the old terms."""
    sizes = count_groups(monkeypatch)
    # One transaction of the right at a time, so none is under way while the change is made:
    # whoever had redeemed by then redeemed before it.
    monkeypatch.setattr(redeeming, "TRANSACTIONS_PER_RIGHT", 1)
    merchant = await approved_merchant(client)
    right = await listed_right(client, merchant, pointsPrice="100", stock=100, perPersonLimit=5)
    right_id = decode_id("Right", right)
    owner = Principal("merchant-staff", frozenset({"merchant"}), merchant.code)
    crowd = [await resident(points=1_000) for _ in range(8)]
    read_points = redeeming._points_accounts
    before: set[int] = set()  # who had redeemed when the change was made
    changed = asyncio.Event()

    async def points_accounts(people: list[int]) -> dict[int, tuple[int, int]]:
        if len(people) > 1 and not changed.is_set():  # a group, after it read the right
            changed.set()
            before.update(await Redemption.filter(right_id=right_id).values_list("participant_id", flat=True))
            if change == "pause":
                await rights.set_paused(owner, right_id, True)
            elif change == "price":
                await rights.update_right(owner, right_id, points_price=500)
            else:
                await Merchant.filter(participant_id=merchant.participant_id).update(status="SUSPENDED")
        return await read_points(people)

    monkeypatch.setattr(redeeming, "_points_accounts", points_accounts)
    answers = [outcome(p) for p in await asyncio.gather(*(redeem(client, b, right) for b in crowd))]
    assert changed.is_set() and max(sizes) > 1
    earlier = [b for b in crowd if b.participant_id in before]
    later = [b for b in crowd if b.participant_id not in before]
    assert len(later) > 1
    prices = dict(await Redemption.filter(right_id=right_id).values_list("participant_id", "unit_price"))
    if change == "price":
        assert answers == ["OK"] * 8
        assert prices == {b.participant_id: 100 if b in earlier else 500 for b in crowd}
        assert [await points_of(b.participant_id) for b in later] == [(500, 0)] * len(later)
    else:
        assert sorted(answers) == ["INVALID_STATE"] * len(later) + ["OK"] * len(earlier)
        assert prices == {b.participant_id: 100 for b in earlier}
        assert [await points_of(b.participant_id) for b in later] == [(1_000, 0)] * len(later)
    assert (await verify()).ok


async def test_crowds_and_cancellations_with_the_store_down_never_oversell(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the gate bypassed, two requests per person in a crowd, others cancelling their
    vouchers at once and a second right of the same merchant: stock, limits, tallies and the
    ledger stay right and every request is answered."""
    merchant = await approved_merchant(client)
    hot = await listed_right(client, merchant, pointsPrice="10", stock=30, perPersonLimit=2)
    other = await listed_right(client, merchant, pointsPrice="10", stock=200, perPersonLimit=5)
    holders = [await resident(points=200) for _ in range(10)]
    made = [(await redeem(client, h, hot))["redemption"]["id"] for h in holders]
    crowd = [await resident(points=25) for _ in range(30)]
    _store_down(monkeypatch)
    payloads = await asyncio.gather(
        *(redeem(client, b, hot) for b in crowd),
        *(cancel(client, h, rid) for h, rid in zip(holders, made, strict=True)),
        *(redeem(client, b, hot) for b in crowd),
        *(redeem(client, h, other) for h in holders),
        *(redeem(client, b, other) for b in crowd),
    )
    hot_answers = Counter(outcome(p) for p in payloads[:30] + payloads[40:70])
    assert [outcome(p) for p in payloads[30:40]] == ["OK"] * 10
    assert set(hot_answers) <= {"OK", "OUT_OF_STOCK", "INSUFFICIENT_POINTS"}
    # 30 items: 20 left before the rush, 10 given back by the cancellations meanwhile
    assert 20 <= hot_answers["OK"] <= 30
    sold = await _issued(hot)
    assert sum(sold.values()) == hot_answers["OK"] == 30 - await stock_of(client, hot, merchant)
    assert await _tallies(hot) == sold and max(sold.values()) <= 2
    for b in crowd:
        balance, _ = await points_of(b.participant_id)
        assert balance >= 0 and balance == 25 - 10 * (sold[b.participant_id]
                                                      + (await _issued(other))[b.participant_id])
    assert await _tallies(other) == await _issued(other)
    assert sum((await _issued(other)).values()) == 200 - await stock_of(client, other, merchant)
    assert decode_id("Right", hot) not in redeeming._lanes
    assert (await verify()).ok


async def test_a_client_that_goes_away_in_a_group_keeps_one_redemption(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled while its group runs: the redemption is made once, a retry with the
    key replays it, the gate and the lane are left as they should be, the others answered."""
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=40)
    buyers = [await resident(points=100) for _ in range(12)]
    keys = {b.subject: unique("k") for b in buyers}
    arrived = 0
    all_in, opened, chosen, resume = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
    victim: list[str] = []
    looked_up, settle, together = redeeming.resident_id, redeeming._settle, redeeming._together

    async def counted(principal: Any) -> int:
        nonlocal arrived
        found = await looked_up(principal)
        arrived += 1
        if arrived == len(buyers):
            all_in.set()  # the last request joins its lane before anything else runs
        return found

    async def held(right: int, group: list) -> None:
        await opened.wait()
        await settle(right, group)

    async def picked(right: int, group: list) -> tuple:
        if not victim:
            victim.append(group[-1].subject)
            chosen.set()
            await resume.wait()
        return await together(right, group)

    monkeypatch.setattr(redeeming, "resident_id", counted)
    monkeypatch.setattr(redeeming, "_settle", held)
    monkeypatch.setattr(redeeming, "_together", picked)
    tasks = {b.subject: asyncio.ensure_future(redeem(client, b, right_id, key=keys[b.subject]))
             for b in buyers}
    await all_in.wait()
    opened.set()
    await chosen.wait()
    tasks[victim[0]].cancel()
    resume.set()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    gone = next(b for b in buyers if b.subject == victim[0])
    assert tasks[gone.subject].cancelled()
    assert [outcome(r) for s, r in zip(tasks, results, strict=True) if s != gone.subject] == ["OK"] * 11
    assert await Redemption.filter(participant_id=gone.participant_id).count() == 1
    retry = await redeem(client, gone, right_id, key=keys[gone.subject])
    assert retry["userErrors"] == [] and retry["account"] == {"points": "90"}
    assert await Redemption.filter(participant_id=gone.participant_id).count() == 1
    assert await stock_of(client, right_id, merchant) == 28
    assert await _gate(right_id) == 28
    assert decode_id("Right", right_id) not in redeeming._lanes
    assert (await verify()).ok


async def test_lanes_are_gone_once_every_request_is_answered(client: httpx.AsyncClient) -> None:
    """After a crowd on several rights (each person sending several at once), every request is
    answered and no lane is left behind."""
    merchant = await approved_merchant(client)
    rights = [await listed_right(client, merchant, pointsPrice="1", stock=100, perPersonLimit=100)
              for _ in range(3)]
    buyers = [await resident(points=1000) for _ in range(5)]
    payloads = await asyncio.gather(
        *(redeem(client, b, r) for r in rights for b in buyers for _ in range(4))
    )
    assert [outcome(p) for p in payloads] == ["OK"] * 60
    assert not any(decode_id("Right", r) in redeeming._lanes for r in rights)
    assert [await points_of(b.participant_id) for b in buyers] == [(988, 0)] * 5
    assert [await _gate(r) for r in rights] == [80] * 3


async def test_the_same_key_sent_at_once_answers_the_one_redemption_to_all(
    client: httpx.AsyncClient,
) -> None:
    """A double-tapped request (the same key several times at once) gets the one redemption in
    every answer, never a conflict, and is charged once."""
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="7", stock=50, perPersonLimit=50)
    buyer = await resident(points=1000)
    key = unique("k")
    payloads = await asyncio.gather(*(redeem(client, buyer, right_id, key=key) for _ in range(8)))
    assert [outcome(p) for p in payloads] == ["OK"] * 8
    assert len({p["redemption"]["id"] for p in payloads}) == 1
    assert len({p["redemption"]["voucherCode"] for p in payloads}) == 1
    assert await points_of(buyer.participant_id) == (993, 0)
    assert await stock_of(client, right_id, merchant) == 49
    assert await _gate(right_id) == 49


async def test_a_token_whose_twin_redeemed_first_stays_taken(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same key sent twice at once, the request holding the gate's token held back until its
    twin (past the gate without one) has redeemed: the token paid for that redemption, so the
    gate counts the one item sold, as the database does."""
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="7", stock=5, perPersonLimit=5)
    buyer = await resident(points=1000)
    key = unique("k")
    take = stock_gate.take
    twin_done = asyncio.Event()

    async def token_last(*args: Any) -> stock_gate.Gate:
        gate = await take(*args)
        if gate is stock_gate.Gate.TOKEN:
            await asyncio.wait_for(twin_done.wait(), 10)
        return gate

    async def twin() -> dict[str, Any]:
        await asyncio.sleep(0.05)  # after the first request has taken the token
        try:
            return await redeem(client, buyer, right_id, key=key)
        finally:
            twin_done.set()

    monkeypatch.setattr(stock_gate, "take", token_last)
    first, second = await asyncio.gather(redeem(client, buyer, right_id, key=key), twin())
    assert [outcome(first), outcome(second)] == ["OK", "OK"]
    assert first["redemption"]["id"] == second["redemption"]["id"]
    assert await points_of(buyer.participant_id) == (993, 0)
    assert await stock_of(client, right_id, merchant) == 4
    assert await _gate(right_id) == 4


async def test_a_key_redeemed_before_groups_replays_its_redemption(client: httpx.AsyncClient) -> None:
    """A retry of a redemption whose claim holds the result stored before groups (the
    redemption id) replays that redemption instead of failing."""
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=5, perPersonLimit=5)
    buyer = await resident(points=100)
    key = unique("k")
    first = await redeem(client, buyer, right_id, key=key)
    redemption_id = decode_id("Redemption", first["redemption"]["id"])
    # The record as the release before groups wrote it: its result is the redemption id.
    await IdempotencyRecord.filter(scope=f"redeem:{buyer.subject}", key=key).update(
        result={"redemption_id": redemption_id}
    )
    again = await redeem(client, buyer, right_id, key=key)
    assert again["userErrors"] == []
    assert again["redemption"] == first["redemption"]
    assert await points_of(buyer.participant_id) == (90, 0)


async def _sold_by_one_redemption(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Any, Any, str, dict]:
    """A right of stock 1 that `buyer` redeemed with `key` (the first answer), a resident `late`
    who comes after, and a store holding every replay mark of the last day:
    (right id, buyer, late, key, first answer)."""
    as_at_start(monkeypatch)
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=1, perPersonLimit=5)
    buyer, late = await resident(points=100), await resident(points=100)
    key = unique("k")
    first = await redeem(client, buyer, right_id, key=key)
    assert first["userErrors"] == []
    await hold_every_mark()
    # Sold out, and every mark held: a new key is refused without asking the database.
    assert await stock_gate.take(decode_id("Right", right_id), 1, late.subject, unique("k")) is (
        stock_gate.Gate.SOLD_OUT)
    return right_id, buyer, late, key, first


@pytest.mark.parametrize("loss", ["restart", "unwritten mark"])
async def test_a_retry_after_the_store_lost_its_mark_replays_past_a_sold_out_gate(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, loss: str
) -> None:
    """The store restarted empty, or could not take the mark of a redemption: a retry of that
    redemption, the right now sold out, still gets its first result; a new key finds it sold
    out, and so does the retry once the store again holds every mark of the last day."""
    right_id, buyer, late, key, first = await _sold_by_one_redemption(client, monkeypatch)
    store = get_store()
    marks_since = marks_since_key()
    await store.delete(stock_gate.replay_key(buyer.subject, key))
    if loss == "restart":  # everything the store held is gone
        await store.delete(stock_gate.gate_key(decode_id("Right", right_id)), marks_since)
    else:  # another process could not write the mark; it tells the store once it can
        stock_gate.note_lost_mark(time.time())
        await stock_gate._publishing["task"]
        # The retry lands on a process that noted nothing itself.
        as_at_start(monkeypatch)
    assert outcome(await redeem(client, late, right_id)) == "OUT_OF_STOCK"
    again = await redeem(client, buyer, right_id, key=key)
    assert again["userErrors"] == [] and again["redemption"] == first["redemption"]
    other_input = await redeem(client, buyer, right_id, quantity=2, key=key)
    assert outcome(other_input) == "IDEMPOTENCY_CONFLICT"
    assert outcome(await redeem(client, buyer, right_id)) == "OUT_OF_STOCK"
    assert outcome(await redeem(client, late, right_id)) == "OUT_OF_STOCK"
    assert await points_of(buyer.participant_id) == (90, 0)
    assert await _gate(right_id) == 0
    # A day on (the store's marks-since a day back, its two-minute window long closed, and a
    # process that noted nothing).
    await store.set(marks_since, str(time.time() - stock_gate.REPLAY_TTL - 1))
    await store.delete(stock_gate.store_key("gate", "unsure"))
    as_at_start(monkeypatch)
    assert outcome(await redeem(client, buyer, right_id, key=key)) == "OUT_OF_STOCK"


async def test_a_retry_just_after_the_store_was_emptied_replays_its_redemption(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is emptied (restarted, flushed) a moment after a sold-out answer that trusted
    every mark: whichever request comes first afterwards, and on whichever worker, the retry of
    a redemption, the right sold out, still gets its first result, and the store starts
    counting its marks again."""
    right_id, buyer, late, key, first = await _sold_by_one_redemption(client, monkeypatch)
    store = get_store()
    marks_since = marks_since_key()
    await store.delete(stock_gate.replay_key(buyer.subject, key),
                       stock_gate.gate_key(decode_id("Right", right_id)), marks_since)
    # Someone else's request comes first: the store's count of marks starts again from now.
    assert outcome(await redeem(client, late, right_id)) == "OUT_OF_STOCK"
    assert float(await store.get(marks_since)) > time.time() - 60
    for _ in range(2):  # the retry, and its own retry: the database replays both
        again = await redeem(client, buyer, right_id, key=key)
        assert again["userErrors"] == [] and again["redemption"] == first["redemption"]
    assert outcome(await redeem(client, late, right_id)) == "OUT_OF_STOCK"
    assert await points_of(buyer.participant_id) == (90, 0)


async def _one_left_after_a_quiet_start(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, int]:
    """A new right with one item left, the store holding every mark of the last day and this
    process as it starts: (right's global id, its row id)."""
    as_at_start(monkeypatch)
    await hold_every_mark()
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=1, perPersonLimit=5)
    return right_id, decode_id("Right", right_id)


@pytest.mark.skipif(dialect() != "postgres",
                    reason="SQLite runs one transaction at a time: no retry overtakes an open one")
async def test_a_retry_overtaking_its_first_request_after_the_store_lost_its_data_replays(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request (key K) holds the last item in an open transaction; the store is
    emptied; two other residents come (the second finds the count of marks started again);
    then the retry of K comes before the first request commits: it waits for it and replays."""
    right_id, rid = await _one_left_after_a_quiet_start(client, monkeypatch)
    store, marks_since = get_store(), marks_since_key()
    buyer, late1, late2 = (
        await resident(points=100), await resident(points=100), await resident(points=100))
    key = unique("k")
    written, release = asyncio.Event(), asyncio.Event()
    write = redeeming._write

    async def held(conn: Any, right: Any, merchant: Any, asks: list, *rest: Any) -> Any:
        out = await write(conn, right, merchant, asks, *rest)
        if any(a.key == key for a in asks):
            written.set()
            await asyncio.wait_for(release.wait(), 20)
        return out

    monkeypatch.setattr(redeeming, "_write", held)
    first = asyncio.ensure_future(redeem(client, buyer, right_id, key=key))
    await asyncio.wait_for(written.wait(), 10)
    # The store restarts empty (or is flushed).
    await store.delete(stock_gate.replay_key(buyer.subject, key), stock_gate.gate_key(rid), marks_since)
    others = [asyncio.ensure_future(redeem(client, late1, right_id))]
    await asyncio.sleep(0.3)
    others.append(asyncio.ensure_future(redeem(client, late2, right_id)))
    await asyncio.sleep(0.3)
    retry_sent = asyncio.ensure_future(redeem(client, buyer, right_id, key=key))
    await asyncio.sleep(0.5)  # the retry reaches the database and waits for the first request
    assert not retry_sent.done()
    release.set()
    first, retry = await first, await retry_sent
    await asyncio.gather(*others)
    assert [outcome(first), outcome(retry)] == ["OK", "OK"]
    assert retry["redemption"] == first["redemption"]
    assert await points_of(buyer.participant_id) == (90, 0)


async def test_a_retry_of_a_request_past_the_gate_not_yet_claimed_after_a_loss_gets_its_result(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request has passed the gate and not yet claimed its key (it waits before the
    lane) when the store is emptied; another resident takes the rebuilt counter's token; a sold-
    out answer starts the count of marks again; then the first request's retry comes. Both get
    one and the same result."""
    right_id, rid = await _one_left_after_a_quiet_start(client, monkeypatch)
    store, marks_since = get_store(), marks_since_key()
    buyer = await resident(points=100)
    slow = await resident(points=0)   # takes a token, will be refused (no points)
    poor = await resident(points=0)   # the first sold-out answer after the loss
    key = unique("k")
    gates: dict[str, asyncio.Event] = {buyer.subject: asyncio.Event(), slow.subject: asyncio.Event()}
    reached: dict[str, asyncio.Event] = {buyer.subject: asyncio.Event(), slow.subject: asyncio.Event()}
    first_call = {buyer.subject: True, slow.subject: True}

    async def held(principal: Any) -> int:
        s = principal.subject
        if s in gates and first_call[s]:
            first_call[s] = False
            reached[s].set()
            await asyncio.wait_for(gates[s].wait(), 20)   # latency before the lane (pool, lane queue)
        return await real_resident_id(principal)

    monkeypatch.setattr(redeeming, "resident_id", held)
    # The first request takes the last item's token (and marks its key), then is slow.
    first = asyncio.ensure_future(redeem(client, buyer, right_id, key=key))
    await asyncio.wait_for(reached[buyer.subject].wait(), 10)
    # The store restarts empty.
    await store.delete(stock_gate.replay_key(buyer.subject, key), stock_gate.gate_key(rid), marks_since)
    # Someone takes the rebuilt counter's token (the DB still has the item), slow too.
    other = asyncio.ensure_future(redeem(client, slow, right_id))
    await asyncio.wait_for(reached[slow.subject].wait(), 10)
    # A sold-out answer restarts the count of marks.
    assert outcome(await redeem(client, poor, right_id)) in ("OUT_OF_STOCK", "INSUFFICIENT_POINTS")
    # The client's retry of the first request (same key, same input).
    retry = await redeem(client, buyer, right_id, key=key)
    gates[slow.subject].set()
    gates[buyer.subject].set()
    first_answer, other_answer = await first, await other
    # The contract: the same key with the same input returns the first result.
    assert [outcome(first_answer), outcome(retry)] == ["OK", "OK"], (first_answer, retry)
    assert first_answer["redemption"] == retry["redemption"]
    assert await points_of(buyer.participant_id) == (90, 0)
    assert outcome(other_answer) in ("OUT_OF_STOCK", "INSUFFICIENT_POINTS")


async def test_groups_of_graded_rights_and_credit_refreshes_never_deadlock(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """People who just redeemed (their credit refresh queued) redeem several rights that need a
    credit grade at once: the groups (which check the grades) and the refresh of the same
    people's standings never deadlock, so no group stalls and falls back to one by one and no
    refresh is lost."""
    sizes = count_groups(monkeypatch)
    merchant = await approved_merchant(client)
    plain = await listed_right(client, merchant, pointsPrice="1", stock=1000, perPersonLimit=100)
    graded = [await listed_right(client, merchant, pointsPrice="1", stock=1000, perPersonLimit=100,
                                 minCreditGrade="B") for _ in range(3)]
    people = [await resident(points=1000) for _ in range(24)]
    for _ in range(3):
        await asyncio.gather(*(redeem(client, p, plain) for p in people))
        payloads = await asyncio.gather(
            *(redeem(client, p, r) for r in graded for p in people for _ in range(2)),
            flush_refreshes(),
        )
        assert [outcome(p) for p in payloads[:-1]] == ["OK"] * 144
    assert max(sizes) > 1
    assert "deadlock" not in caplog.text.lower()
    assert [await points_of(p.participant_id) for p in people] == [(979, 0)] * 24


async def test_a_store_that_does_not_answer_does_not_hold_the_lane(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store leaves the gate's after-commit calls (replay mark, give-back) unanswered,
    the lane still commits the requests waiting behind the first groups."""
    real = get_store()
    release, all_started = asyncio.Event(), asyncio.Event()

    class Stalled:
        """The stock gate's store: counters work, the after-commit calls wait for `release`."""

        def __getattr__(self, name: str) -> Any:
            if name not in ("set", "incr_if_exists"):
                return getattr(real, name)

            async def stalled(*args: object) -> Any:
                await release.wait()
                return await getattr(real, name)(*args)

            return stalled

    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="1", stock=1000)
    buyers = [await resident(points=10) for _ in range(200)]
    started = 0
    together, alone = redeeming._together, redeeming._alone

    def count(asks: int) -> None:
        nonlocal started
        started += asks
        if started >= len(buyers):
            all_started.set()

    async def counted_together(right: int, group: list) -> tuple:
        count(len(group))
        return await together(right, group)

    async def counted_alone(right: int, ask: Any) -> tuple:
        count(1)
        return await alone(right, ask)

    monkeypatch.setattr(stock_gate, "get_store", Stalled)
    monkeypatch.setattr(redeeming, "_together", counted_together)
    monkeypatch.setattr(redeeming, "_alone", counted_alone)
    requests = asyncio.gather(*(redeem(client, b, right_id) for b in buyers))
    try:
        # a guard, not a measure: a lane that waits for the store never gets there
        async with asyncio.timeout(20):
            await all_started.wait()
    finally:
        release.set()
        payloads = await requests
    assert [outcome(p) for p in payloads] == ["OK"] * 200


async def test_the_same_key_sent_at_once_for_the_last_item_is_not_sold_out(
    client: httpx.AsyncClient,
) -> None:
    """A double-tapped request for the last item: the retries get the redemption the first one
    made, not OUT_OF_STOCK (which would tell the buyer it failed while the points are gone)."""
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="7", stock=1)
    buyer = await resident(points=1000)
    key = unique("k")
    payloads = await asyncio.gather(*(redeem(client, buyer, right_id, key=key) for _ in range(4)))
    assert await points_of(buyer.participant_id) == (993, 0)
    assert [outcome(p) for p in payloads] == ["OK"] * 4
