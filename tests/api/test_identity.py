"""Identity as the contract says: pinned algorithms, required claims, coded errors."""

from __future__ import annotations

import time

import jwt

from app.settings import get_settings
from tests.helpers import data, error_codes, gql, token

ME = "query { me { id displayName account { reductionGrams points } } }"


async def test_resident_account_opens_on_first_sight(client):
    body = await gql(client, ME, auth=token("alice-001"))
    me = data(body)["me"]
    assert me["account"] == {"reductionGrams": "0", "points": "0"}
    assert "alice-001" not in me["displayName"]
    again = data(await gql(client, ME, auth=token("alice-001")))["me"]
    assert again["id"] == me["id"]


async def test_missing_token_is_unauthenticated(client):
    body = await gql(client, ME)
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_wrong_role_is_forbidden(client):
    body = await gql(client, ME, auth=token(roles="center"))
    assert error_codes(body) == ["FORBIDDEN"]


def _claims(**overrides):
    s = get_settings()
    now = int(time.time())
    claims = {"sub": "mallory", "roles": ["resident"], "iss": s.jwt_issuer,
              "aud": s.jwt_audience, "iat": now, "exp": now + 60}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def test_bad_tokens_are_refused(client):
    secret = get_settings().jwt_secret
    bad = [
        jwt.encode(_claims(), "another-secret-of-enough-length-0123456789", algorithm="HS256"),
        jwt.encode(_claims(exp=int(time.time()) - 10), secret, algorithm="HS256"),
        jwt.encode(_claims(iss="elsewhere"), secret, algorithm="HS256"),
        jwt.encode(_claims(aud="other-app"), secret, algorithm="HS256"),
        jwt.encode(_claims(exp=None), secret, algorithm="HS256"),
        jwt.encode(_claims(), secret, algorithm="HS384"),
        jwt.encode(_claims(), None, algorithm="none"),
        "not-a-jwt",
    ]
    for value in bad:
        body = await gql(client, ME, auth=value)
        assert error_codes(body) == ["UNAUTHENTICATED"], value


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


async def test_malformed_requests_answer_4xx(client):
    response = await client.post("/graphql", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    response = await client.post("/graphql", json={"query": "query { me { nope } }"})
    assert response.status_code == 400
    response = await client.post("/graphql", json={"query": ME, "variables": "x"})
    assert 400 <= response.status_code < 500


async def test_depth_and_alias_limits(client):
    aliases = " ".join(f"a{i}: me {{ id }}" for i in range(40))
    body = await gql(client, f"query {{ {aliases} }}", auth=token())
    assert body.get("errors")
    deep = "query { me { account { entries(first: 1) { edges { node { id } } } } } }"
    assert not (await gql(client, deep, auth=token())).get("errors")
