"""Buy-back: pooled points held at once, settled into reductions from the reserve, or released."""

from __future__ import annotations

from app.ledger.accounts import SystemAccount, holder_account_id
from app.ledger.models import Asset, Entry, Transfer, TransferLot
from app.ledger.verify import verify
from graphql_schema.ids import decode_id
from points.conversion import rule_in_force
from tests.helpers import data, error_codes, gql, op, token, unique, user_error_codes
from tests.ledger_support import issue_grams, issue_points
from tests.mall_support import (
    CENTER,
    approved_merchant,
    grams_of,
    listed_right,
    points_of,
    redeem,
    resident,
    system_balance,
    write_off,
)
from tests.points_support import set_rate


async def request(client, merchant, points: int, key: str | None = None) -> dict:
    body = await op(client, "RequestBuyback", {"input": {
        "points": str(points), "idempotencyKey": key or unique("k")}}, merchant.auth)
    return data(body)["requestBuyback"]


async def settle(client, buyback_id: str, approve: bool, auth: str = CENTER) -> dict:
    body = await op(client, "SettleBuyback", {"input": {"id": buyback_id, "approve": approve}}, auth)
    return data(body)["settleBuyback"]


async def fund_reserve(client, grams: int) -> None:
    """Put `grams` in the conversion reserve the way it really fills: a resident converts."""
    who = await resident()
    await issue_grams(who.participant_id, grams)
    body = await op(client, "ConvertReductions", {"input": {
        "grams": str(grams), "idempotencyKey": unique("k")}}, who.auth)
    assert data(body)["convertReductions"]["userErrors"] == []


async def pooled_merchant(client, points: int):
    """A merchant whose pool holds `points` from a redemption already written off."""
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice=str(points), stock=1)
    buyer = await resident(points=points)
    voucher = (await redeem(client, buyer, right_id))["redemption"]["voucherCode"]
    assert (await write_off(client, merchant, voucher))["userErrors"] == []
    return merchant


async def test_request_holds_points_and_approval_moves_grams_from_the_reserve(client):
    _, gpp = await rule_in_force()
    merchant = await pooled_merchant(client, 100)
    await fund_reserve(client, 100 * gpp)
    reserve_before = await system_balance(SystemAccount.CONVERSION_RESERVE)
    burned_before = await system_balance(SystemAccount.POINTS_BOUGHT_BACK)

    payload = await request(client, merchant, 60)
    assert payload["userErrors"] == []
    buyback = payload["buyback"]
    assert buyback["status"] == "PENDING" and buyback["points"] == "60" and buyback["grams"] == str(60 * gpp)
    assert await points_of(merchant.participant_id) == (100, 60)
    mine = data(await gql(client, "query { myMerchant { pooledPoints pointsOnHold reductionGrams } }",
                          auth=merchant.auth))["myMerchant"]
    assert mine == {"pooledPoints": "40", "pointsOnHold": "60", "reductionGrams": "0"}
    assert user_error_codes(await request(client, merchant, 41)) == ["INSUFFICIENT_POINTS"]

    settled = await settle(client, buyback["id"], True)
    assert settled["userErrors"] == []
    assert settled["buyback"]["status"] == "SETTLED"
    assert await points_of(merchant.participant_id) == (40, 0)
    assert await grams_of(merchant.participant_id) == 60 * gpp
    assert await system_balance(SystemAccount.CONVERSION_RESERVE) == reserve_before - 60 * gpp
    assert await system_balance(SystemAccount.POINTS_BOUGHT_BACK) == burned_before + 60
    transfers = await Transfer.filter(reference=f"buyback:{decode_id('Buyback', buyback['id'])}")
    assert sorted((t.asset, t.kind, t.amount) for t in transfers) == [
        ("POINTS", "BUYBACK", 60), ("REDUCTION_GRAMS", "BUYBACK", 60 * gpp),
    ]
    grams_transfer = next(t for t in transfers if t.asset == "REDUCTION_GRAMS")
    drawn = await TransferLot.filter(transfer_id=grams_transfer.id).values_list("amount", flat=True)
    assert sum(drawn) == 60 * gpp
    grams_account = await holder_account_id(merchant.participant_id, Asset.REDUCTION_GRAMS)
    assert await Entry.filter(account_id=grams_account, kind="BUYBACK").count() == 1
    # A retry of the approval (its answer lost) answers the settled buy-back and moves nothing;
    # rejecting it now is a wrong transition.
    again = await settle(client, buyback["id"], True)
    assert again["userErrors"] == [] and again["buyback"] == settled["buyback"]
    assert user_error_codes(await settle(client, buyback["id"], False)) == ["INVALID_STATE"]
    assert await points_of(merchant.participant_id) == (40, 0)
    assert await grams_of(merchant.participant_id) == 60 * gpp
    assert await Entry.filter(account_id=grams_account, kind="BUYBACK").count() == 1

    totals = data(await op(client, "SystemTotals", {}, CENTER))["systemTotals"]
    assert int(totals["issuedGrams"]) == sum(
        int(totals[k]) for k in ("heldGrams", "reserveGrams", "retiredGrams")
    )
    assert int(totals["pointsIssued"]) == sum(
        int(totals[k]) for k in ("pointsHeld", "pointsPooled", "pointsBoughtBack")
    )
    assert int(totals["pointsBoughtBack"]) >= 60 and int(totals["pointsPooled"]) >= 40
    assert (await verify()).ok

    retired = data(await op(client, "RetireReductions", {"input": {
        "grams": str(60 * gpp), "channel": "OPERATIONS_NEUTRALITY", "beneficiary": "门店运营",
        "idempotencyKey": unique("k")}}, merchant.auth))["retireReductions"]
    assert retired["userErrors"] == []
    assert await grams_of(merchant.participant_id) == 0


