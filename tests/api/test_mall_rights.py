"""Rights and the mall listing: validation, update, restock, pause, cache kept correct, paging."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from graphql_schema.ids import decode_id
from mall.models import Right
from mall.rules import STOCK_LIMIT
from tests.helpers import data, error_codes, gql, op, token, unique, user_error_codes
from tests.mall_support import (
    approved_merchant,
    create_right,
    iso,
    listed_right,
    listing,
    redeem,
    resident,
    stock_of,
)

UPDATE = """mutation($input: UpdateRightInput!) { updateRight(input: $input) {
  right { id pointsPrice validFrom validUntil } userErrors { code field } } }"""
RESTOCK = """mutation($input: RestockRightInput!) { restockRight(input: $input) {
  right { id stockRemaining } userErrors { code field } } }"""
PAUSE = """mutation($input: RightInput!) { pauseRight(input: $input) {
  right { id paused } userErrors { code field } } }"""
RESUME = """mutation($input: RightInput!) { resumeRight(input: $input) {
  right { id paused } userErrors { code field } } }"""


def _pk(global_id: str) -> int:
    return decode_id("Right", global_id)


def _nodes(connection: dict) -> dict[str, dict]:
    return {e["node"]["id"]: e["node"] for e in connection["edges"]}


async def test_created_right_is_listed_with_its_merchant(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    payload = await create_right(
        client, merchant, title="地铁咖啡", category=category, pointsPrice="250", stock=7,
        perPersonLimit=2, validUntil=iso(timedelta(days=30)),
    )
    assert payload["userErrors"] == []
    right = payload["right"]
    assert right["title"] == "地铁咖啡" and right["pointsPrice"] == "250" and right["stockRemaining"] == 7
    viewer = token()
    [node] = (await listing(client, viewer, category=category))["edges"]
    listed = node["node"]
    assert listed["id"] == right["id"]
    assert (listed["perPersonLimit"], listed["stockRemaining"], listed["category"]) == (2, 7, category)
    assert listed["merchant"]["id"] == merchant.merchant_id
    assert listed["description"] == "A cup of coffee" and listed["validUntil"] is not None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": " "}, "title"),
        ({"pointsPrice": "0"}, "pointsPrice"),
        ({"pointsPrice": "-3"}, "pointsPrice"),
        ({"stock": -1}, "stock"),
        ({"perPersonLimit": 0}, "perPersonLimit"),
        ({"category": ""}, "category"),
        ({"validFrom": iso(timedelta(days=3)), "validUntil": iso(timedelta(days=2))}, "validUntil"),
        ({"validUntil": iso(timedelta(days=-1))}, "validUntil"),
        ({"minCreditGrade": "ZZ"}, "minCreditGrade"),
        ({"validFrom": "0001-01-01T00:00:00+14:00"}, "validFrom"),
        ({"validUntil": "9999-12-31T23:59:59-14:00"}, "validUntil"),
    ],
)
async def test_invalid_terms_name_the_field_and_create_nothing(client, fields, field):
    merchant = await approved_merchant(client)
    payload = await create_right(client, merchant, **fields)
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID_INPUT", field)]
    assert payload["right"] is None
    mine = data(await op(client, "MyMerchant", {}, merchant.auth))["myMerchant"]
    assert mine["rights"]["edges"] == []


async def test_a_right_valid_until_the_last_instant_a_date_time_holds_is_listed(client):
    merchant = await approved_merchant(client)
    payload = await create_right(client, merchant, validUntil="9999-12-31T23:59:59Z")
    assert payload["userErrors"] == [] and payload["right"]["id"]


async def test_listing_needs_a_token_and_checks_first(client):
    body = await op(client, "MallRights", {"first": 5})
    assert error_codes(body) == ["UNAUTHENTICATED"]
    body = await op(client, "MallRights", {"first": 0}, token())
    assert error_codes(body) == ["INVALID_INPUT"]
    body = await op(client, "MallRights", {"first": 5, "after": "garbage!"}, token())
    assert error_codes(body) == ["INVALID_INPUT"]


async def test_update_price_and_validity_shows_at_once(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    right_id = await listed_right(client, merchant, category=category, pointsPrice="100")
    viewer = token()
    assert _nodes(await listing(client, viewer, category=category))[right_id]["pointsPrice"] == "100"
    until = iso(timedelta(days=10))
    body = await gql(client, UPDATE, {"input": {"id": right_id, "pointsPrice": "80", "validUntil": until}},
                     merchant.auth)
    assert data(body)["updateRight"]["userErrors"] == []
    listed = _nodes(await listing(client, viewer, category=category))[right_id]
    assert listed["pointsPrice"] == "80" and listed["validUntil"] is not None
    bad = await gql(client, UPDATE, {"input": {"id": right_id, "pointsPrice": "0"}}, merchant.auth)
    assert [e["field"] for e in data(bad)["updateRight"]["userErrors"]] == ["pointsPrice"]
    bad = await gql(client, UPDATE, {"input": {"id": right_id, "validUntil": iso(timedelta(days=-1))}},
                    merchant.auth)
    assert [e["field"] for e in data(bad)["updateRight"]["userErrors"]] == ["validUntil"]
    assert (await Right.get(id=_pk(right_id))).points_price == 80

    other = await approved_merchant(client)
    foreign = await gql(client, UPDATE, {"input": {"id": right_id, "pointsPrice": "1"}}, other.auth)
    assert user_error_codes(data(foreign)["updateRight"]) == ["NOT_FOUND"]


async def test_a_future_right_appears_when_its_window_opens(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    right_id = await listed_right(client, merchant, category=category,
                                  validFrom=iso(timedelta(seconds=1.5)))
    viewer = token()
    assert right_id not in _nodes(await listing(client, viewer, category=category))
    buyer = await resident(points=500)
    refused = await redeem(client, buyer, right_id)
    assert user_error_codes(refused) == ["INVALID_STATE"]
    await asyncio.sleep(2)
    assert right_id in _nodes(await listing(client, viewer, category=category))


async def test_a_page_no_longer_has_a_next_once_the_right_after_it_expires(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    await listed_right(client, merchant, category=category, validUntil=iso(timedelta(seconds=1.5)))
    newest = await listed_right(client, merchant, category=category)
    viewer = token()
    page = await listing(client, viewer, first=1, category=category)
    assert list(_nodes(page)) == [newest] and page["pageInfo"]["hasNextPage"] is True
    await asyncio.sleep(2)
    page = await listing(client, viewer, first=1, category=category)
    assert list(_nodes(page)) == [newest] and page["pageInfo"]["hasNextPage"] is False


async def test_restock_and_sold_out_shown_at_zero(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    right_id = await listed_right(client, merchant, category=category, stock=1)
    viewer = token()
    buyer = await resident(points=500)
    assert (await redeem(client, buyer, right_id))["userErrors"] == []
    assert _nodes(await listing(client, viewer, category=category))[right_id]["stockRemaining"] == 0
    late = await resident(points=500)
    refused = await redeem(client, late, right_id)
    assert user_error_codes(refused) == ["OUT_OF_STOCK"]

    body = await gql(client, RESTOCK, {"input": {"id": right_id, "quantity": 3}}, merchant.auth)
    assert data(body)["restockRight"]["right"]["stockRemaining"] == 3
    assert _nodes(await listing(client, viewer, category=category))[right_id]["stockRemaining"] == 3
    assert (await redeem(client, late, right_id))["userErrors"] == []
    assert await stock_of(client, right_id, merchant) == 2
    bad = await gql(client, RESTOCK, {"input": {"id": right_id, "quantity": 0}}, merchant.auth)
    assert [e["field"] for e in data(bad)["restockRight"]["userErrors"]] == ["quantity"]


async def test_restocks_stop_at_what_the_stock_columns_hold(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, stock=0)
    await Right.filter(id=decode_id("Right", right_id)).update(stock_total=STOCK_LIMIT - 5)

    async def restock(quantity: int) -> dict:
        body = await gql(client, RESTOCK, {"input": {"id": right_id, "quantity": quantity}}, merchant.auth)
        return data(body)["restockRight"]

    over = await restock(6)
    assert [(e["code"], e["field"]) for e in over["userErrors"]] == [("INVALID_INPUT", "quantity")]
    assert await stock_of(client, right_id, merchant) == 0
    assert (await restock(5))["right"]["stockRemaining"] == 5
    assert [e["code"] for e in (await restock(1))["userErrors"]] == ["INVALID_INPUT"]
    assert await stock_of(client, right_id, merchant) == 5


async def test_pause_and_resume(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    right_id = await listed_right(client, merchant, category=category)
    viewer = token()
    body = await gql(client, PAUSE, {"input": {"id": right_id}}, merchant.auth)
    assert data(body)["pauseRight"]["right"]["paused"] is True
    assert right_id not in _nodes(await listing(client, viewer, category=category))
    buyer = await resident(points=500)
    assert user_error_codes(await redeem(client, buyer, right_id)) == ["INVALID_STATE"]
    again = await gql(client, PAUSE, {"input": {"id": right_id}}, merchant.auth)
    assert user_error_codes(data(again)["pauseRight"]) == ["INVALID_STATE"]
    other = await approved_merchant(client)
    foreign = await gql(client, RESUME, {"input": {"id": right_id}}, other.auth)
    assert user_error_codes(data(foreign)["resumeRight"]) == ["NOT_FOUND"]
    body = await gql(client, RESUME, {"input": {"id": right_id}}, merchant.auth)
    assert data(body)["resumeRight"]["right"]["paused"] is False
    assert right_id in _nodes(await listing(client, viewer, category=category))
    assert (await redeem(client, buyer, right_id))["userErrors"] == []


async def test_paging_with_cursors_newest_first(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    made = [await listed_right(client, merchant, category=category) for _ in range(5)]
    viewer = token()
    seen: list[str] = []
    after = None
    while True:
        page = await listing(client, viewer, first=2, after=after, category=category)
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == list(reversed(made))
    everything = await listing(client, viewer, first=100)
    assert set(made) <= set(_nodes(everything))


async def test_the_listing_is_served_from_the_cache_between_changes(client):
    merchant = await approved_merchant(client)
    category = unique("cat")
    right_id = await listed_right(client, merchant, category=category, title="before")
    viewer = token()
    assert _nodes(await listing(client, viewer, category=category))[right_id]["title"] == "before"
    # A change that bypasses the services is not seen until the page expires: the page is cached.
    await Right.filter(id=_pk(right_id)).update(title="changed behind the cache")
    assert _nodes(await listing(client, viewer, category=category))[right_id]["title"] == "before"
    # A change through the services invalidates it at once.
    await gql(client, UPDATE, {"input": {"id": right_id, "pointsPrice": "90"}}, merchant.auth)
    listed = _nodes(await listing(client, viewer, category=category))[right_id]
    assert (listed["title"], listed["pointsPrice"]) == ("changed behind the cache", "90")
