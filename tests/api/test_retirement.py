"""Retirement through Art. 17 channels: certificates, lots drawn, class I for ETS, public lookup."""

from __future__ import annotations

from app.auth import Principal
from app.ledger.accounts import SystemAccount
from app.ledger.verify import verify
from app.participants import organisation_id, resident_id
from registry import retirement as retirement_service
from registry.models import Retirement
from tests.helpers import credit_code, data, error_codes, gql, op, token, unique
from tests.ledger_support import issue_grams
from tests.mall_support import grams_of, system_balance

LOOKUP = """query($number: String!) { retirementCertificate(number: $number) {
  certificateNumber grams channel holderName beneficiary reference createdAt
  lots { serialPrefix methodologyClass vintage grams } } }"""
WITH_LOTS = """mutation($input: RetireReductionsInput!) { retireReductions(input: $input) {
  retirement { id grams channel beneficiary reference certificateNumber createdAt
               lots { serialPrefix methodologyClass grams } }
  userErrors { code message field } } }"""


def _codes(payload: dict) -> list[str]:
    return [e["code"] for e in payload["userErrors"]]


async def _resident(grams: int = 0, klass: str = "II") -> tuple[str, int]:
    subject = unique("res")
    participant_id = await resident_id(Principal(subject, frozenset({"resident"}), name="张三丰"))
    if grams:
        await issue_grams(participant_id, grams, klass)
    return token(subject, name="张三丰"), participant_id


async def retire(client, auth: str, grams: int, channel: str, key: str | None = None, **extra) -> dict:
    body = await gql(client, WITH_LOTS, {"input": {
        "grams": str(grams), "channel": channel, "idempotencyKey": key or unique("k"), **extra}}, auth)
    return data(body)["retireReductions"]


async def test_resident_retires_and_anyone_finds_the_certificate_masked(client):
    auth, participant_id = await _resident(1000)
    retired_before = await system_balance(SystemAccount.GRAMS_RETIRED)
    body = await op(client, "RetireReductions", {"input": {
        "grams": "400", "channel": "PUBLIC_DONATION", "beneficiary": "张三丰",
        "idempotencyKey": unique("k")}}, auth)
    payload = data(body)["retireReductions"]
    assert payload["userErrors"] == []
    retirement = payload["retirement"]
    assert (retirement["grams"], retirement["channel"], retirement["beneficiary"]) == (
        "400", "PUBLIC_DONATION", "张三丰")
    number = retirement["certificateNumber"]
    assert number.startswith("CR-")
    assert await grams_of(participant_id) == 600
    assert await system_balance(SystemAccount.GRAMS_RETIRED) == retired_before + 400

    public = data(await gql(client, LOOKUP, {"number": number.lower()}))["retirementCertificate"]
    assert public["grams"] == "400" and public["beneficiary"] == "张**"
    assert "三丰" not in public["holderName"]
    assert [lot["grams"] for lot in public["lots"]] == ["400"]
    assert data(await gql(client, LOOKUP, {"number": "CR-2026-NOSUCHNUMBR"}))["retirementCertificate"] is None
    assert (await verify()).ok


async def test_lots_drawn_oldest_first_are_on_the_certificate(client):
    auth, participant_id = await _resident()
    await issue_grams(participant_id, 300)
    await issue_grams(participant_id, 500)
    payload = await retire(client, auth, 600, "VOLUNTARY_CANCELLATION")
    lots = payload["retirement"]["lots"]
    assert [lot["grams"] for lot in lots] == ["300", "300"]
    row = await Retirement.get(certificate_number=payload["retirement"]["certificateNumber"])
    assert row.grams == 600 and row.channel == "VOLUNTARY_CANCELLATION"


async def test_eco_damage_compensation_needs_the_document_number(client):
    auth, participant_id = await _resident(100)
    refused = await retire(client, auth, 50, "ECO_DAMAGE_COMPENSATION")
    assert [(e["code"], e["field"]) for e in refused["userErrors"]] == [("INVALID_INPUT", "reference")]
    assert await grams_of(participant_id) == 100
    done = await retire(client, auth, 50, "ECO_DAMAGE_COMPENSATION", reference="(2026)沪0115民初123号")
    assert done["retirement"]["reference"] == "(2026)沪0115民初123号"


async def test_ets_compliance_draws_on_class_i_only(client):
    code = credit_code()
    participant_id = await organisation_id(code, "上海某钢铁公司")
    await issue_grams(participant_id, 500, "II")
    auth = token(unique("dev"), "project_developer", org=code)
    refused = await retire(client, auth, 100, "ETS_COMPLIANCE")
    assert _codes(refused) == ["NOT_ELIGIBLE"]
    assert await grams_of(participant_id) == 500
    await issue_grams(participant_id, 200, "I")
    done = await retire(client, auth, 150, "ETS_COMPLIANCE")
    assert [lot["methodologyClass"] for lot in done["retirement"]["lots"]] == ["I"]
    assert await grams_of(participant_id) == 550
    assert _codes(await retire(client, auth, 51, "ETS_COMPLIANCE")) == ["NOT_ELIGIBLE"]


async def test_a_resident_never_surrenders_reductions_for_ets_compliance(client):
    auth, participant_id = await _resident(500, "I")
    refused = await retire(client, auth, 100, "ETS_COMPLIANCE")
    assert [(e["code"], e["field"]) for e in refused["userErrors"]] == [("NOT_ELIGIBLE", "channel")]
    assert await grams_of(participant_id) == 500


