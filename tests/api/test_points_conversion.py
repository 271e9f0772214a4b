"""Conversion through the contract: ConversionRule, SetConversionRule, ConvertReductions."""

from __future__ import annotations

import asyncio

from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import Asset, LotHolding, Transfer, TransferLot
from app.ledger.verify import verify
from points.conversion import rule_in_force
from points.models import Conversion, ConversionRule
from tests.helpers import data, error_codes, gql, op, token, unique
from tests.ledger_support import issue_grams
from tests.points_support import CENTER, convert, my_account, resident, set_rate


async def test_anyone_signed_in_reads_the_rule_and_center_versions_it(client):
    await set_rate(client, 10)
    rule = data(await op(client, "ConversionRule", {}, token()))["conversionRule"]
    assert rule["gramsPerPoint"] == "10"
    assert error_codes(await op(client, "ConversionRule", {})) == ["UNAUTHENTICATED"]

    versions = await ConversionRule.all().count()
    new = await set_rate(client, 25)
    assert new["gramsPerPoint"] == "25" and new["effectiveFrom"] > rule["effectiveFrom"]
    assert (await rule_in_force())[1] == 25
    assert await ConversionRule.all().count() == versions + 1
    seen = data(await op(client, "ConversionRule", {}, token("m", "merchant", org="X")))
    assert seen["conversionRule"] == new
    await set_rate(client, 10)


async def test_bad_rates_and_other_roles_are_refused_and_change_nothing(client):
    await set_rate(client, 10)
    versions = await ConversionRule.all().count()
    for bad in ("0", "-5"):
        body = await op(client, "SetConversionRule", {"input": {"gramsPerPoint": bad}}, CENTER)
        payload = data(body)["setConversionRule"]
        assert payload["rule"] is None
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
            ("INVALID_INPUT", "gramsPerPoint")]
    body = await op(client, "SetConversionRule", {"input": {"gramsPerPoint": "3"}}, token())
    assert error_codes(body) == ["FORBIDDEN"]
    assert await ConversionRule.all().count() == versions
    assert (await rule_in_force())[1] == 10


async def test_conversion_takes_whole_points_and_leaves_the_remainder(client):
    await set_rate(client, 10)
    _, auth, pid = await resident(2_000)
    payload = await convert(client, auth, 1_234)
    assert payload["userErrors"] == []
    assert payload["conversion"]["grams"] == "1230"
    assert payload["conversion"]["points"] == "123"
    assert payload["account"] == {"reductionGrams": "770", "points": "123"}
    ledger = data(await op(client, "MyLedger", {"first": 10}, auth))["me"]["account"]["entries"]
    kinds = [(e["node"]["kind"], e["node"]["asset"], e["node"]["amount"], e["node"]["balanceAfter"])
             for e in ledger["edges"][:2]]
    assert sorted(kinds) == [("CONVERSION", "POINTS", "123", "123"),
                             ("CONVERSION", "REDUCTION_GRAMS", "-1230", "770")]
    row = await Conversion.get(participant_id=pid)
    assert (row.asked_grams, row.grams, row.points, row.grams_per_point) == (1234, 1230, 123, 10)


async def test_grams_and_points_past_32_bits_convert(client):
    await set_rate(client, 1)
    _, auth, _ = await resident(3 * 2**31)
    payload = await convert(client, auth, 2**31 + 5)
    assert payload["userErrors"] == []
    assert payload["account"] == {"reductionGrams": str(3 * 2**31 - 2**31 - 5),
                                  "points": str(2**31 + 5)}
    _, poor, _ = await resident(10)
    assert [e["code"] for e in (await convert(client, poor, 2**31 + 5))["userErrors"]] == [
        "INSUFFICIENT_REDUCTIONS"]
    assert (await verify()).ok


async def test_grams_leave_oldest_lots_first_and_keep_them_in_the_reserve(client):
    await set_rate(client, 10)
    _, auth, pid = await resident()
    old = await issue_grams(pid, 300)
    new = await issue_grams(pid, 500)
    reserve = await system_account_id(SystemAccount.CONVERSION_RESERVE)
    before = {h.lot_id: h.balance for h in await LotHolding.filter(account_id=reserve,
                                                                   lot_id__in=[old, new])}
    payload = await convert(client, auth, 400)
    assert payload["conversion"]["grams"] == "400"
    mine = await holder_account_id(pid, Asset.REDUCTION_GRAMS)
    held = {h.lot_id: h.balance for h in await LotHolding.filter(account_id=mine)}
    assert held == {old: 0, new: 400}
    after = {h.lot_id: h.balance for h in await LotHolding.filter(account_id=reserve,
                                                                  lot_id__in=[old, new])}
    assert after.get(old, 0) - before.get(old, 0) == 300
    assert after.get(new, 0) - before.get(new, 0) == 100
    conv = await Conversion.get(participant_id=pid)
    transfer = await Transfer.get(reference=f"conversion:{conv.id}", asset="REDUCTION_GRAMS")
    drawn = {t.lot_id: t.amount for t in await TransferLot.filter(transfer_id=transfer.id)}
    assert drawn == {old: 300, new: 100}


