"""Redemption: checks, ledger, vouchers, idempotency, cancellation, write-off, concurrency."""

from __future__ import annotations

import asyncio

import pytest

from app.auth import Principal
from app.errors import Forbidden
from app.ledger.models import Entry, Transfer
from app.ledger.verify import verify
from app.redis import get_store
from graphql_schema.ids import decode_id
from mall import redeeming, stock_gate
from mall import redemptions as redemption_service
from mall.models import Redemption
from mall.rules import parse_voucher
from tests.helpers import data, error_codes, find_resident, op, token, unique, user_error_codes
from tests.mall_support import (
    approved_merchant,
    cancel,
    count_groups,
    hold_every_mark,
    listed_right,
    outcome,
    points_of,
    redeem,
    resident,
    stock_of,
    write_off,
)


async def _redemptions(participant_id: int) -> int:
    return await Redemption.filter(participant_id=participant_id).count()


async def test_redeem_moves_points_to_the_pool_and_issues_a_voucher(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="120", stock=5, perPersonLimit=3)
    buyer = await resident(points=1000)
    payload = await redeem(client, buyer, right_id, quantity=2)
    assert payload["userErrors"] == []
    redemption = payload["redemption"]
    assert (redemption["status"], redemption["quantity"], redemption["pointsSpent"]) == ("ISSUED", 2, "240")
    assert redemption["right"]["id"] == right_id
    assert parse_voucher(redemption["voucherCode"]) is not None and len(redemption["voucherCode"]) == 14
    assert payload["account"] == {"points": "760"}
    assert await points_of(merchant.participant_id) == (240, 0)
    assert await stock_of(client, right_id, merchant) == 3
    transfer = await Transfer.get(reference=f"redemption:{decode_id('Redemption', redemption['id'])}")
    kinds = await Entry.filter(transfer_id=transfer.id).values_list("kind", "amount")
    assert sorted(kinds) == [("REDEMPTION", -240), ("REDEMPTION", 240)]
    mine = data(await op(client, "MyRedemptions", {"first": 10}, buyer.auth))["me"]["redemptions"]
    [edge] = mine["edges"]
    assert edge["node"]["voucherCode"] == redemption["voucherCode"]
    assert edge["node"]["id"] == redemption["id"]
    ledger = data(await op(client, "MyLedger", {"first": 5}, buyer.auth))["me"]["account"]["entries"]
    assert ledger["edges"][0]["node"]["kind"] == "REDEMPTION"
    assert ledger["edges"][0]["node"]["amount"] == "-240"


async def test_same_key_replays_and_other_input_conflicts(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=5, perPersonLimit=5)
    buyer = await resident(points=100)
    key = unique("k")
    first = await redeem(client, buyer, right_id, key=key)
    again = await redeem(client, buyer, right_id, key=key)
    assert again["redemption"]["id"] == first["redemption"]["id"]
    assert again["redemption"]["voucherCode"] == first["redemption"]["voucherCode"]
    assert await points_of(buyer.participant_id) == (90, 0)
    conflict = await redeem(client, buyer, right_id, quantity=2, key=key)
    assert user_error_codes(conflict) == ["IDEMPOTENCY_CONFLICT"]
    assert await points_of(buyer.participant_id) == (90, 0)
    assert await stock_of(client, right_id, merchant) == 4


async def test_refusals_change_nothing(client):
    merchant = await approved_merchant(client)
    sold_out = await listed_right(client, merchant, stock=0)
    limited = await listed_right(client, merchant, pointsPrice="10", stock=10, perPersonLimit=1)
    elite = await listed_right(client, merchant, pointsPrice="10", stock=10, minCreditGrade="AAA")
    dear = await listed_right(client, merchant, pointsPrice="1000", stock=10)
    buyer = await resident(points=100)
    assert (await redeem(client, buyer, limited))["userErrors"] == []
    before = (await points_of(buyer.participant_id), await _redemptions(buyer.participant_id))

    cases = [
        (sold_out, 1, "OUT_OF_STOCK"),
        (limited, 1, "PER_PERSON_LIMIT"),
        (elite, 1, "NOT_ELIGIBLE"),
        (dear, 1, "INSUFFICIENT_POINTS"),
        (limited, 0, "INVALID_INPUT"),
    ]
    for right_id, quantity, code in cases:
        payload = await redeem(client, buyer, right_id, quantity=quantity)
        assert user_error_codes(payload) == [code], (right_id, code)
        assert payload["redemption"] is None
    assert (await points_of(buyer.participant_id), await _redemptions(buyer.participant_id)) == before
    assert await stock_of(client, limited, merchant) == 9
    assert await stock_of(client, dear, merchant) == 10
    other = await resident(points=100)
    over = await redeem(client, other, limited, quantity=2)
    assert user_error_codes(over) == ["PER_PERSON_LIMIT"]
    unknown = await redeem(client, other, "UmlnaHQ6OTk5OTk5OTk5")
    assert user_error_codes(unknown) == ["NOT_FOUND"]
    assert error_codes(await op(client, "RedeemRight", {"input": {
        "rightId": limited, "quantity": 1, "idempotencyKey": "k"}}, merchant.auth)) == ["FORBIDDEN"]
    assert (await verify()).ok


