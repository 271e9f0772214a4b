"""Hostile input answers a typed error and changes nothing: out-of-range cursors, malformed
BigInts, over-long strings, odd token claims, and production errors that name no schema member."""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from app.audit import AuditEvent
from app.participants import Participant
from app.settings import get_settings
from points.models import MisconductFlag
from tests.helpers import (
    contract_operations,
    credit_code,
    data,
    error_codes,
    gql,
    op,
    token,
    unique,
)

CENTER = token("hardening-center", "center")
# (query, role, the kind its cursors name)
CONNECTIONS = [
    ("query($a: String) { me { redemptions(first: 5, after: $a) { pageInfo { hasNextPage } } } }",
     "resident", "my-redemption"),
    ("query($a: String) { me { account { entries(first: 5, after: $a) { pageInfo { hasNextPage } } } } }",
     "resident", "entry"),
    ("query($a: String) { rights(first: 5, after: $a) { pageInfo { hasNextPage } } }", "resident", "mall"),
    ("query($a: String) { merchants(first: 5, after: $a) { pageInfo { hasNextPage } } }", "center",
     "merchant"),
    ("query($a: String) { buybacks(first: 5, after: $a) { pageInfo { hasNextPage } } }", "center",
     "buyback"),
    ("query($a: String) { scenarioIssuances(scenarioCode: \"x\", first: 5, after: $a) {"
     " pageInfo { hasNextPage } } }", "center", "issuance-x"),
]
# Lists beside those: the merchant's own redemptions and buy-backs, another scenario's issuances.
OTHER_KINDS = ["merchant-redemption", "merchant-buyback", "issuance-y", "behavior", "c"]


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _messages(body: dict) -> str:
    return " ".join(e["message"] for e in body.get("errors") or [])


async def test_a_cursor_beyond_64_bits_or_of_another_list_is_invalid_input(client):
    for query, role, kind in CONNECTIONS:
        auth = token(unique("cur"), role)
        others = [k for _, _, k in CONNECTIONS if k != kind] + OTHER_KINDS
        for cursor in (_cursor(f"{kind}:{2**63}"), _cursor(f"{kind}:" + "9" * 40),
                       _cursor(f"{kind}:\u0663"), *(_cursor(f"{other}:5") for other in others)):
            body = await gql(client, query, {"a": cursor}, auth)
            assert error_codes(body) == ["INVALID_INPUT"], (query, cursor, body)
            assert body["errors"][0]["message"] == "Not a valid cursor of this list."
        # The largest position a cursor can hold is still a cursor (the unknown scenario aside).
        largest = await gql(client, query, {"a": _cursor(f"{kind}:{2**63 - 1}")}, auth)
        assert error_codes(largest) in ([], ["NOT_FOUND"]), (query, largest)


async def test_a_bigint_is_ascii_digits_within_64_bits_and_refusals_echo_nothing(client):
    auth = token(unique("big"))
    before = data(await gql(client, "query { me { account { reductionGrams } } }", auth=auth))
    for grams in ("--5", "5" * 5000, "\u0663", "1_000", " 5", "+5", "5.0", "", "-",
                  "9223372036854775808", "-9223372036854775809", True, 5.5):
        body = await op(client, "RetireReductions", {"input": {
            "grams": grams, "channel": "VOLUNTARY_CANCELLATION", "idempotencyKey": unique("k")}}, auth)
        assert error_codes(body) == ["BAD_USER_INPUT"], (grams, body)
        assert "data" not in body
        message = _messages(body)
        for internal in ("invalid literal", "int()", "4300", "set_int_max_str_digits"):
            assert internal not in message, (grams, message)
        assert "5" * 300 not in message
        assert "BigInt must be a whole number of 64 bits, written as decimal digits." in message
    after = data(await gql(client, "query { me { account { reductionGrams } } }", auth=auth))
    assert after == before
    # What the contract allows still goes through to the service (which finds nothing to retire).
    for grams in ("5", "-9223372036854775808", 5, 5.0):
        body = await op(client, "RetireReductions", {"input": {
            "grams": grams, "channel": "VOLUNTARY_CANCELLATION", "idempotencyKey": unique("k")}}, auth)
        assert data(body)["retireReductions"]["userErrors"], (grams, body)