async def test_refusals_are_user_errors_and_move_nothing(client):
    await set_rate(client, 10)
    _, auth, pid = await resident(100)
    for grams, code in (("9", "INVALID_INPUT"), ("0", "INVALID_INPUT"), ("-20", "INVALID_INPUT"),
                        ("110", "INSUFFICIENT_REDUCTIONS")):
        payload = await convert(client, auth, grams)
        assert payload["conversion"] is None and payload["account"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code], grams
        assert payload["userErrors"][0]["field"] in ("grams", None)
    bad_key = data(await op(client, "ConvertReductions",
                            {"input": {"grams": "50", "idempotencyKey": " "}}, auth))
    assert [(e["code"], e["field"]) for e in bad_key["convertReductions"]["userErrors"]] == [
        ("INVALID_INPUT", "idempotencyKey")]
    account = await my_account(client, auth)
    assert (account["reductionGrams"], account["points"]) == ("100", "0")
    assert not await Conversion.filter(participant_id=pid).exists()


async def test_only_residents_convert(client):
    body = await op(client, "ConvertReductions",
                    {"input": {"grams": "100", "idempotencyKey": "k"}},
                    token("m1", "merchant", org="91310000MA1FL0000X"))
    assert error_codes(body) == ["FORBIDDEN"]
    body = await op(client, "ConvertReductions", {"input": {"grams": "100", "idempotencyKey": "k"}})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_same_key_replays_and_other_input_conflicts(client):
    await set_rate(client, 10)
    _, auth, pid = await resident(1_000)
    key = unique("key")
    first = await convert(client, auth, 500, key)
    again = await convert(client, auth, 500, key)
    assert again["conversion"] == first["conversion"]
    assert again["account"] == {"reductionGrams": "500", "points": "50"}
    other = await convert(client, auth, 300, key)
    assert [e["code"] for e in other["userErrors"]] == ["IDEMPOTENCY_CONFLICT"]
    assert await Conversion.filter(participant_id=pid).count() == 1
    account = await my_account(client, auth)
    assert (account["reductionGrams"], account["points"]) == ("500", "50")


async def test_a_retry_replays_the_first_conversion_after_the_rate_changes(client):
    """A retry is answered from the key, not judged again at a rate published since."""
    await set_rate(client, 1_000)
    try:
        _, auth, pid = await resident(5_000)
        key = unique("key")
        first = await convert(client, auth, 1_500, key)
        assert first["userErrors"] == [] and first["conversion"]["points"] == "1"
        await set_rate(client, 2_000)
        again = await convert(client, auth, 1_500, key)
        assert again["userErrors"] == []
        assert again["conversion"] == first["conversion"]
        assert again["account"] == {"reductionGrams": "4000", "points": "1"}
        fresh = await convert(client, auth, 1_500)
        assert [e["code"] for e in fresh["userErrors"]] == ["INVALID_INPUT"]
        assert await Conversion.filter(participant_id=pid).count() == 1
    finally:
        await set_rate(client, 10)


async def test_a_conversion_uses_the_rule_in_force(client):
    _, auth, _ = await resident(1_000)
    await set_rate(client, 40)
    try:
        payload = await convert(client, auth, 100)
        assert (payload["conversion"]["grams"], payload["conversion"]["points"]) == ("80", "2")
    finally:
        await set_rate(client, 10)


async def test_fifty_concurrent_conversions_never_overdraw_or_lose_a_gram(client):
    await set_rate(client, 10)
    _, auth, pid = await resident(1_000)
    reserve_before = (await verify()).totals.reserve_grams
    results = await asyncio.gather(*(convert(client, auth, 30) for _ in range(50)))
    done = [r for r in results if not r["userErrors"]]
    refused = [r["userErrors"][0]["code"] for r in results if r["userErrors"]]
    assert len(done) == 33
    assert refused == ["INSUFFICIENT_REDUCTIONS"] * 17
    account = await my_account(client, auth)
    assert (account["reductionGrams"], account["points"]) == ("10", "99")
    assert await Conversion.filter(participant_id=pid).count() == 33
    report = await verify()
    assert report.ok, report.problems
    assert report.totals.reserve_grams - reserve_before == 990


async def test_account_query_shows_balances_after_conversion(client):
    await set_rate(client, 10)
    _, auth, _ = await resident(55)
    await convert(client, auth, 55)
    body = await gql(client, "{ me { account { reductionGrams points } } }", auth=auth)
    assert data(body)["me"]["account"] == {"reductionGrams": "5", "points": "5"}
