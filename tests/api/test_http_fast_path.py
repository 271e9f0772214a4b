"""POST /graphql answers byte for byte as strawberry's path does.

Each request of the table goes to the app twice, as raw ASGI messages: once as served, once with
every request sent down strawberry's path (the reference). Status, every header in order, and the
body must be the same, with and without the CORS middleware.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.types import ASGIApp, Message

import graphql_schema.view
from app.main import create_app
from app.settings import get_settings
from graphql_schema.schema import schema
from tests.helpers import contract_operations, token

ME = "query Me { me { id account { points } } }"
ENTRIES = "query E($first: Int!) { me { account { entries(first: $first) { pageInfo { hasNextPage } } } } }"
REDEEM = contract_operations()["RedeemRight"]
UNKNOWN_RIGHT = {"input": {"rightId": "UmlnaHQ6OTk5OTk5OTk5", "quantity": 1, "idempotencyKey": "fast-k"}}
ORIGIN = "https://shop.example"
RESIDENT = token("fast-path-resident")
JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"

Exchange = tuple[int, list[tuple[bytes, bytes]], bytes]


def _post(payload: Any, *, auth: str | None = RESIDENT, accept: str | None = None,
          content_type: str = JSON) -> dict[str, Any]:
    """A POST of `payload` (bytes as they are, anything else as JSON) with the given headers."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    headers = {"content-type": content_type, "content-length": str(len(body))}
    if auth is not None:
        headers["authorization"] = f"Bearer {auth}"
    if accept is not None:
        headers["accept"] = accept
    return {"headers": headers, "chunks": [body]}


CASES: dict[str, dict[str, Any]] = {
    "good query": _post({"query": ME}),
    "good query, charset": _post({"query": ME}, content_type="application/json; charset=utf-8"),
    "good query, accepts graphql-response+json": _post({"query": ME}, accept=GRAPHQL_RESPONSE),
    "good query, accepts application/json only": _post({"query": ME}, accept=JSON),
    "good query, accepts anything": _post({"query": ME}, accept="*/*"),
    "variables and operationName": _post({"query": ENTRIES, "variables": {"first": 3},
                                          "operationName": "E", "extensions": {}}),
    "mutation": _post({"query": REDEEM, "variables": UNKNOWN_RIGHT}),
    "mutation, accepts graphql-response+json": _post(
        {"query": REDEEM, "variables": UNKNOWN_RIGHT}, accept=f"{GRAPHQL_RESPONSE}, {JSON};q=0.9"),
    "mutation, accepts application/json only": _post(
        {"query": REDEEM, "variables": UNKNOWN_RIGHT}, accept=JSON),
    "mutation, unauthenticated": _post({"query": REDEEM, "variables": UNKNOWN_RIGHT}, auth=None),
    "syntax error": _post({"query": "query { me { id }"}),
    "syntax error, accepts application/json only": _post({"query": "query { me { id }"}, accept=JSON),
    "syntax error, accepts graphql-response+json": _post(
        {"query": "query { me { id }"}, accept=GRAPHQL_RESPONSE),
    "validation error": _post({"query": "{ me { nope } }"}),
    "validation error, accepts application/json only": _post({"query": "{ me { nope } }"}, accept=JSON),
    "missing variable": _post({"query": ENTRIES}),
    "variable of the wrong type": _post({"query": ENTRIES, "variables": {"first": "ten"}}),
    "variables not an object": _post({"query": ME, "variables": [1]}),
    "extensions not an object": _post({"query": ME, "extensions": "x"}),
    "query not a string": _post({"query": 5}),
    "unknown operationName": _post({"query": ME, "operationName": "Other"}),
    "two operations without operationName": _post({"query": "query A { __typename } query B { me { id } }"}),
    "missing query": _post({"variables": {}}),
    "null query": _post({"query": None}),
    "empty query": _post({"query": ""}),
    "subscription over POST": _post({"query": "subscription { accountChanged { points } }"}),
    "a JSON string": _post("query { me { id } }"),
    "a JSON number": _post(5),
    "JSON null": _post(None),
    "a JSON list (batching is off)": _post([{"query": ME}]),
    "invalid JSON": _post(b'{"query": '),
    "invalid JSON, accepts graphql-response+json": _post(b"{", accept=GRAPHQL_RESPONSE),
    "not UTF-8": _post(b'{"query": "\xff\xfe"}'),
    "empty body": _post(b""),
    "unauthenticated": _post({"query": ME}, auth=None),
    "bad token": _post({"query": ME}, auth="not.a.token"),
    "bad token, public field": _post({"query": "{ __typename }"}, auth="not.a.token"),
    "declared body too large": {"headers": {"content-type": JSON, "content-length": str(3 << 20)},
                                "chunks": [b'{"query": "{ __typename }"}']},
    "chunked body too large": {"headers": {"content-type": JSON},
                               "chunks": [b'{"query": "'] + [b" " * 65536] * 40 + [b'"}']},
    "chunked body": {"headers": {"content-type": JSON, "authorization": f"Bearer {RESIDENT}"},
                     "chunks": [b'{"query": "query Me', b' { me { id } }"}']},
    "text/plain": _post({"query": ME}, content_type="text/plain"),
}


