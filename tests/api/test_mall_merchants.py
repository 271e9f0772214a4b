"""Merchants: applying with a checked credit code, review, suspension, the merchant console."""

from __future__ import annotations

import logging

from app.audit import AuditEvent
from app.audit import record as audit_record
from app.auth import Principal
from graphql_schema.ids import decode_id
from mall.models import Merchant
from tests.helpers import credit_code, data, error_codes, gql, op, token, unique
from tests.mall_support import (
    CENTER,
    EXCHANGE,
    apply,
    approved_merchant,
    create_right,
    listed_right,
    listing,
    redeem,
    resident,
    review,
    write_off,
)

MY_CONTACT = "query { myMerchant { id name status contact pooledPoints pointsOnHold reductionGrams } }"
SUSPEND = """mutation($input: MerchantStatusInput!) {
  suspendMerchant(input: $input) { merchant { id status } userErrors { code field } } }"""
REINSTATE = """mutation($input: MerchantStatusInput!) {
  reinstateMerchant(input: $input) { merchant { id status } userErrors { code field } } }"""


async def test_apply_is_pending_and_contact_is_masked_and_never_logged(client, caplog):
    caplog.set_level(logging.INFO)  # the service's level; tortoise's DEBUG SQL log shows parameters
    code, auth, payload = await apply(client, contact="13912345678", name="绿色咖啡")
    assert payload["userErrors"] == []
    assert payload["merchant"]["status"] == "PENDING"
    assert payload["merchant"]["name"] == "绿色咖啡"
    mine = data(await gql(client, MY_CONTACT, auth=auth))["myMerchant"]
    assert mine["contact"] == "139****5678"
    assert mine["id"] == payload["merchant"]["id"]
    assert "13912345678" not in caplog.text


async def test_staff_reads_of_the_merchant_and_buyback_queues_are_audited(client):
    code, _, payload = await apply(client, contact="13912345678", name="审计咖啡")
    merchant_id = decode_id("Merchant", payload["merchant"]["id"])
    query = "query { merchants(status: PENDING, first: 100) { edges { node { id contact } } } }"
    for auth, role in ((CENTER, "center"), (EXCHANGE, "exchange")):
        edges = data(await gql(client, query, auth=auth))["merchants"]["edges"]
        assert {"id": payload["merchant"]["id"], "contact": "139****5678"} in [e["node"] for e in edges]
        event = await AuditEvent.filter(action="merchant.list", actor_roles=role).order_by("-id").first()
        assert event is not None and event.target_id == "PENDING"
        assert str(merchant_id) in event.detail.removeprefix("ids=").split(",")
    # A full page: every id shown is in the row, however long the list.
    for _ in range(3):
        await apply(client)
    full = "query { merchants(first: 100) { edges { node { id } } } }"
    shown = [decode_id("Merchant", e["node"]["id"])
             for e in data(await gql(client, full, auth=CENTER))["merchants"]["edges"]]
    event = await AuditEvent.filter(action="merchant.list").order_by("-id").first()
    assert event is not None and event.detail == "ids=" + ",".join(str(i) for i in shown)
    # A page of 100 ids of 19 digits (ids grow): the row holds every one of them.
    long_ids = "ids=" + ",".join(str(10**18 + i) for i in range(100))
    await audit_record(Principal("center-auditor", frozenset({"center"})), "merchant.list", "Merchant",
                       "any", long_ids)
    stored = await AuditEvent.filter(actor_subject="center-auditor").order_by("-id").first()
    assert stored is not None and stored.detail == long_ids
    data(await gql(client, "query { buybacks(first: 5) { edges { node { id } } } }", auth=CENTER))
    event = await AuditEvent.filter(action="buyback.list").order_by("-id").first()
    assert event is not None and (event.target_type, event.target_id) == ("Buyback", "any")


async def test_bad_or_foreign_credit_code_is_invalid_input_and_creates_nothing(client):
    code = credit_code()
    auth = token(unique("mer"), "merchant", org=code)
    wrong_check = code[:17] + ("0" if code[17] != "0" else "1")
    for bad in (wrong_check, "12345", credit_code()):
        body = await op(client, "ApplyMerchant", {"input": {
            "name": "x", "creditCode": bad, "contact": "13800138000"}}, auth)
        payload = data(body)["applyMerchant"]
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID_INPUT", "creditCode")]
        assert payload["merchant"] is None
    assert data(await op(client, "MyMerchant", {}, auth))["myMerchant"] is None
    body = await op(client, "ApplyMerchant", {"input": {
        "name": "x", "creditCode": code, "contact": "not a phone"}}, auth)
    assert [e["field"] for e in data(body)["applyMerchant"]["userErrors"]] == ["contact"]
    assert not await Merchant.filter(credit_code=code).exists()