async def test_cancel_refunds_and_restores_stock_and_limit(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="50", stock=1, perPersonLimit=1)
    buyer = await resident(points=100)
    redemption = (await redeem(client, buyer, right_id))["redemption"]
    key = unique("k")
    payload = await cancel(client, buyer, redemption["id"], key=key)
    assert payload["userErrors"] == []
    assert payload["redemption"] == {"id": redemption["id"], "status": "CANCELLED"}
    assert payload["account"] == {"points": "100"}
    assert await points_of(merchant.participant_id) == (0, 0)
    assert await stock_of(client, right_id, merchant) == 1
    replay = await cancel(client, buyer, redemption["id"], key=key)
    assert replay["redemption"]["status"] == "CANCELLED" and replay["account"] == {"points": "100"}
    again = await cancel(client, buyer, redemption["id"])
    assert user_error_codes(again) == ["INVALID_STATE"]
    refunds = await Entry.filter(kind="REFUND", amount=50).count()
    assert refunds >= 1
    # the limit and the stock are back: the same person redeems again
    assert (await redeem(client, buyer, right_id))["userErrors"] == []
    stranger = await resident(points=10)
    assert user_error_codes(await cancel(client, stranger, redemption["id"])) == ["NOT_FOUND"]
    assert await points_of(buyer.participant_id) == (50, 0)


async def test_write_off_once_by_the_owning_merchant(client, monkeypatch):
    merchant = await approved_merchant(client)
    other = await approved_merchant(client)
    right_id = await listed_right(client, merchant, stock=5)
    buyer = await resident(points=500)
    redemption = (await redeem(client, buyer, right_id))["redemption"]
    code = redemption["voucherCode"]
    assert user_error_codes(await write_off(client, other, code)) == ["NOT_FOUND"]
    done = await write_off(client, merchant, code.lower().replace("-", ""))
    assert done["redemption"] == {"id": redemption["id"], "status": "USED"}
    assert user_error_codes(await write_off(client, merchant, code)) == ["INVALID_STATE"]
    assert user_error_codes(await cancel(client, buyer, redemption["id"])) == ["INVALID_STATE"]
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    assert user_error_codes(await write_off(client, merchant, typo)) == ["INVALID_INPUT"]
    assert error_codes(await op(client, "WriteOffVoucher", {"input": {"voucherCode": code}},
                                token())) == ["FORBIDDEN"]

    monkeypatch.setattr(redemption_service, "LOOKUPS_PER_MINUTE", 3)
    limited = await approved_merchant(client)
    answers = [user_error_codes(await write_off(client, limited, code)) for _ in range(4)]
    assert answers == [["NOT_FOUND"], ["NOT_FOUND"], ["NOT_FOUND"], ["RATE_LIMITED"]]


async def test_sold_out_refusals_never_reach_the_database(client):
    await hold_every_mark()
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=1)
    winner = await resident(points=100)
    key = unique("k")
    first = await redeem(client, winner, right_id, key=key)
    assert first["userErrors"] == []
    stranger = unique("res")
    payload = await redeem(client, type(winner)(stranger, token(stranger), 0), right_id)
    assert user_error_codes(payload) == ["OUT_OF_STOCK"]
    # the gate refused before anything else: the stranger was never even looked up
    assert await find_resident(stranger) is None
    # a retry of the winner's request replays past the sold-out gate
    assert (await redeem(client, winner, right_id, key=key))["redemption"]["id"] == first["redemption"]["id"]
    # a lost gate is rebuilt from the database
    pk = decode_id("Right", right_id)
    await get_store().delete(stock_gate.gate_key(pk))
    assert user_error_codes(await redeem(client, await resident(points=100), right_id)) == ["OUT_OF_STOCK"]
    assert await get_store().get(stock_gate.gate_key(pk)) == b"0"


async def test_asking_for_more_than_is_left_says_so_rather_than_sold_out(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="1", stock=3, perPersonLimit=5)
    buyer = await resident(points=100)
    for _ in range(2):  # refused by the database, or by the gate once its counter is up
        payload = await redeem(client, buyer, right_id, quantity=4)
        assert user_error_codes(payload) == ["OUT_OF_STOCK"]
        assert payload["userErrors"][0]["message"] in ("Only 3 left.", "Fewer than 4 left.")
    assert (await redeem(client, buyer, right_id, quantity=3))["userErrors"] == []


async def test_concurrent_buyers_never_exceed_stock(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=5)
    buyers = [await resident(points=100) for _ in range(20)]
    payloads = await asyncio.gather(*(redeem(client, b, right_id) for b in buyers))
    codes = sorted(outcome(p) for p in payloads)
    assert codes == ["OK"] * 5 + ["OUT_OF_STOCK"] * 15
    assert await stock_of(client, right_id, merchant) == 0
    assert await points_of(merchant.participant_id) == (50, 0)
    assert await Redemption.filter(right_id=decode_id("Right", right_id)).count() == 5
    assert (await verify()).ok


