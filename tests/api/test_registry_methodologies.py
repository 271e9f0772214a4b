"""Methodologies through the contract: submit, assess, publish, who may, and what is listed."""

from __future__ import annotations

from graphql_schema.ids import encode_id
from tests.helpers import credit_code, data, error_codes, gql, op, token, unique
from tests.registry_support import CENTER, REGULATOR, submit_methodology

LIST = """query($status: MethodologyStatus, $kind: MethodologyKind) {
  methodologies(status: $status, kind: $kind) {
    id code name kind methodologyClass version status activityUnit gramsPerUnit dailyCapGrams
    publishedAt
  }
}"""


def _operator() -> str:
    return token(roles="scenario_operator", org=credit_code())


async def _listed(client, auth, **variables):
    return {m["code"]: m for m in data(await gql(client, LIST, variables, auth))["methodologies"]}


async def test_submit_assess_publish(client):
    code = unique("M-")
    made = data(await submit_methodology(client, _operator(), code=code))["submitMethodology"]
    assert made["userErrors"] == []
    assert made["methodology"]["code"] == code
    assert made["methodology"]["status"] == "SUBMITTED"
    mid = made["methodology"]["id"]

    assessed = data(await op(client, "AssessMethodology",
                             {"input": {"id": mid, "approve": True, "comment": "sound"}},
                             CENTER))["assessMethodology"]
    assert assessed == {"methodology": {"id": mid, "status": "PUBLIC_COMMENT"}, "userErrors": []}

    published = data(await op(client, "PublishMethodology", {"input": {"id": mid}},
                              REGULATOR))["publishMethodology"]
    assert published["userErrors"] == []
    assert published["methodology"]["status"] == "PUBLISHED"
    assert published["methodology"]["publishedAt"]

    seen = (await _listed(client, token(), kind="SCENARIO"))[code]
    assert seen["methodologyClass"] == "II" and seen["version"] == "1.0"
    assert (seen["activityUnit"], seen["gramsPerUnit"], seen["dailyCapGrams"]) == (
        "passenger-km", "47", "5000")


async def test_center_and_project_developer_may_submit_a_project_methodology(client):
    for auth in (CENTER, token(roles="project_developer", org=credit_code())):
        made = data(await submit_methodology(
            client, auth, kind="PROJECT", methodologyClass="I", activityUnit=None,
            gramsPerUnit=None, dailyCapGrams=None))["submitMethodology"]
        assert made["userErrors"] == [] and made["methodology"]["status"] == "SUBMITTED"


async def test_the_center_never_assesses_its_own_submission(client):
    made = data(await submit_methodology(client, CENTER))["submitMethodology"]["methodology"]
    review = {"input": {"id": made["id"], "approve": True}}
    own = data(await op(client, "AssessMethodology", review, CENTER))["assessMethodology"]
    assert [(e["code"], e["field"]) for e in own["userErrors"]] == [("INVALID_STATE", "id")]
    assert own["methodology"] is None
    colleague = token("center-colleague", "center")
    other = data(await op(client, "AssessMethodology", review, colleague))["assessMethodology"]
    assert other["userErrors"] == [] and other["methodology"]["status"] == "PUBLIC_COMMENT"


async def test_who_may_not(client):
    for auth in (token(), token(roles="merchant", org=credit_code()), REGULATOR,
                 token(roles="scenario_operator")):  # an organisation role with no org
        assert error_codes(await submit_methodology(client, auth)) == ["FORBIDDEN"]
    made = data(await submit_methodology(client, _operator()))["submitMethodology"]
    mid = made["methodology"]["id"]
    review = {"input": {"id": mid, "approve": True}}
    for auth in (_operator(), REGULATOR, token(roles="exchange")):
        assert error_codes(await op(client, "AssessMethodology", review, auth)) == ["FORBIDDEN"]
    for auth in (CENTER, _operator()):
        assert error_codes(await op(client, "PublishMethodology", {"input": {"id": mid}},
                                    auth)) == ["FORBIDDEN"]
    assert error_codes(await submit_methodology(client, None)) == ["UNAUTHENTICATED"]
    statuses = {m["id"]: m["status"] for m in (await _listed(client, CENTER)).values()}
    assert statuses[mid] == "SUBMITTED"


