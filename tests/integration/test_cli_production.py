"""`puhui serve` with PUHUI_ENV=production: no GraphiQL, no introspection, RS256 tokens only,
validation errors shown as they are, unexpected errors masked (and logged), never a stack trace.

The schema is built once per process from the settings, so production runs in its own process,
on a scratch database of the suite's backend.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import error_codes, token
from tests.serve_support import (
    Server,
    cli_env,
    drop_database,
    execute_sql,
    on_postgres,
    scratch_database,
    serving,
)

pytestmark = pytest.mark.usefixtures("database")
ISSUER, AUDIENCE = "https://idp.city.example", "puhui-prod"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()
ME = "query { me { id account { reductionGrams points } } }"


def _token(roles: list[str] | None = None) -> str:
    now = int(time.time())
    claims = {"sub": f"idp-{uuid.uuid4().hex[:12]}", "roles": roles or ["resident"],
              "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return jwt.encode(claims, KEY, algorithm="RS256")


@pytest.fixture(scope="module")
async def production() -> AsyncIterator[tuple[Server, str]]:
    """A production server on its own scratch database; yields it and the database URL."""
    async with scratch_database() as url:
        env = cli_env(PUHUI_ENV="production", PUHUI_DATABASE_URL=url,
                      PUHUI_JWT_PUBLIC_KEY=PUBLIC_PEM.replace("\n", "\\n"),
                      PUHUI_JWT_ISSUER=ISSUER, PUHUI_JWT_AUDIENCE=AUDIENCE)
        async with serving(env=env) as server:
            yield server, url


async def _post(server: Server, query: str, auth: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {auth}"} if auth else {}
    async with httpx.AsyncClient(base_url=server.base) as http:
        return await http.post("/graphql", json={"query": query, **extra}, headers=headers)


def _clean(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    for error in body.get("errors") or []:
        assert error["extensions"]["code"], error
    return body


async def test_rs256_tokens_work_and_development_tokens_do_not(production):
    server, _ = production
    body = _clean(await _post(server, ME, _token()))
    assert body["data"]["me"]["account"] == {"reductionGrams": "0", "points": "0"}
    development = token()  # HS256 with the suite's shared secret
    assert error_codes(_clean(await _post(server, ME, development))) == ["UNAUTHENTICATED"]


async def test_no_graphiql_in_production(production):
    server, _ = production
    async with httpx.AsyncClient(base_url=server.base) as http:
        page = await http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 400
    assert not page.headers["content-type"].startswith("text/html")
    assert error_codes(_clean(page)) == ["BAD_REQUEST"]


async def test_introspection_is_off_in_production(production):
    server, _ = production
    for query in ("{ __schema { types { name } } }", '{ __type(name: "Query") { name } }',
                  "query { me { id } __schema { queryType { name } } }"):
        response = await _post(server, query, _token())
        assert response.status_code == 400, query
        body = _clean(response)
        assert "data" not in body
        assert "introspection" in body["errors"][0]["message"].lower()
    typename = _clean(await _post(server, "{ __typename }"))
    assert typename["data"] == {"__typename": "Query"}


async def test_validation_errors_are_shown_without_field_suggestions(production):
    server, _ = production
    body = _clean(await _post(server, "query { me { displayNam } }", _token()))
    message = body["errors"][0]["message"]
    assert message.startswith("Cannot query field 'displayNam' on type 'Me'.")
    assert "Did you mean" not in message
    bad_variable = _clean(await _post(
        server, "query($f: Int!) { me { account { entries(first: $f) { pageInfo { hasNextPage } } } } }",
        _token(), variables={"f": "many"}))
    assert "many" in bad_variable["errors"][0]["message"]
    refused = _clean(await _post(server, ME, _token(["center"])))
    assert refused["errors"][0]["message"] != "Unexpected error."
    assert error_codes(refused) == ["FORBIDDEN"]


async def test_unexpected_errors_are_masked_and_logged(production):
    server, url = production
    cascade = " CASCADE" if on_postgres() else ""
    await execute_sql(url, f"DROP TABLE participant{cascade}")
    response = await _post(server, ME, _token())
    body = _clean(response)
    assert error_codes(body) == ["INTERNAL_SERVER_ERROR"]
    assert body["errors"][0]["message"] == "Unexpected error."
    assert "participant" not in response.text
    assert "unexpected error" in server.log()


async def test_healthz_is_503_once_the_database_is_gone(production):
    server, url = production
    async with httpx.AsyncClient(base_url=server.base) as http:
        assert (await http.get("/healthz")).status_code == 200
        if on_postgres():
            await drop_database(url)
            response = await http.get("/healthz")
            assert response.status_code == 503
            assert response.json()["database"] == "unreachable"
            # An anonymous request costs the database nothing: it is still answered.
            anonymous = await http.post("/graphql", json={"query": "{ __typename }"})
            assert anonymous.json() == {"data": {"__typename": "Query"}}