async def test_one_application_per_code(client):
    code, auth, first = await apply(client)
    assert first["userErrors"] == []
    _, _, again = await apply(client, code=code)
    assert [e["code"] for e in again["userErrors"]] == ["DUPLICATE"]
    assert await Merchant.filter(credit_code=code).count() == 1


async def test_only_merchant_organisations_apply(client):
    body = await op(client, "ApplyMerchant", {"input": {
        "name": "x", "creditCode": credit_code(), "contact": "13800138000"}}, token())
    assert error_codes(body) == ["FORBIDDEN"]
    body = await op(client, "ApplyMerchant", {"input": {
        "name": "x", "creditCode": credit_code(), "contact": "13800138000"}})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_review_by_center_or_exchange_once(client):
    _, auth, payload = await apply(client)
    merchant_id = payload["merchant"]["id"]
    assert error_codes(await op(client, "ReviewMerchant", {"input": {
        "id": merchant_id, "approve": True}}, token())) == ["FORBIDDEN"]
    approved = await review(client, merchant_id, True, EXCHANGE, comment="资料齐全")
    assert approved["merchant"] == {"id": merchant_id, "status": "APPROVED"}
    again = await review(client, merchant_id, False)
    assert [e["code"] for e in again["userErrors"]] == ["INVALID_STATE"]
    assert data(await op(client, "MyMerchant", {}, auth))["myMerchant"]["status"] == "APPROVED"

    _, auth2, payload2 = await apply(client)
    rejected = await review(client, payload2["merchant"]["id"], False, CENTER, comment="no licence")
    assert rejected["merchant"]["status"] == "REJECTED"
    bad = await review(client, "not-an-id", True)
    assert [(e["code"], e["field"]) for e in bad["userErrors"]] == [("INVALID_INPUT", "id")]


async def test_only_approved_merchants_list_rights(client):
    _, auth, payload = await apply(client)
    from tests.mall_support import MerchantOrg

    pending = MerchantOrg("", auth, 0, payload["merchant"]["id"])
    refused = await create_right(client, pending)
    assert [e["code"] for e in refused["userErrors"]] == ["INVALID_STATE"]
    unknown = MerchantOrg("", token(unique("m"), "merchant", org=credit_code()), 0, "")
    refused = await create_right(client, unknown)
    assert [e["code"] for e in refused["userErrors"]] == ["NOT_FOUND"]


async def test_my_merchant_shows_pool_and_rights(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="40", stock=3)
    buyer = await resident(points=100)
    assert (await redeem(client, buyer, right_id))["userErrors"] == []
    mine = data(await op(client, "MyMerchant", {}, merchant.auth))["myMerchant"]
    assert mine["status"] == "APPROVED" and mine["pooledPoints"] == "40" and mine["reductionGrams"] == "0"
    [node] = [e["node"] for e in mine["rights"]["edges"]]
    assert (node["id"], node["stockRemaining"]) == (right_id, 2)
    body = await gql(client, "query { myMerchant { redemptions(first: 5) { edges { node { "
                             "status quantity pointsSpent voucherCode right { id } } } } } }",
                     auth=merchant.auth)
    [edge] = data(body)["myMerchant"]["redemptions"]["edges"]
    assert edge["node"] == {"status": "ISSUED", "quantity": 1, "pointsSpent": "40", "voucherCode": None,
                            "right": {"id": right_id}}
    assert error_codes(await op(client, "MyMerchant", {}, token())) == ["FORBIDDEN"]


async def test_suspension_takes_rights_out_but_vouchers_stay_valid(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, stock=5)
    buyer = await resident(points=500)
    voucher = (await redeem(client, buyer, right_id))["redemption"]["voucherCode"]
    assert right_id in [e["node"]["id"] for e in (await listing(client, buyer.auth))["edges"]]

    body = await gql(client, SUSPEND, {"input": {"id": merchant.merchant_id, "reason": "complaints"}}, CENTER)
    assert data(body)["suspendMerchant"]["merchant"]["status"] == "SUSPENDED"
    assert right_id not in [e["node"]["id"] for e in (await listing(client, buyer.auth))["edges"]]
    refused = await redeem(client, buyer, right_id)
    assert [e["code"] for e in refused["userErrors"]] == ["INVALID_STATE"]
    assert (await write_off(client, merchant, voucher))["redemption"]["status"] == "USED"
    again = await gql(client, SUSPEND, {"input": {"id": merchant.merchant_id}}, CENTER)
    assert [e["code"] for e in data(again)["suspendMerchant"]["userErrors"]] == ["INVALID_STATE"]

    body = await gql(client, REINSTATE, {"input": {"id": merchant.merchant_id}}, EXCHANGE)
    assert data(body)["reinstateMerchant"]["merchant"]["status"] == "APPROVED"
    assert right_id in [e["node"]["id"] for e in (await listing(client, buyer.auth))["edges"]]
    assert error_codes(await gql(client, SUSPEND, {"input": {"id": merchant.merchant_id}},
                                 merchant.auth)) == ["FORBIDDEN"]