async def test_shortfall_idempotency_and_who_may_retire(client):
    auth, participant_id = await _resident(100)
    assert _codes(await retire(client, auth, 101, "EVENT_NEUTRALITY")) == ["INSUFFICIENT_REDUCTIONS"]
    assert _codes(await retire(client, auth, 0, "EVENT_NEUTRALITY")) == ["INVALID_INPUT"]
    key = unique("k")
    first = await retire(client, auth, 40, "EVENT_NEUTRALITY", key, beneficiary="马拉松")
    again = await retire(client, auth, 40, "EVENT_NEUTRALITY", key, beneficiary="马拉松")
    assert again["retirement"]["certificateNumber"] == first["retirement"]["certificateNumber"]
    assert await grams_of(participant_id) == 60
    assert _codes(await retire(client, auth, 41, "EVENT_NEUTRALITY", key)) == ["IDEMPOTENCY_CONFLICT"]
    body = await gql(client, WITH_LOTS, {"input": {
        "grams": "1", "channel": "EVENT_NEUTRALITY", "idempotencyKey": "k"}}, token(roles="center"))
    assert error_codes(body) == ["FORBIDDEN"]
    body = await gql(client, WITH_LOTS, {"input": {
        "grams": "1", "channel": "EVENT_NEUTRALITY", "idempotencyKey": "k"}})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_an_organisation_retires_and_is_shown_by_name(client):
    code = credit_code()
    holder = await organisation_id(code, "上海某建设集团")
    await issue_grams(holder, 1000, "I")
    auth = token(unique("dev"), "project_developer", org=code)
    done = await retire(client, auth, 1000, "ETS_COMPLIANCE", beneficiary="上海某建设集团")
    assert done["userErrors"] == []
    public = data(await gql(client, LOOKUP, {"number": done["retirement"]["certificateNumber"]}))
    certificate = public["retirementCertificate"]
    assert certificate["holderName"] == "上海某建设集团" and certificate["beneficiary"] == "上海某建设集团"
    assert await grams_of(holder) == 0


async def test_phone_and_id_numbers_in_an_organisations_beneficiary_are_masked_in_public(client):
    code = credit_code()
    holder = await organisation_id(code, "Green Cafe")
    await issue_grams(holder, 10)
    auth = token(unique("shop"), "project_developer", org=code)
    named = "张三 138-1234-5678, ID 11010519491231002X, 家 021.6123.4567, table 12"
    done = await retire(client, auth, 1, "EVENT_NEUTRALITY", beneficiary=named)
    assert done["retirement"]["beneficiary"] == named  # the holder sees what it wrote
    public = data(await gql(client, LOOKUP, {"number": done["retirement"]["certificateNumber"]}))
    assert public["retirementCertificate"]["reference"] is None
    assert public["retirementCertificate"]["beneficiary"] == (
        "张三 138****5678, ID 110***********002X, 家 021****4567, table 12")


async def test_a_retry_of_a_residents_ets_retirement_made_before_the_rule_replays(client, monkeypatch):
    """A resident's ETS_COMPLIANCE retirement made before residents were refused the channel:
    its retry (same key, same input) gets its first result, as the contract promises."""
    auth, participant_id = await _resident(500, "I")
    key = unique("k")
    # The rule not yet in force:
    monkeypatch.setattr(retirement_service, "_acts_for_org", lambda principal: True)
    first = await retire(client, auth, 100, "ETS_COMPLIANCE", key=key)
    assert first["userErrors"] == []
    monkeypatch.undo()
    again = await retire(client, auth, 100, "ETS_COMPLIANCE", key=key)
    assert again["userErrors"] == [] and again["retirement"]["id"] == first["retirement"]["id"]


async def test_a_reference_shows_a_court_case_number_but_hides_phone_and_id_numbers(client):
    auth, _ = await _resident(100)
    personal = "家庭减排 13812345678 身份证 11010519491231002X"
    mine = await retire(client, auth, 10, "VOLUNTARY_CANCELLATION", reference=personal)
    court = "(2026)沪01民终1234567号 联系人 13812345678"
    owed = await retire(client, auth, 10, "ECO_DAMAGE_COMPENSATION", reference=court)
    shown = []
    for done in (mine, owed):
        assert done["retirement"]["reference"] in (personal, court)  # the holder sees what it wrote
        public = data(await gql(client, LOOKUP, {"number": done["retirement"]["certificateNumber"]}))
        shown.append(public["retirementCertificate"]["reference"])
    assert shown == ["家庭减排 138****5678 身份证 110***********002X",
                     "(2026)沪01民终1234567号 联系人 138****5678"]


async def test_amounts_past_32_bits_are_retired_or_refused_like_any_other(client):
    """Past 2^31 grams (about 2,147 t) the ledger once failed with INTERNAL_SERVER_ERROR on
    PostgreSQL: a statement typed the change as a 32-bit integer."""
    big = 2**31 + 1
    auth, participant_id = await _resident(3 * 2**31)
    assert await grams_of(participant_id) == 3 * 2**31
    done = await retire(client, auth, big, "VOLUNTARY_CANCELLATION")
    assert done["userErrors"] == [] and done["retirement"]["grams"] == str(big)
    assert await grams_of(participant_id) == 3 * 2**31 - big
    assert _codes(await retire(client, auth, 2**33, "VOLUNTARY_CANCELLATION")) == [
        "INSUFFICIENT_REDUCTIONS"]
    empty, _ = await _resident()
    assert _codes(await retire(client, empty, big, "VOLUNTARY_CANCELLATION")) == [
        "INSUFFICIENT_REDUCTIONS"]
    assert await grams_of(participant_id) == 3 * 2**31 - big
    assert (await verify()).ok
