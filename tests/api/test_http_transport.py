"""GraphQL over HTTP: methods, media types, status codes, coded errors, and limits.

Every error a client can receive carries `extensions.code`; a request that cannot be executed
answers 4xx without a `data` key; nothing ever answers 500 or shows a stack trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from tests.helpers import contract_operations, cut_off_request, data, error_codes, token, unique

ME = "query Me { me { id account { reductionGrams points } } }"
ENTRIES = "query E($first: Int!, $after: String) { me { account { entries(first: $first, after: $after) { pageInfo { hasNextPage } } } } }"  # noqa: E501
SUBMIT = contract_operations()["SubmitMethodology"]
GRAPHQL_RESPONSE = "application/graphql-response+json"


def _methodology_input() -> dict[str, Any]:
    return {"code": unique("HTTP-"), "name": "HTTP transport methodology", "kind": "PROJECT",
            "methodologyClass": "II", "version": "1.0"}


def _assert_coded(response: httpx.Response) -> dict[str, Any]:
    """The body of a response that must be a JSON GraphQL error, each error coded, no internals."""
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert body["errors"], body
    for error in body["errors"]:
        assert isinstance(error["message"], str) and error["message"]
        assert error.get("extensions", {}).get("code"), error
    return body


async def test_query_over_post_and_get_answers_the_same(client):
    auth = {"authorization": f"Bearer {token(unique('http'))}"}
    posted = await client.post("/graphql", json={"query": ME}, headers=auth)
    got = await client.get("/graphql", params={"query": ME}, headers=auth)
    assert posted.status_code == got.status_code == 200
    assert posted.headers["content-type"].startswith("application/json")
    assert data(posted.json()) == data(got.json())


async def test_get_with_variables_and_operation_name(client):
    auth = {"authorization": f"Bearer {token(unique('http'))}"}
    response = await client.get("/graphql", headers=auth, params={
        "query": ENTRIES, "variables": json.dumps({"first": 5}), "operationName": "E"})
    assert response.status_code == 200
    assert data(response.json())["me"]["account"]["entries"]["pageInfo"] == {"hasNextPage": False}


async def test_a_mutation_over_get_is_405_and_changes_nothing(client):
    auth = {"authorization": f"Bearer {token(roles='center')}"}
    values = _methodology_input()
    response = await client.get("/graphql", headers=auth, params={
        "query": SUBMIT, "variables": json.dumps({"input": values})})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_codes(_assert_coded(response)) == ["METHOD_NOT_ALLOWED"]
    assert "data" not in response.json()
    # The same input over POST is accepted: the GET created nothing (no DUPLICATE code).
    posted = await client.post("/graphql", headers=auth,
                               json={"query": SUBMIT, "variables": {"input": values}})
    payload = data(posted.json())["submitMethodology"]
    assert payload["userErrors"] == []
    assert payload["methodology"]["code"] == values["code"]


async def test_subscriptions_are_not_served_over_plain_http(client):
    auth = {"authorization": f"Bearer {token()}"}
    query = "subscription { accountChanged { points } }"
    for response in (await client.post("/graphql", json={"query": query}, headers=auth),
                     await client.get("/graphql", params={"query": query}, headers=auth)):
        assert response.status_code == 400
        assert error_codes(_assert_coded(response)) == ["BAD_REQUEST"]


async def test_other_methods_are_405_with_a_coded_error(client):
    for method in ("PUT", "DELETE", "PATCH"):
        response = await client.request(method, "/graphql", json={"query": ME})
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, POST"
        assert error_codes(_assert_coded(response)) == ["METHOD_NOT_ALLOWED"]


async def test_malformed_requests_answer_400_with_a_code(client):
    json_type = {"content-type": "application/json"}
    cases = [
        ("broken JSON", {"content": b'{"query": ', "headers": json_type}),
        ("deeply nested JSON", {"content": b"[" * 100_000 + b"]" * 100_000, "headers": json_type}),
        ("not UTF-8", {"content": b'{"query": "\xff\xfe"}', "headers": json_type}),
        ("a JSON list (batching is off)", {"json": [{"query": ME}]}),
        ("a JSON string", {"json": "query { me { id } }"}),
        ("query is a number", {"json": {"query": 5}}),
        ("no query", {"json": {"variables": {}}}),
        ("variables is a string", {"json": {"query": ME, "variables": "{}"}}),
        ("variables is a list", {"json": {"query": ME, "variables": [1]}}),
        ("extensions is a string", {"json": {"query": ME, "extensions": "x"}}),
        ("unknown operation name", {"json": {"query": ME, "operationName": "Other"}}),
        ("syntax error", {"json": {"query": "query { me { id }"}}),
        ("unknown field", {"json": {"query": "query { me { nope } }"}}),
        ("missing variable", {"json": {"query": ENTRIES}}),
        ("variable of the wrong type", {"json": {"query": ENTRIES, "variables": {"first": "ten"}}}),
        ("Int out of range", {"json": {"query": ENTRIES, "variables": {"first": 2**40}}}),
        ("bad BigInt", {"json": {"query": SUBMIT, "variables": {"input": {
            **_methodology_input(), "gramsPerUnit": "12x"}}}}),
        ("BigInt beyond 64 bits", {"json": {"query": SUBMIT, "variables": {"input": {
            **_methodology_input(), "gramsPerUnit": str(2**70)}}}}),
        ("unknown enum value", {"json": {"query": SUBMIT, "variables": {"input": {
            **_methodology_input(), "kind": "NOPE"}}}}),
    ]
    auth = {"authorization": f"Bearer {token(roles='center')}"}
    for label, request in cases:
        headers = {**auth, **request.pop("headers", {})}
        response = await client.post("/graphql", headers=headers, **request)
        assert response.status_code == 400, (label, response.status_code, response.text)
        body = _assert_coded(response)
        assert "data" not in body, label


async def test_a_body_that_is_not_json_answers_415(client):
    body = json.dumps({"query": "{ __typename }"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                         "application/jsonx", "application/graphql", ""):
        response = await client.post("/graphql", content=body,
                                     headers={"content-type": content_type})
        assert response.status_code == 415, content_type
        assert error_codes(_assert_coded(response)) == ["UNSUPPORTED_MEDIA_TYPE"], content_type
    for content_type in ("Application/JSON", "application/json ; charset=UTF-8"):  # RFC 9110
        response = await client.post("/graphql", content=body,
                                     headers={"content-type": content_type})
        assert response.status_code == 200, content_type
        assert data(response.json()) == {"__typename": "Query"}


async def test_an_oversized_body_is_413(client):
    padding = " " * (3 * 1024 * 1024)
    response = await client.post("/graphql", json={"query": ME + padding})
    assert response.status_code == 413
    assert error_codes(_assert_coded(response)) == ["PAYLOAD_TOO_LARGE"]


async def test_an_oversized_chunked_body_is_413(client):
    async def chunks():
        yield b'{"query": "'
        for _ in range(40):
            yield b" " * 65536
        yield b'"}'

    response = await client.post("/graphql", content=chunks(),
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413
    _assert_coded(response)


async def test_query_limits_answer_400(client):
    auth = {"authorization": f"Bearer {token()}"}
    aliases = " ".join(f"a{i}: me {{ id }}" for i in range(40))
    deep = "query { __schema { types { " + "fields { type { " * 6 + "name" + " } }" * 6 + " } } }"
    many_tokens = "query { " + "me { id } " * 2000 + "}"
    for query in (f"query {{ {aliases} }}", deep, many_tokens):
        response = await client.post("/graphql", json={"query": query}, headers=auth)
        assert response.status_code == 400, query[:80]
        body = _assert_coded(response)
        assert "data" not in body


async def test_bad_ids_and_cursors_are_typed_errors(client):
    auth = {"authorization": f"Bearer {token()}"}
    for cursor in ("zz", "Y3Vyc29y", "", "%%%", "a" * 500):
        response = await client.post("/graphql", headers=auth, json={
            "query": ENTRIES, "variables": {"first": 5, "after": cursor}})
        assert response.status_code == 200
        assert error_codes(_assert_coded(response)) == ["INVALID_INPUT"], cursor
    response = await client.post("/graphql", headers=auth, json={
        "query": ENTRIES, "variables": {"first": 0}})
    assert error_codes(_assert_coded(response)) == ["INVALID_INPUT"]
    staff = {"authorization": f"Bearer {token(roles='center')}"}
    assess = contract_operations()["AssessMethodology"]
    for bad in ("garbage", "TGVkZ2VyRW50cnk6MQ", "", "TWV0aG9kb2xvZ3k6LTE"):
        response = await client.post("/graphql", headers=staff, json={
            "query": assess, "variables": {"input": {"id": bad, "approve": True}}})
        assert response.status_code == 200, response.text
        body = response.json()
        codes = error_codes(body) or [
            e["code"] for e in (body["data"]["assessMethodology"] or {}).get("userErrors", [])]
        assert codes and set(codes) <= {"INVALID_INPUT", "NOT_FOUND"}, (bad, body)


async def test_execution_errors_keep_data_and_answer_200(client):
    response = await client.post("/graphql", json={"query": ME})
    assert response.status_code == 200
    body = _assert_coded(response)
    assert "data" in body and body["data"] is None
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_graphql_response_json_is_served_when_accepted(client):
    accept = {"accept": f"{GRAPHQL_RESPONSE}, application/json;q=0.9"}
    ok = await client.post("/graphql", json={"query": ME}, headers={
        **accept, "authorization": f"Bearer {token()}"})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    invalid = await client.post("/graphql", json={"query": "{ nope }"}, headers=accept)
    assert invalid.status_code == 400
    assert invalid.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert "data" not in _assert_coded(invalid)
    broken = await client.post("/graphql", content=b"{", headers={
        **accept, "content-type": "application/json"})
    assert broken.status_code == 400
    assert broken.headers["content-type"].startswith(GRAPHQL_RESPONSE)


async def test_graphiql_and_introspection_outside_production(client):
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "graphiql" in page.text.lower()
    response = await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})
    assert data(response.json()) == {"__schema": {"queryType": {"name": "Query"}}}


async def test_bad_authorization_headers_are_unauthenticated_not_500(client):
    for header in ("Bearer", "Bearer ", "Basic abc", "bearer x.y.z", "Bearer a b c",
                   "Bearer " + "A" * 5000, "Bearer \u00e9\u00e9"):
        response = await client.post("/graphql", json={"query": ME},
                                     headers={"authorization": header.encode("utf-8")})
        assert response.status_code == 200, header
        assert error_codes(_assert_coded(response)) == ["UNAUTHENTICATED"], header
    # An anonymous query of a public field is not blocked by a bad header it does not need.
    response = await client.post("/graphql", json={"query": "{ __typename }"},
                                 headers={"authorization": "Bearer nope"})
    assert data(response.json()) == {"__typename": "Query"}


async def test_healthz_reports_the_database(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["cache-control"] == "no-store"


async def test_clients_accepting_only_application_json_get_200_on_request_errors(client):
    """The GraphQL-over-HTTP spec's rule for legacy clients: the errors travel with status 200."""
    legacy = {"accept": "application/json"}
    for query in ("{ nope }", "query { me { id }", ENTRIES):
        response = await client.post("/graphql", json={"query": query}, headers=legacy)
        assert response.status_code == 200, query
        body = _assert_coded(response)
        assert "data" not in body
    broken = await client.post("/graphql", content=b"{", headers={
        **legacy, "content-type": "application/json"})
    assert broken.status_code == 400


