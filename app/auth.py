"""JWT -> Principal. The only module that uses pyjwt."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import jwt
from jwt.algorithms import HMACAlgorithm

from app.errors import Forbidden, Unauthenticated
from app.settings import Settings, get_settings, load_public_key

ROLES = frozenset(
    {
        "resident",
        "merchant",
        "scenario_operator",
        "project_developer",
        "center",
        "exchange",
        "regulator",
        "expert",
        "verifier",
    }
)
ORG_ROLES = frozenset({"merchant", "scenario_operator", "project_developer"})
STAFF_ROLES = frozenset({"center", "exchange", "regulator"})
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
TOKEN_CACHE_SIZE = 50_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: the identity provider's subject, roles, and organisation code."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    org: str | None = None
    name: str | None = None

    def has(self, *roles: str) -> bool:
        """True when the caller holds any of `roles`."""
        return not self.roles.isdisjoint(roles)

    def require(self, *roles: str) -> None:
        """Raise Forbidden unless the caller holds one of `roles`."""
        if not self.has(*roles):
            raise Forbidden()

    def require_org(self, *roles: str) -> str:
        """The caller's organisation code, for an organisation role among `roles`."""
        self.require(*roles)
        if not self.org:
            raise Forbidden("This role acts for an organisation; the token carries no org.")
        return self.org


class _VettedSecretHMAC(HMACAlgorithm):
    """HMAC whose secret is vetted (not empty, not an asymmetric key) once per secret.

    PyJWT vets the key on every verification, which is most of an HS256 check's cost; the
    secret comes from the settings, so the same vetting is done once and remembered."""

    def __init__(self, hash_alg: object) -> None:
        super().__init__(hash_alg)
        self._vetted: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        """The vetted secret, as PyJWT's HMAC would prepare it."""
        prepared = self._vetted.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)
            if len(self._vetted) < 8:
                self._vetted[key] = prepared
        return prepared


for _name, _hash in (("HS256", HMACAlgorithm.SHA256), ("HS384", HMACAlgorithm.SHA384),
                     ("HS512", HMACAlgorithm.SHA512)):
    jwt.unregister_algorithm(_name)
    jwt.register_algorithm(_name, _VettedSecretHMAC(_hash))


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=600, timeout=5)


def _key_for(token: str, settings: Settings) -> object:
    if settings.jwt_public_key:
        return load_public_key(settings.jwt_public_key)
    if settings.jwt_jwks_url:
        # The JWK carries its own algorithm; PyJWT refuses a token whose header names another.
        return _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token)
    return settings.jwt_secret


class _TokenCache:
    """Recently verified tokens and their Principal, until the token's own expiry (bounded LRU)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[object, ...], tuple[Principal, float]] = OrderedDict()

    @staticmethod
    def key(token: str, settings: Settings) -> tuple[object, ...]:
        """What a verification depends on: the token and the verifying settings."""
        return (token, settings.jwt_secret, settings.jwt_public_key, settings.jwt_jwks_url,
                settings.jwt_issuer, settings.jwt_audience)

    def get(self, key: tuple[object, ...]) -> Principal | None:
        """The cached Principal, or None when unknown or expired."""
        item = self._items.get(key)
        if item is None:
            return None
        if time.time() >= item[1]:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple[object, ...], principal: Principal, expires: float) -> None:
        """Remember a verified token until `expires` (epoch seconds)."""
        self._items[key] = (principal, expires)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


_verified = _TokenCache(TOKEN_CACHE_SIZE)


def _claims_to_principal(claims: dict) -> Principal:
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise Unauthenticated("The token's roles claim must be a list of strings.")
    org = claims.get("org")
    if org is not None and not isinstance(org, str):
        raise Unauthenticated("The token's org claim must be a string.")
    sub = claims["sub"]
    if not isinstance(sub, str) or not 0 < len(sub) <= 128:
        raise Unauthenticated("The token's sub claim must be a string of 1 to 128 characters.")
    name = claims.get("name")
    return Principal(
        subject=sub,
        roles=frozenset(r for r in roles if r in ROLES),
        org=org or None,
        name=name if isinstance(name, str) else None,
    )


def decode_token(token: str, settings: Settings | None = None) -> Principal:
    """Verify a token's signature, algorithm, issuer, audience and expiry; raise Unauthenticated.

    Verified tokens are remembered (bounded, until their `exp`), so a client's repeated requests
    cost one signature check."""
    settings = settings or get_settings()
    cache_key = _verified.key(token, settings)
    cached = _verified.get(cache_key)
    if cached is not None:
        return cached
    try:
        key = _key_for(token, settings)
        claims = jwt.decode(
            token,
            key=key,
            algorithms=settings.jwt_algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError:
        raise Unauthenticated("The token is invalid or expired.") from None
    principal = _claims_to_principal(claims)
    if isinstance(claims.get("exp"), int | float):
        # An exp beyond a double (JSON allows any number of digits) is remembered as the largest.
        _verified.put(cache_key, principal, float(min(claims["exp"], sys.float_info.max)))
    return principal


async def decode_token_async(token: str, settings: Settings | None = None) -> Principal:
    """decode_token, off the event loop when keys come from a JWKS endpoint (blocking fetch)."""
    settings = settings or get_settings()
    if settings.jwt_jwks_url:
        cached = _verified.get(_verified.key(token, settings))
        if cached is not None:
            return cached
        return await asyncio.to_thread(decode_token, token, settings)
    return decode_token(token, settings)


async def principal_from_header_async(
    value: str | None, settings: Settings | None = None
) -> Principal | None:
    """The Principal for an Authorization header value; None when absent; raise when invalid
    (a JWKS key fetch never blocks the event loop)."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'.")
    return await decode_token_async(token.strip(), settings)


def issue_token(
    subject: str,
    roles: list[str],
    org: str | None = None,
    ttl_seconds: int = 7 * 24 * 3600,
    settings: Settings | None = None,
    name: str | None = None,
) -> str:
    """Sign a development token with the shared secret (refused in production)."""
    settings = settings or get_settings()
    if settings.production or not settings.jwt_secret:
        raise RuntimeError("development tokens are refused in production")
    now = int(time.time())
    claims: dict = {
        "sub": subject,
        "roles": roles,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if org:
        claims["org"] = org
    if name:
        claims["name"] = name
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
