"""JWT -> Principal. The only module that uses pyjwt."""

from __future__ import annotations

import asyncio
import binascii
import hmac
import json
import re
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jwt
import orjson
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
MAX_SUBJECT = 128  # participant.subject
MAX_NAME = 128  # participant.display_name
# An organisation code that fits participant.org_code: the contract's 18-character unified social
# credit code, or a shorter code of letters, digits and hyphens (development organisations, "M-1").
_ORG_CODE = re.compile(r"[0-9A-Za-z-]{1,18}")
# What no database stores as text: control characters (PostgreSQL refuses NUL) and lone
# surrogates (not encodable as UTF-8).
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
TOKEN_CACHE_SIZE = 50_000
HEADER_CACHE_SIZE = 64
_HMAC_DIGESTS = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
_BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BASE64URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# The low bits of a segment's last character that encode no byte, by length modulo 4; PyJWT
# refuses a segment where they are set (it would not encode back to itself).
_STRAY_BITS = {2: 0x0F, 3: 0x03}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the identity provider's subject, roles, and organisation code."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    org: str | None = None
    name: str | None = None
    # Epoch seconds from which the token no longer counts (its `exp`); None for a principal the
    # service makes itself. A WebSocket connection keeps its principal past the handshake.
    expires: float | None = field(default=None, compare=False)

    def expired(self) -> bool:
        """True once the token this principal came from has passed its `exp`."""
        return self.expires is not None and time.time() >= self.expires

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
    """HMAC whose secret is vetted (not empty, not an asymmetric key, not a JWK) once per secret.

    PyJWT vets the key on every signing, which is about half of issuing a token; the secret comes
    from the settings, so the same vetting is done once and remembered. The HMAC verifier below
    takes its key from here too."""

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
    """The Principal of verified claims; Unauthenticated when a claim is not what the contract
    says (the messages never quote a claim's value)."""
    if "roles" not in claims:
        raise Unauthenticated("The token carries no roles claim.")
    roles = claims["roles"]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise Unauthenticated("The token's roles claim must be a list of strings.")
    org = claims.get("org")
    if org is not None and not isinstance(org, str):
        raise Unauthenticated("The token's org claim must be a string.")
    if org and not _ORG_CODE.fullmatch(org):
        raise Unauthenticated(
            "The token's org claim must be an organisation code: 1 to 18 letters, digits or hyphens."
        )
    sub = claims["sub"]
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT or _NOT_TEXT.search(sub):
        raise Unauthenticated(
            "The token's sub claim must be a string of 1 to 128 characters, without control characters."
        )
    name = claims.get("name")
    exp = claims.get("exp")
    return Principal(
        subject=sub,
        roles=frozenset(r for r in roles if r in ROLES),
        org=org or None,
        # A name no participant row holds (not a string, over 128 characters, control
        # characters, lone surrogates) is no name: the resident is shown under their masked
        # subject. (The contract does not require the claim; refusing it would lock them out.)
        name=name if isinstance(name, str) and len(name) <= MAX_NAME and not _NOT_TEXT.search(name)
        else None,
        # An exp beyond a double (JSON allows any number of digits) counts as the largest.
        expires=float(min(exp, sys.float_info.max)) if isinstance(exp, int | float) else None,
    )