async def _exchange(app: ASGIApp, case: dict[str, Any], origin: str | None) -> Exchange:
    """Send one POST /graphql as raw ASGI messages; (status, raw headers, body) of the answer."""
    headers = [(k.encode(), v.encode()) for k, v in case["headers"].items()]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"puhui.test"), *headers],
             "client": ("127.0.0.1", 50000), "server": ("puhui.test", 80)}
    chunks = case["chunks"]
    incoming: Iterator[Message] = iter(
        [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
         for i, chunk in enumerate(chunks)])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(incoming, {"type": "http.disconnect"})

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, *rest = sent
    assert start["type"] == "http.response.start"
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in rest)


async def _both(app: ASGIApp, case: dict[str, Any], origin: str | None = None) -> tuple[Exchange, Exchange]:
    """The answer as served, then strawberry's answer to the same request."""
    served = await _exchange(app, case, origin)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graphql_schema.view, "_json_post", lambda request: False)
        reference = await _exchange(app, case, origin)
    return served, reference


@pytest.fixture(scope="module")
def cors_app(database: str) -> ASGIApp:
    """The app with the CORS middleware of a deployment that names its browser origins."""
    return create_app(dataclasses.replace(get_settings(), cors_origins=(ORIGIN,)), manage_db=False)


@pytest.mark.parametrize("name", list(CASES))
async def test_post_answers_as_strawberry_does(app, name):
    served, reference = await _both(app, CASES[name])
    assert served == reference


@pytest.mark.parametrize("name", ["good query", "mutation", "syntax error", "invalid JSON",
                                  "chunked body too large", "unauthenticated"])
async def test_post_answers_as_strawberry_does_behind_cors(cors_app, name):
    served, reference = await _both(cors_app, CASES[name], origin=ORIGIN)
    assert served == reference
    assert (b"access-control-allow-origin", ORIGIN.encode()) in served[1]


async def test_the_table_covers_each_kind_of_answer(app):
    """The comparison means something: the table holds 200s, 400s, 413s and both media types."""
    answers = [(await _exchange(app, case, None)) for case in CASES.values()]
    statuses = {status for status, _, _ in answers}
    media = {dict(headers)[b"content-type"] for _, headers, _ in answers}
    assert {200, 400, 413} <= statuses
    assert {JSON.encode(), GRAPHQL_RESPONSE.encode()} <= media
    ok = CASES["good query"]
    status, headers, body = await _exchange(app, ok, None)
    assert status == 200 and orjson.loads(body)["data"]["me"]["account"] == {"points": "0"}
    assert headers == [(b"content-length", str(len(body)).encode()), (b"content-type", JSON.encode())]


async def test_a_crash_before_execution_is_500_on_both_paths(app, monkeypatch):
    """An unexpected failure outside any resolver: a masked, coded error and status 500."""

    class Broken:
        @classmethod
        def build(cls, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("execution engine down")

    monkeypatch.setattr(schema, "execution_context_class", Broken)
    served, reference = await _both(app, _post({"query": ME}))
    assert served == reference
    status, _, body = served
    assert status == 500
    assert [e["extensions"]["code"] for e in orjson.loads(body)["errors"]] == ["INTERNAL_SERVER_ERROR"]
    assert "execution engine down" not in body.decode()
