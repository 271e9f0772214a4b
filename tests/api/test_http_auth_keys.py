"""Production-style identity: RS256/ES256 tokens checked with a public key or a JWKS endpoint.

The app is built in-process with injected settings (the schema is the process's one; only the
token verification differs). The JWKS is served by a tiny HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.main import create_app
from app.settings import Settings, get_settings
from tests.helpers import error_codes, unique

ME = "query { me { id account { points } } }"
pytestmark = pytest.mark.usefixtures("database")


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": unique("idp-"), "roles": ["resident"], "iss": settings.jwt_issuer,
              "aud": settings.jwt_audience, "iat": now, "exp": now + 300}
    claims.update(overrides)
    return claims


def _settings(**changes: Any) -> Settings:
    return dataclasses.replace(get_settings(), jwt_secret=None, **changes)


@contextlib.asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://puhui.test") as client:
        yield client


async def _me(client: httpx.AsyncClient, jwt_text: str) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": ME},
                                 headers={"authorization": f"Bearer {jwt_text}"})
    assert response.status_code == 200, response.text
    return response.json()


@contextlib.contextmanager
def _jwks_server(keys: list[dict[str, Any]]) -> Iterator[str]:
    body = json.dumps({"keys": keys}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def _jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_a_public_key_verifies_tokens_of_its_own_algorithm(kind):
    key = _rsa() if kind == "RS256" else _ec()
    settings = _settings(jwt_public_key=_pem(key))
    async with _client(settings) as client:
        body = await _me(client, jwt.encode(_claims(settings), key, algorithm=kind))
        assert not body.get("errors"), body
        assert body["data"]["me"]["account"] == {"points": "0"}


async def test_a_public_key_refuses_every_other_token():
    key = _rsa()
    pem = _pem(key)
    settings = _settings(jwt_public_key=pem)
    other_rsa, other_ec = _rsa(), _ec()
    bad = [
        jwt.encode(_claims(settings), other_rsa, algorithm="RS256"),            # another key
        jwt.encode(_claims(settings), other_ec, algorithm="ES256"),             # another algorithm
        jwt.encode(_claims(settings), key, algorithm="PS256"),                  # not pinned
        jwt.encode(_claims(settings), key, algorithm="RS512"),                  # not pinned
        jwt.encode(_claims(settings, exp=int(time.time()) - 5), key, algorithm="RS256"),
        jwt.encode(_claims(settings, iss="elsewhere"), key, algorithm="RS256"),
        jwt.encode(_claims(settings, aud="another-app"), key, algorithm="RS256"),
        jwt.encode({k: v for k, v in _claims(settings).items() if k != "iat"}, key,
                   algorithm="RS256"),
        jwt.encode(_claims(settings), None, algorithm="none"),
    ]
    # The classic confusion: HS256 with the public key's PEM as the shared secret.
    bad.append(_hs256_with(pem, _claims(settings)))
    async with _client(settings) as client:
        for value in bad:
            assert error_codes(await _me(client, value)) == ["UNAUTHENTICATED"], value[:40]


def _hs256_with(secret: str, claims: dict[str, Any]) -> str:
    """An HS256 token signed with `secret`, bypassing PyJWT's refusal to use PEM text as a secret."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(signature)


async def test_a_jwks_endpoint_supplies_keys_by_kid():
    rsa_key, ec_key, stranger = _rsa(), _ec(), _rsa()
    keys = [_jwk(rsa_key, "rsa-2026", "RS256"), _jwk(ec_key, "ec-2026", "ES256")]
    with _jwks_server(keys) as url:
        settings = _settings(jwt_jwks_url=url)
        async with _client(settings) as client:
            for key, kid, alg in ((rsa_key, "rsa-2026", "RS256"), (ec_key, "ec-2026", "ES256")):
                token = jwt.encode(_claims(settings), key, algorithm=alg, headers={"kid": kid})
                body = await _me(client, token)
                assert not body.get("errors"), body
            refused = [
                # A stranger's key under a published kid.
                jwt.encode(_claims(settings), stranger, algorithm="RS256",
                           headers={"kid": "rsa-2026"}),
                # A kid the endpoint does not publish.
                jwt.encode(_claims(settings), stranger, algorithm="RS256",
                           headers={"kid": "unknown"}),
                # No kid at all.
                jwt.encode(_claims(settings), rsa_key, algorithm="RS256"),
                # The RSA key's kid with the EC algorithm in the header.
                jwt.encode(_claims(settings), ec_key, algorithm="ES256",
                           headers={"kid": "rsa-2026"}),
            ]
            for value in refused:
                assert error_codes(await _me(client, value)) == ["UNAUTHENTICATED"]


async def test_a_jwks_endpoint_that_is_down_refuses_tokens_without_500():
    key = _rsa()
    with _jwks_server([]) as url:
        pass  # the server is gone: the URL refuses connections
    settings = _settings(jwt_jwks_url=url)
    async with _client(settings) as client:
        token = jwt.encode(_claims(settings), key, algorithm="RS256", headers={"kid": "k"})
        assert error_codes(await _me(client, token)) == ["UNAUTHENTICATED"]


async def test_a_remembered_token_still_expires():
    key = _ec()
    settings = _settings(jwt_public_key=_pem(key))
    claims = _claims(settings, exp=int(time.time()) + 2)
    token = jwt.encode(claims, key, algorithm="ES256")
    async with _client(settings) as client:
        first = await _me(client, token)
        assert not first.get("errors"), first
        assert not (await _me(client, token)).get("errors")
        await asyncio.sleep(max(0.0, claims["exp"] - time.time()) + 0.2)
        assert error_codes(await _me(client, token)) == ["UNAUTHENTICATED"]