async def test_points_backing_unused_vouchers_cannot_be_bought_back(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="50", stock=3)
    buyer = await resident(points=50)
    assert (await redeem(client, buyer, right_id))["userErrors"] == []
    assert user_error_codes(await request(client, merchant, 50)) == ["INSUFFICIENT_POINTS"]
    assert await points_of(merchant.participant_id) == (50, 0)


async def test_reject_releases_the_hold(client):
    merchant = await pooled_merchant(client, 30)
    buyback = (await request(client, merchant, 30))["buyback"]
    assert await points_of(merchant.participant_id) == (30, 30)
    rejected = await settle(client, buyback["id"], False)
    assert rejected["buyback"]["status"] == "REJECTED"
    assert await points_of(merchant.participant_id) == (30, 0)
    assert user_error_codes(await settle(client, buyback["id"], True)) == ["INVALID_STATE"]
    again = await settle(client, buyback["id"], False)
    assert again["userErrors"] == [] and again["buyback"]["status"] == "REJECTED"
    assert await points_of(merchant.participant_id) == (30, 0)


async def test_never_more_grams_than_the_reserve_holds(client):
    _, gpp = await rule_in_force()
    merchant = await approved_merchant(client)
    reserve = await system_balance(SystemAccount.CONVERSION_RESERVE)
    points = reserve // gpp + 1
    await issue_points(merchant.participant_id, points)
    buyback = (await request(client, merchant, points))["buyback"]
    burned = await system_balance(SystemAccount.POINTS_BOUGHT_BACK)
    refused = await settle(client, buyback["id"], True)
    assert user_error_codes(refused) == ["INVALID_STATE"]
    assert await system_balance(SystemAccount.CONVERSION_RESERVE) == reserve
    assert await system_balance(SystemAccount.POINTS_BOUGHT_BACK) == burned
    assert await points_of(merchant.participant_id) == (points, points)
    assert await grams_of(merchant.participant_id) == 0
    assert (await settle(client, buyback["id"], False))["buyback"]["status"] == "REJECTED"


async def test_a_retry_replays_the_first_request_after_the_rate_changes(client):
    """A retry is answered from the key, not judged again at a rate published since (here one
    at which the same points would come to more grams than a request may hold)."""
    await set_rate(client, 10)
    merchant = await approved_merchant(client)
    await issue_points(merchant.participant_id, 10_000_000)
    key = unique("k")
    first = await request(client, merchant, 10_000_000, key)
    assert first["userErrors"] == []
    await set_rate(client, 10**12)
    try:
        again = await request(client, merchant, 10_000_000, key)
        assert again["userErrors"] == []
        assert again["buyback"]["id"] == first["buyback"]["id"]
        assert user_error_codes(await request(client, merchant, 10_000_000)) == ["INVALID_INPUT"]
    finally:
        await set_rate(client, 10)
    assert await points_of(merchant.participant_id) == (10_000_000, 10_000_000)


async def test_request_is_idempotent_and_checked(client):
    merchant = await pooled_merchant(client, 20)
    key = unique("k")
    first = await request(client, merchant, 10, key)
    again = await request(client, merchant, 10, key)
    assert again["buyback"]["id"] == first["buyback"]["id"]
    assert await points_of(merchant.participant_id) == (20, 10)
    assert user_error_codes(await request(client, merchant, 5, key)) == ["IDEMPOTENCY_CONFLICT"]
    assert user_error_codes(await request(client, merchant, 0)) == ["INVALID_INPUT"]
    assert error_codes(await op(client, "RequestBuyback", {"input": {
        "points": "1", "idempotencyKey": "k"}}, token())) == ["FORBIDDEN"]
    assert error_codes(await op(client, "SettleBuyback", {"input": {
        "id": first["buyback"]["id"], "approve": True}}, merchant.auth)) == ["FORBIDDEN"]
    assert user_error_codes(await settle(client, "QnV5YmFjazo5OTk5OTk5", True)) == ["NOT_FOUND"]
    query = "query { buybacks(status: PENDING, first: 100) { edges { node { id } } } }"
    queue = data(await gql(client, query, auth=CENTER))["buybacks"]["edges"]
    assert first["buyback"]["id"] in [e["node"]["id"] for e in queue]