async def test_concurrent_requests_of_one_person_respect_limit_and_balance(client):
    merchant = await approved_merchant(client)
    limited = await listed_right(client, merchant, pointsPrice="1", stock=100, perPersonLimit=2)
    buyer = await resident(points=1000)
    payloads = await asyncio.gather(*(redeem(client, buyer, limited) for _ in range(10)))
    assert sorted(outcome(p) for p in payloads) == (
        ["OK"] * 2 + ["PER_PERSON_LIMIT"] * 8
    )
    dear = await listed_right(client, merchant, pointsPrice="300", stock=100, perPersonLimit=10)
    payloads = await asyncio.gather(*(redeem(client, buyer, dear) for _ in range(10)))
    assert sorted(outcome(p) for p in payloads) == (
        ["INSUFFICIENT_POINTS"] * 7 + ["OK"] * 3
    )
    assert await points_of(buyer.participant_id) == (98, 0)
    assert await _redemptions(buyer.participant_id) == 5
    assert (await verify()).ok


async def test_the_same_key_at_once_redeems_once(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="7", stock=50, perPersonLimit=50)
    buyer = await resident(points=1000)
    key = unique("k")
    payloads = await asyncio.gather(*(redeem(client, buyer, right_id, key=key) for _ in range(8)))
    ids = {p["redemption"]["id"] for p in payloads if p["redemption"]}
    assert len(ids) == 1
    assert all(p["userErrors"] == [] or user_error_codes(p) == ["IDEMPOTENCY_CONFLICT"] for p in payloads)
    assert await points_of(buyer.participant_id) == (993, 0)
    assert await stock_of(client, right_id, merchant) == 49


async def test_the_service_requires_the_resident_role(database):
    with pytest.raises(Forbidden):
        await redeeming.redeem(Principal("x", frozenset({"merchant"})), 1, 1, "k")


async def test_refunds_and_redemptions_of_one_person_at_once_never_deadlock(client):
    merchant = await approved_merchant(client)
    first = await listed_right(client, merchant, pointsPrice="10", stock=20, perPersonLimit=20)
    second = await listed_right(client, merchant, pointsPrice="10", stock=20, perPersonLimit=20)
    buyer = await resident(points=400)
    made = [(await redeem(client, buyer, first))["redemption"]["id"] for _ in range(8)]
    payloads = await asyncio.gather(
        *(cancel(client, buyer, redemption_id) for redemption_id in made),
        *(redeem(client, buyer, second) for _ in range(8)),
    )
    assert all(p["userErrors"] == [] for p in payloads), payloads
    assert await points_of(buyer.participant_id) == (320, 0)
    assert await points_of(merchant.participant_id) == (80, 0)
    assert await stock_of(client, first, merchant) == 20
    assert await stock_of(client, second, merchant) == 12
    assert (await verify()).ok


async def test_redemptions_committed_together_answer_each_as_alone(client, monkeypatch):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=50, perPersonLimit=1)
    rich = [await resident(points=100) for _ in range(6)]
    poor = [await resident(points=5) for _ in range(2)]
    repeat, limited = await resident(points=100), await resident(points=100)
    key = unique("k")
    first = await redeem(client, repeat, right_id, key=key)
    assert (await redeem(client, limited, right_id))["userErrors"] == []
    groups = count_groups(monkeypatch)
    payloads = await asyncio.gather(
        *(redeem(client, b, right_id) for b in rich + poor),
        redeem(client, repeat, right_id, key=key),
        redeem(client, limited, right_id),
    )
    assert max(groups) > 1  # the crowd was committed in groups
    assert [p["userErrors"] == [] for p in payloads[:6]] == [True] * 6
    assert [user_error_codes(p) for p in payloads[6:8]] == [["INSUFFICIENT_POINTS"]] * 2
    assert payloads[8]["redemption"]["id"] == first["redemption"]["id"]
    assert user_error_codes(payloads[9]) == ["PER_PERSON_LIMIT"]
    assert await stock_of(client, right_id, merchant) == 42
    assert await points_of(merchant.participant_id) == (80, 0)
    assert [await points_of(b.participant_id) for b in poor] == [(5, 0)] * 2
    assert await Redemption.filter(right_id=decode_id("Right", right_id)).count() == 8
    assert (await verify()).ok


async def test_shutdown_lets_redemptions_under_way_deliver(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=10)
    buyers = [await resident(points=100) for _ in range(6)]
    pending = [asyncio.ensure_future(redeem(client, b, right_id)) for b in buyers]
    for _ in range(5000):  # until the first redemptions are under way in their lane
        if redeeming._running:
            break
        await asyncio.sleep(0.001)
    assert redeeming._running
    await redeeming.finish_lanes()
    assert not redeeming._running and not redeeming._lanes
    assert [p["userErrors"] for p in await asyncio.gather(*pending)] == [[]] * 6
    assert await stock_of(client, right_id, merchant) == 4