async def test_scenario_terms_are_required_and_project_ones_refused(client):
    cases = [
        ({"activityUnit": None}, "activityUnit"),
        ({"gramsPerUnit": None}, "gramsPerUnit"),
        ({"gramsPerUnit": "0"}, "gramsPerUnit"),
        ({"dailyCapGrams": "-5"}, "dailyCapGrams"),
        ({"gramsPerUnit": "1000000001"}, "gramsPerUnit"),  # more than 1,000 t a unit
        ({"dailyCapGrams": "9223372036854775807"}, "dailyCapGrams"),
        ({"kind": "PROJECT"}, "activityUnit"),
        ({"code": "no spaces allowed"}, "code"),
        ({"version": ""}, "version"),
        ({"name": "   "}, "name"),
    ]
    for change, field in cases:
        code = unique("M-")
        body = data(await submit_methodology(client, _operator(), **{"code": code, **change}))
        payload = body["submitMethodology"]
        assert payload["methodology"] is None
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
            ("INVALID_INPUT", field)], change
        assert code not in await _listed(client, CENTER)


async def test_code_and_version_are_unique(client):
    code = unique("M-")
    first = data(await submit_methodology(client, _operator(), code=code))["submitMethodology"]
    assert first["userErrors"] == []
    again = data(await submit_methodology(client, _operator(), code=code))["submitMethodology"]
    assert [e["code"] for e in again["userErrors"]] == ["DUPLICATE"]
    newer = data(await submit_methodology(client, _operator(), code=code, version="2.0"))
    assert newer["submitMethodology"]["userErrors"] == []
    other_kind = data(await submit_methodology(
        client, _operator(), code=code, version="3.0", kind="PROJECT", activityUnit=None,
        gramsPerUnit=None, dailyCapGrams=None))["submitMethodology"]
    assert [(e["code"], e["field"]) for e in other_kind["userErrors"]] == [("INVALID_INPUT", "kind")]
    versions = [m for m in data(await gql(client, LIST, {}, CENTER))["methodologies"]
                if m["code"] == code]
    assert sorted(m["version"] for m in versions) == ["1.0", "2.0"]


async def test_wrong_transitions_are_invalid_state_and_change_nothing(client):
    made = data(await submit_methodology(client, _operator()))["submitMethodology"]
    mid = made["methodology"]["id"]
    early = data(await op(client, "PublishMethodology", {"input": {"id": mid}},
                          REGULATOR))["publishMethodology"]
    assert [e["code"] for e in early["userErrors"]] == ["INVALID_STATE"]
    assert early["methodology"] is None

    rejected = data(await op(client, "AssessMethodology",
                             {"input": {"id": mid, "approve": False, "comment": "no baseline"}},
                             CENTER))["assessMethodology"]
    assert rejected["methodology"]["status"] == "REJECTED"
    for name, variables, auth in (
        ("AssessMethodology", {"input": {"id": mid, "approve": True}}, CENTER),
        ("PublishMethodology", {"input": {"id": mid}}, REGULATOR),
    ):
        body = data(await op(client, name, variables, auth))
        payload = next(iter(body.values()))
        assert [e["code"] for e in payload["userErrors"]] == ["INVALID_STATE"]
    statuses = {m["id"]: m["status"] for m in (await _listed(client, CENTER)).values()}
    assert statuses[mid] == "REJECTED"


async def test_bad_and_unknown_ids(client):
    bad = data(await op(client, "AssessMethodology", {"input": {"id": "nonsense", "approve": True}},
                        CENTER))["assessMethodology"]
    assert [(e["code"], e["field"]) for e in bad["userErrors"]] == [("INVALID_INPUT", "id")]
    other_type = encode_id("Scenario", 1)
    wrong = data(await op(client, "PublishMethodology", {"input": {"id": other_type}},
                          REGULATOR))["publishMethodology"]
    assert [e["code"] for e in wrong["userErrors"]] == ["INVALID_INPUT"]
    missing = data(await op(client, "PublishMethodology",
                            {"input": {"id": encode_id("Methodology", 2**62)}},
                            REGULATOR))["publishMethodology"]
    assert [e["code"] for e in missing["userErrors"]] == ["NOT_FOUND"]


async def test_who_sees_what(client):
    org = credit_code()
    mine = token(roles="scenario_operator", org=org)
    code = unique("M-")
    data(await submit_methodology(client, mine, code=code))
    assert code not in await _listed(client, token())
    assert code in await _listed(client, mine)
    assert code in await _listed(client, CENTER, status="SUBMITTED")
    assert code in await _listed(client, token(roles="exchange"))
    assert code not in await _listed(client, _operator())
    # Only an organisation role acts for the token's org: a resident or expert carrying it does not.
    for role in ("resident", "expert"):
        assert code not in await _listed(client, token(roles=role, org=org))
    assert code not in await _listed(client, CENTER, status="PUBLISHED")
    assert error_codes(await gql(client, LIST, {})) == ["UNAUTHENTICATED"]