@pytest.fixture
async def production_client(app, monkeypatch) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app as PUHUI_ENV=production builds it (schema and settings)."""
    from app.main import create_app
    from graphql_schema import schema as schema_module

    production = dataclasses.replace(get_settings(), env="production")
    monkeypatch.setattr(schema_module, "get_settings", lambda: production)
    monkeypatch.setattr(schema_module, "schema", schema_module.build_schema())
    transport = httpx.ASGITransport(app=create_app(production, manage_db=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://puhui.test") as c:
        yield c


async def test_production_suggests_no_names_for_bad_variables(production_client):
    kind = ("mutation($k: MisconductKind!) { recordMisconduct(input: {kind: $k, reason: \"r\","
            " subject: \"s\"}) { userErrors { code } } }")
    convert = contract_operations()["ConvertReductions"]
    cases = [
        (kind, {"k": "FRAUDULENT_RECORD"}),
        (convert, {"input": {"gram": "5", "idempotencyKey": "k"}}),
        (convert, {"input": {"grams": "5", "idempotencyKey": "k", "idempotencyKye": "k"}}),
        ('mutation { recordMisconduct(input: {kind: FRAUDULENT_RECORD, reason: "r", subject: "s"})'
         " { userErrors { code } } }", {}),
        ('mutation { convertReductions(input: {gram: "5", idempotencyKey: "k"}) { userErrors { code } } }',
         {}),
    ]
    for query, variables in cases:
        response = await production_client.post(
            "/graphql", json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {CENTER}"})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["errors"] and "data" not in body
        assert set(error_codes(body)) <= {"BAD_USER_INPUT", "BAD_REQUEST"}, body
        assert "did you mean" not in _messages(body).lower(), (variables, body)
        assert "FRAUDULENT_RECORDS" not in _messages(body)


async def test_strings_longer_than_their_column_are_invalid_input_and_change_nothing(client, caplog):
    caplog.set_level(logging.DEBUG)
    resident = token(unique("long"))
    secret = "personal-" + "x" * 120  # longer than any column it is compared with
    queries = [
        ("query($v: String) { rights(first: 5, category: $v) { pageInfo { hasNextPage } } }",
         "c" * 24 + secret, resident),
        ("query($v: String!) { behaviorScenario(code: $v) { code } }", secret, resident),
        ("query($v: String) { participantStanding(orgCode: $v) { creditStanding { score } } }",
         "91310000MA1DEM005AX", CENTER),
        ("query($v: String) { participantStanding(subject: $v) { creditStanding { score } } }",
         secret * 2, CENTER),
        ("query($v: String!) { lotTrace(serialPrefix: $v) { serialPrefix } }", secret, CENTER),
        ("query($v: String!) { scenarioIssuances(scenarioCode: $v, first: 5) { pageInfo { hasNextPage } } }",
         secret, CENTER),
    ]
    for query, value, auth in queries:
        body = await gql(client, query, {"v": value}, auth)
        assert error_codes(body) == ["INVALID_INPUT"], (query, body)
        assert body["errors"][0]["message"] == "A value is too long or otherwise not allowed for its field."
        assert value not in str(body)

    # revokeScenarioAuthorization meets the value inside its transaction, which is rolled back.
    for name in ("AuthorizeScenario", "RevokeScenarioAuthorization"):
        refused = await op(client, name, {"input": {"scenarioCode": secret}}, resident)
        assert error_codes(refused) == ["INVALID_INPUT"], (name, refused)
    mine = data(await gql(client, "query { me { scenarioAuthorizations { grantedAt } } }", auth=resident))
    assert mine["me"]["scenarioAuthorizations"] == []

    flags, audits = await MisconductFlag.all().count(), await AuditEvent.all().count()
    record = await gql(client, """mutation($input: RecordMisconductInput!) {
      recordMisconduct(input: $input) { flag { id } userErrors { code } } }""",
                       {"input": {"kind": "OTHER", "reason": "r", "subject": secret * 2}}, CENTER)
    assert error_codes(record) == ["INVALID_INPUT"], record
    assert await MisconductFlag.all().count() == flags
    assert await AuditEvent.all().count() == audits
    assert secret not in caplog.text


def _signed(**claims: object) -> str:
    """A correctly signed token with the suite's secret: good claims, changed by `claims`."""
    settings = get_settings()
    now = int(time.time())
    payload = {"sub": unique("claims"), "roles": ["resident"], "iss": settings.jwt_issuer,
               "aud": settings.jwt_audience, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, settings.jwt_secret, algorithm="HS256")