async def test_documents_too_intricate_to_check_answer_400(client):
    """A chain of fragments each spreading the next (few tokens, deep to walk): a coded 400."""
    auth = {"authorization": f"Bearer {token()}"}
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(260))
    query = "query { ...F0 } " + chain + " fragment F260 on Query { __typename }"
    response = await client.post("/graphql", json={"query": query}, headers=auth)
    assert response.status_code == 400
    body = _assert_coded(response)
    assert "data" not in body and error_codes(body) == ["BAD_REQUEST"]


async def test_several_operations_need_an_operation_name(client):
    """As the GraphQL spec asks: without operationName, a document of two operations is refused."""
    auth = {"authorization": f"Bearer {token()}"}
    query = "query A { __typename } query B { __typename }"
    refused = await client.post("/graphql", json={"query": query}, headers=auth)
    assert refused.status_code == 400
    assert "operation name" in _assert_coded(refused)["errors"][0]["message"]
    chosen = await client.post("/graphql", json={"query": query, "operationName": "B"}, headers=auth)
    assert chosen.status_code == 200 and data(chosen.json()) == {"__typename": "Query"}


async def test_a_bad_bigint_literal_is_bad_user_input(client):
    """A BigInt written in the document (not a variable) that is not a number: 400, not 500."""
    auth = {"authorization": f"Bearer {token(unique('http'))}"}
    query = ('mutation { retireReductions(input: {grams: "abc", idempotencyKey: "k", '
             'purpose: "x"}) { userErrors { code } } }')
    response = await client.post("/graphql", json={"query": query}, headers=auth)
    assert response.status_code == 400, response.text
    body = _assert_coded(response)
    assert "data" not in body and "BAD_USER_INPUT" in error_codes(body)