def _base64url_segment(segment: bytes) -> bytes:
    """A token segment's bytes under PyJWT's rules: url-safe alphabet, at most two '=' and only
    up to a multiple of four, no stray bits in the last character; DecodeError otherwise."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    tail = len(stripped) % 4
    if (padding > 2 or (padding and len(segment) % 4) or tail == 1
            or stripped.translate(None, _BASE64URL_ALPHABET)
            or (tail and _BASE64URL_ALPHABET.index(stripped[-1]) & _STRAY_BITS[tail])):
        raise jwt.DecodeError("Invalid segment padding")
    return binascii.a2b_base64(stripped.translate(_BASE64URL_TO_STANDARD) + b"=" * (-tail % 4))


_header_algs: dict[bytes, str | None] = {}


def _header_alg(segment: bytes) -> str | None:
    """The algorithm a header segment names, or None when PyJWT would refuse the header.

    Tokens of one issuer share their header, so the answer is remembered per segment (bounded)."""
    try:
        return _header_algs[segment]
    except KeyError:
        pass
    alg: str | None = None
    try:
        header = json.loads(_base64url_segment(segment))
    except (jwt.DecodeError, ValueError, RecursionError):
        header = None
    # b64=false needs a detached payload, which is never given; crit may only name b64.
    if (isinstance(header, dict) and header.get("b64", True) is not False
            and ("kid" not in header or isinstance(header["kid"], str))
            and ("crit" not in header or (isinstance(header["crit"], list) and header["crit"]
                                          and all(ext == "b64" for ext in header["crit"])
                                          and "b64" in header))
            and isinstance(header.get("alg"), str) and header["alg"]):
        alg = header["alg"]
    if len(_header_algs) >= HEADER_CACHE_SIZE:
        _header_algs.clear()
    _header_algs[segment] = alg
    return alg


def _json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in `raw`, as the standard library reads it; DecodeError otherwise.

    orjson reads the common case; what it refuses (a BOM, UTF-16, NaN, lone surrogates, numbers
    beyond a double, deep nesting) is left to the standard library, which PyJWT uses."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise jwt.DecodeError("Invalid payload string") from None
    if not isinstance(value, dict):
        raise jwt.DecodeError("Invalid payload string: must be a json object")
    return value


def _whole_seconds(claims: dict[str, Any], name: str) -> int:
    """A time claim as PyJWT reads it (int() of the value); DecodeError when it is not one."""
    try:
        return int(claims[name])
    except (ValueError, TypeError, OverflowError):
        raise jwt.DecodeError(f"The {name} claim must be an integer.") from None


def _hmac_claims(token: str | bytes, settings: Settings) -> dict[str, Any]:
    """The claims of an HMAC-signed token, accepted and refused as jwt.decode does with this
    module's arguments (pinned algorithms, required claims, issuer, audience, no leeway), at a
    fraction of its cost; raise a PyJWTError when refused."""
    if isinstance(token, str):
        if not token.isascii():
            raise jwt.DecodeError("Invalid token characters")
        token = token.encode()
    elif not isinstance(token, bytes):
        raise jwt.DecodeError("Invalid token type")
    segments = token.split(b".")
    if len(segments) != 3:
        raise jwt.DecodeError("A token has three segments")
    header_segment, payload_segment, signature_segment = segments
    alg = _header_alg(header_segment)
    if alg is None or alg not in settings.jwt_algorithms or alg not in _HMAC_DIGESTS:
        raise jwt.InvalidAlgorithmError("The specified alg value is not allowed")
    key = jwt.get_algorithm_by_name(alg).prepare_key(settings.jwt_secret)
    signing_input = token[: len(header_segment) + 1 + len(payload_segment)]
    expected = hmac.digest(key, signing_input, _HMAC_DIGESTS[alg])
    if not hmac.compare_digest(_base64url_segment(signature_segment), expected):
        raise jwt.InvalidSignatureError("Signature verification failed")
    claims = _json_object(_base64url_segment(payload_segment))
    for name in REQUIRED_CLAIMS:
        if claims.get(name) is None:
            raise jwt.MissingRequiredClaimError(name)
    now = time.time()
    if _whole_seconds(claims, "iat") > now or ("nbf" in claims and _whole_seconds(claims, "nbf") > now):
        raise jwt.ImmatureSignatureError("The token is not yet valid")
    if _whole_seconds(claims, "exp") <= now:
        raise jwt.ExpiredSignatureError("Signature has expired")
    if not isinstance(claims["iss"], str) or claims["iss"] != settings.jwt_issuer:
        raise jwt.InvalidIssuerError("Invalid issuer")
    audiences = [claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"]
    if (not audiences or not isinstance(audiences, list)
            or not all(isinstance(aud, str) for aud in audiences)
            or settings.jwt_audience not in audiences):
        raise jwt.InvalidAudienceError("Invalid audience")
    if not isinstance(claims["sub"], str) or not isinstance(claims.get("jti", ""), str):
        raise jwt.InvalidTokenError("The sub and jti claims must be strings")
    return claims


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
        if settings.jwt_secret and not (settings.jwt_public_key or settings.jwt_jwks_url):
            claims = _hmac_claims(token, settings)
        else:
            claims = jwt.decode(
                token,
                key=_key_for(token, settings),
                algorithms=settings.jwt_algorithms,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": REQUIRED_CLAIMS},
            )
    except jwt.PyJWTError:
        raise Unauthenticated("The token is invalid or expired.") from None
    principal = _claims_to_principal(claims)
    if principal.expires is not None:
        _verified.put(cache_key, principal, principal.expires)
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