async def test_tokens_with_claims_no_participant_can_hold_are_unauthenticated(client, caplog):
    caplog.set_level(logging.DEBUG)
    retire = {"input": {"grams": "1", "channel": "VOLUNTARY_CANCELLATION", "idempotencyKey": "k1"}}
    buyback = {"input": {"points": "1", "idempotencyKey": "k1"}}
    for org in ("9131000000000000000X", " 91310000MA1DEM0001", " 1310000MA1DEM0001", "91310000MA1DEM000\n"):
        for role in ("merchant", "project_developer", "scenario_operator"):
            auth = _signed(roles=[role], org=org)
            for body in (await op(client, "MyMerchant", {}, auth),
                         await op(client, "RetireReductions", retire, auth),
                         await op(client, "RequestBuyback", buyback, auth),
                         await gql(client, "query { scenarios { code } }", auth=auth)):
                assert error_codes(body) == ["UNAUTHENTICATED"], (org, role, body)
                assert "org claim" in body["errors"][0]["message"]
                assert org.strip() not in str(body)
        storable = [c for c in (org, org.strip()) if len(c) <= 18]  # longer ones cannot be there
        assert not await Participant.filter(org_code__in=storable).exists()

    name = "Zhang " + "Wei" * 50  # longer than a display name: no name, as below
    shown = data(await gql(client, "query { me { displayName } }", auth=_signed(name=name)))
    assert shown["me"]["displayName"].startswith("\u5c45\u6c11")
    for sub in ("", "s" * 129, "nul\x00in-subject", "lone\ud800surrogate"):
        body = await gql(client, "query { me { id } }", auth=_signed(sub=sub))
        assert error_codes(body) == ["UNAUTHENTICATED"], (sub, body)
    assert name not in caplog.text and "Wei" * 5 not in caplog.text

    # The largest claims a participant holds still work; an unusable name is no name.
    code = credit_code()
    assert data(await op(client, "MyMerchant", {}, _signed(roles=["merchant"], org=code)))
    named = data(await gql(client, "query { me { displayName } }",
                           auth=_signed(name="\u5f20" * 128)))["me"]["displayName"]
    assert named == "\u5f20" * 128
    for odd in ("a\x00b", "\ud800"):
        shown = data(await gql(client, "query { me { displayName } }", auth=_signed(name=odd)))
        assert shown["me"]["displayName"].startswith("\u5c45\u6c11")


async def test_text_no_database_can_hold_is_refused_in_literals_and_variables(client):
    """A NUL character (PostgreSQL refuses it, SQLite would store it) or a lone surrogate in
    any text input answers BAD_USER_INPUT on both databases, and nothing is written. (A lone
    surrogate in the JSON of the variables is refused before: no JSON text holds one.)"""
    code = credit_code()
    auth = token(unique("nul"), "merchant", org=code)
    apply = ("mutation($n: String!, $c: String!) { applyMerchant(input: {name: $n, creditCode: $c,"
             ' contact: "138 0013 8000"}) { merchant { id } userErrors { code } } }')
    body = await gql(client, apply, {"n": "shop\u0000one", "c": code}, auth)
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    # graphql-core's lexer itself refuses a lone surrogate's escape as a syntax error.
    for escaped, refused in (("\\u0000", "BAD_USER_INPUT"), ("\\ud800", "BAD_REQUEST")):
        literal = (f'mutation {{ applyMerchant(input: {{name: "shop{escaped}one", creditCode: "{code}",'
                   ' contact: "138 0013 8000"}) { merchant { id } } }')
        assert error_codes(await gql(client, literal, auth=auth)) == [refused], escaped
    assert not await Participant.filter(org_code=code).exists()
    fine = await gql(client, apply, {"n": "shop one", "c": code}, auth)
    assert data(fine)["applyMerchant"]["userErrors"] == []


async def test_a_list_far_past_any_input_is_refused_before_its_coercion(client):
    """Variables are coerced before any permission check: a list no input takes is refused
    first, so an anonymous caller cannot spend the server's CPU on coercing it."""
    submit = contract_operations()["SubmitScenarioRecords"]
    item = {"subject": "s", "quantity": 1, "occurredAt": "2026-01-01T00:00:00Z", "externalRef": "r"}
    for auth in (None, token(unique("op"), "scenario_operator", org=credit_code())):
        body = await gql(client, submit, {"input": {"scenarioCode": "X", "records": [item] * 2001}},
                         auth)
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        assert "more than 2000 items in all" in _messages(body)
        assert body.get("data") is None
    # Nor split over several variables, one aliased mutation each.
    split = ("mutation(" + ", ".join(f"$r{i}: [ScenarioRecordInput!]!" for i in range(3)) + ") { "
             + " ".join(f'a{i}: submitScenarioRecords(input: {{scenarioCode: "X", records: $r{i}}})'
                        " { accepted }" for i in range(3)) + " }")
    body = await gql(client, split, {f"r{i}": [item] * 700 for i in range(3)})
    assert error_codes(body) == ["BAD_USER_INPUT"] and "in all" in _messages(body)
    anonymous = await gql(client, submit, {"input": {"scenarioCode": "X", "records": [item] * 2000}})
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]