async def test_a_client_gone_before_its_body_arrived_is_answered_nothing_and_logged_no_error(
    app, caplog
):
    headers = {"content-type": "application/json", "authorization": f"Bearer {token()}"}
    with caplog.at_level(logging.INFO):
        sent = await cut_off_request(app, "/graphql", headers, b'{"query": "{ __ty', declared=200)
    assert sent == []
    assert [r.levelname for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("disconnected" in r.message for r in caplog.records)


async def test_the_accept_headers_q_values_choose_the_media_type(client):
    """The spec's MUST: the response is in the highest-ranked media type the client accepts."""
    cases = {
        f"{GRAPHQL_RESPONSE};q=0, application/json": ("application/json", 200),  # a legacy client
        f"application/json, {GRAPHQL_RESPONSE};q=0.5": ("application/json", 400),
        f"application/json;q=0.5, {GRAPHQL_RESPONSE}": (GRAPHQL_RESPONSE, 400),
        f"{GRAPHQL_RESPONSE};q=0.8, application/json;q=0.8": (GRAPHQL_RESPONSE, 400),
        f"Application/JSON;q=1, {GRAPHQL_RESPONSE};q=bogus": ("application/json", 200),
        f"application/json, {GRAPHQL_RESPONSE};q=NaN": ("application/json", 200),  # not a q-value
        f"application/json, {GRAPHQL_RESPONSE};q=1.5": ("application/json", 200),
        f"{GRAPHQL_RESPONSE};q=0, {GRAPHQL_RESPONSE}, application/json;q=0.5": (GRAPHQL_RESPONSE, 400),
        f"{GRAPHQL_RESPONSE}, {GRAPHQL_RESPONSE};q=0, application/json;q=0.5": (GRAPHQL_RESPONSE, 400),
    }
    for accept, (media, status) in cases.items():
        response = await client.post("/graphql", json={"query": "{ nope }"},
                                     headers={"accept": accept})
        assert response.headers["content-type"].startswith(media), accept
        assert response.status_code == status, accept
        assert "data" not in _assert_coded(response)


async def test_an_unknown_operation_name_is_a_request_error_like_a_failed_validation(client):
    query = {"query": "query A { __typename }", "operationName": "B"}
    for accept, status in (("application/json", 200), (GRAPHQL_RESPONSE, 400)):
        response = await client.post("/graphql", json=query, headers={"accept": accept})
        assert response.status_code == status, accept
        body = _assert_coded(response)
        assert "data" not in body and error_codes(body) == ["BAD_REQUEST"]
        assert "B" in body["errors"][0]["message"]


async def test_empty_optional_get_parameters_count_as_not_given(client):
    auth = {"authorization": f"Bearer {token()}"}
    for extra in ({"variables": ""}, {"variables": "null"}, {"extensions": ""},
                  {"operationName": ""}, {"variables": "", "extensions": "", "operationName": ""}):
        response = await client.get("/graphql", params={"query": "{ __typename }", **extra},
                                    headers=auth)
        assert response.status_code == 200, (extra, response.text)
        assert data(response.json()) == {"__typename": "Query"}
    refused = await client.get("/graphql", params={"query": "{ __typename }", "variables": "[]"},
                               headers=auth)
    assert refused.status_code == 400
    _assert_coded(refused)
