"""Shared-secret tokens: decode_token accepts and refuses exactly what jwt.decode does.

decode_token checks HS256/HS384/HS512 tokens with its own verifier. Every token below, good or
bad, is decoded both by decode_token and by the reference, jwt.decode with the arguments
decode_token always passed it (then the same Principal rules), and the two answers must agree:
the same Principal, or the same refusal message.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import random
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.auth import REQUIRED_CLAIMS, Principal, _claims_to_principal, decode_token
from app.errors import Unauthenticated
from app.settings import Settings

SECRET = "unit-test-secret-for-hmac-tokens-0123456789-abcdefghijklmnopqrstuvwxyz"
SETTINGS = Settings(jwt_secret=SECRET, jwt_issuer="puhui-unit", jwt_audience="puhui-app")
NOW = int(time.time())
INVALID = "The token is invalid or expired."
PYJWT_DECODE = jwt.decode
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PEM = EC_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()


def _reference(token: str | bytes, settings: Settings = SETTINGS) -> Principal | str:
    """What decode_token answered when it called jwt.decode: a Principal or a refusal message."""
    try:
        claims = PYJWT_DECODE(token, key=settings.jwt_secret, algorithms=settings.jwt_algorithms,
                              audience=settings.jwt_audience, issuer=settings.jwt_issuer,
                              options={"require": REQUIRED_CLAIMS})
    except jwt.PyJWTError:
        return INVALID
    try:
        return _claims_to_principal(claims)
    except Unauthenticated as refused:
        return refused.message


def _ours(token: str | bytes, settings: Settings = SETTINGS) -> Principal | str:
    """What decode_token answers now: a Principal or a refusal message."""
    try:
        return decode_token(token, settings)  # type: ignore[arg-type]  # bytes are accepted too
    except Unauthenticated as refused:
        return refused.message


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _claims(**changes: Any) -> dict[str, Any]:
    """Good claims for SETTINGS; a change to None drops that claim."""
    claims = {"sub": "resident-1", "roles": ["resident"], "iss": SETTINGS.jwt_issuer,
              "aud": SETTINGS.jwt_audience, "iat": NOW - 60, "exp": NOW + 3600}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _signed(header: str, payload: str, secret: str = SECRET, digest: str = "sha256") -> str:
    """The segments `header`.`payload` with an HMAC signature over exactly those characters."""
    signing = f"{header}.{payload}"
    return f"{signing}.{_b64(hmac.digest(secret.encode(), signing.encode(), digest))}"


def _token(claims: dict[str, Any] | None = None, header: dict[str, Any] | None = None,
           raw_header: bytes | None = None, raw_payload: bytes | None = None,
           secret: str = SECRET, digest: str = "sha256") -> str:
    """A token signed with `secret`, built from JSON objects or raw segment bytes."""
    header_bytes = raw_header if raw_header is not None else json.dumps(
        header if header is not None else {"alg": "HS256", "typ": "JWT"}).encode()
    payload_bytes = raw_payload if raw_payload is not None else json.dumps(
        claims if claims is not None else _claims()).encode()
    return _signed(_b64(header_bytes), _b64(payload_bytes), secret, digest)


def _set_stray_bits(segment: str) -> str:
    """The segment with the unused low bits of its last character set (same bytes, leniently)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = {2: 0x0F, 3: 0x03}[len(segment) % 4]
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | spare]


def _padded(segment: str) -> str:
    """The segment with the '=' padding PyJWT also accepts."""
    assert len(segment) % 4, "this segment needs no padding"
    return segment + "=" * (-len(segment) % 4)


GOOD = _token()
HEADER, PAYLOAD, SIGNATURE = GOOD.split(".")
# Segments whose length leaves spare bits in their last character.
SHORT_HEADER = _b64(b'{"alg": "HS256"}')
ODD_PAYLOAD = next(segment for segment in (_b64(json.dumps(_claims(sub="r" * n)).encode())
                                          for n in range(1, 4)) if len(segment) % 4)


def _nested(depth: int) -> bytes:
    return json.dumps(_claims()).encode()[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"


# (name, token, accepted): `accepted` is what both verifiers must answer.
CASES: list[tuple[str, str | bytes, bool]] = [
    ("good", GOOD, True),
    ("good as bytes", GOOD.encode(), True),
    ("HS256 by jwt.encode", jwt.encode(_claims(), SECRET, algorithm="HS256"), True),
    ("aud list holding ours", _token(_claims(aud=["other", SETTINGS.jwt_audience])), True),
    ("aud list without ours", _token(_claims(aud=["other"])), False),
    ("aud list with a number", _token(_claims(aud=[SETTINGS.jwt_audience, 7])), False),
    ("aud empty", _token(_claims(aud="")), False),
    ("aud empty list", _token(_claims(aud=[])), False),
    ("aud object", _token(_claims(aud={SETTINGS.jwt_audience: 1})), False),
    ("wrong aud", _token(_claims(aud="another-app")), False),
    ("wrong iss", _token(_claims(iss="elsewhere")), False),
    ("iss list", _token(_claims(iss=[SETTINGS.jwt_issuer])), False),
    ("iss number", _token(_claims(iss=1)), False),
    ("expired", _token(_claims(exp=NOW - 60)), False),
    ("exp numeric string", _token(_claims(exp=str(NOW + 3600))), True),
    ("exp word", _token(_claims(exp="tomorrow")), False),
    ("exp float", _token(_claims(exp=NOW + 3600.5)), True),
    ("exp true", _token(_claims(exp=True)), False),
    ("exp list", _token(_claims(exp=[NOW + 3600])), False),
    ("exp beyond 64 bits", _token(_claims(exp=10**30)), True),
    ("exp of 400 digits", _token(_claims(exp=10**400)), True),
    ("exp 1e400", _token(raw_payload=json.dumps(_claims()).encode().replace(
        str(NOW + 3600).encode(), b"1e400")), False),
    ("exp NaN", _token(raw_payload=json.dumps(_claims(exp=float("nan"))).encode()), False),
    ("exp Infinity", _token(raw_payload=json.dumps(_claims(exp=float("inf"))).encode()), False),
    ("iat in the future", _token(_claims(iat=NOW + 3600)), False),
    ("iat numeric string", _token(_claims(iat="1000")), True),
    ("iat word", _token(_claims(iat="yesterday")), False),
    ("iat list", _token(_claims(iat=[1])), False),
    ("iat float", _token(_claims(iat=NOW - 60.5)), True),
    ("iat zero", _token(_claims(iat=0)), True),
    ("nbf in the future", _token(_claims(nbf=NOW + 3600)), False),
    ("nbf in the past", _token(_claims(nbf=NOW - 60)), True),
    ("nbf word", _token(_claims(nbf="soon")), False),
    ("nbf null", _token(raw_payload=json.dumps({**_claims(), "nbf": None}).encode()), False),
    ("exp null", _token(raw_payload=json.dumps({**_claims(), "exp": None}).encode()), False),
    ("sub number", _token(_claims(sub=12)), False),
    ("sub empty", _token(_claims(sub="")), False),
    ("sub too long", _token(_claims(sub="s" * 129)), False),
    ("jti string", _token(_claims(jti="id-1")), True),
    ("jti number", _token(_claims(jti=1)), False),
    ("roles not a list", _token(_claims(roles="resident")), False),
    ("roles missing", _token(_claims(roles=None)), False),
    ("roles empty", _token(_claims(roles=[])), True),
    ("org number", _token(_claims(org=5)), False),
    ("org and name", _token(_claims(roles=["merchant"], org="M-1", name="Shop")), True),
    ("duplicate aud, ours last", _token(raw_payload=json.dumps(_claims(aud="x")).encode()[:-1]
                                        + f', "aud": "{SETTINGS.jwt_audience}"}}'.encode()), True),
    ("duplicate aud, ours first", _token(raw_payload=json.dumps(_claims()).encode()[:-1]
                                         + b', "aud": "x"}'), False),
    ("lone surrogate in name", _token(raw_payload=json.dumps(_claims(name="\ud800")).encode()), True),
    ("payload with a BOM", _token(raw_payload=b"\xef\xbb\xbf" + json.dumps(_claims()).encode()), True),
    ("payload in UTF-16", _token(raw_payload=json.dumps(_claims()).encode("utf-16")), True),
    ("payload nested 300 deep", _token(raw_payload=_nested(300)), True),
    ("payload nested 5000 deep", _token(raw_payload=_nested(5000)), False),
    ("payload JSON string", _token(raw_payload=b'"claims"'), False),
    ("payload JSON array", _token(raw_payload=b"[1, 2]"), False),
    ("payload not JSON", _token(raw_payload=b"{sub: 1}"), False),
    ("payload empty", _token(raw_payload=b""), False),
    ("payload trailing junk", _token(raw_payload=json.dumps(_claims()).encode() + b"x"), False),
    ("alg none", jwt.encode(_claims(), None, algorithm="none"), False),
    ("alg none, signed", _token(header={"alg": "none"}), False),
    ("alg HS384", jwt.encode(_claims(), SECRET, algorithm="HS384"), False),
    ("alg HS512", jwt.encode(_claims(), SECRET, algorithm="HS512"), False),
    ("alg HS512 header, HS256 signature", _token(header={"alg": "HS512"}), False),
    ("alg ES256", jwt.encode(_claims(), EC_KEY, algorithm="ES256"), False),
    ("alg missing", _token(header={"typ": "JWT"}), False),
    ("alg empty", _token(header={"alg": ""}), False),
    ("alg list", _token(header={"alg": ["HS256"]}), False),
    ("alg lower case", _token(header={"alg": "hs256"}), False),
    ("no typ", _token(header={"alg": "HS256"}), True),
    ("kid string", _token(header={"alg": "HS256", "kid": "key-1"}), True),
    ("kid number", _token(header={"alg": "HS256", "kid": 1}), False),
    ("crit b64 with b64 true", _token(header={"alg": "HS256", "b64": True, "crit": ["b64"]}), True),
    ("crit b64 without b64", _token(header={"alg": "HS256", "crit": ["b64"]}), False),
    ("crit exp", _token(header={"alg": "HS256", "exp": 1, "crit": ["exp"]}), False),
    ("crit empty", _token(header={"alg": "HS256", "crit": []}), False),
    ("crit not a list", _token(header={"alg": "HS256", "b64": True, "crit": "b64"}), False),
    ("crit with a number", _token(header={"alg": "HS256", "b64": True, "crit": ["b64", 1]}), False),
    ("b64 false", _token(header={"alg": "HS256", "b64": False, "crit": ["b64"]}), False),
    ("b64 false, empty payload", _signed(_b64(b'{"alg":"HS256","b64":false,"crit":["b64"]}'), ""), False),
    ("b64 zero", _token(header={"alg": "HS256", "b64": 0}), True),
    ("header JSON array", _token(raw_header=b'["HS256"]'), False),
    ("header JSON string", _token(raw_header=b'"HS256"'), False),
    ("header not JSON", _token(raw_header=b"{alg: HS256}"), False),
    ("header with a BOM", _token(raw_header=b'\xef\xbb\xbf{"alg":"HS256"}'), True),
    ("header in UTF-16", _token(raw_header='{"alg":"HS256"}'.encode("utf-16")), True),
    ("header nested 5000 deep", _token(raw_header=b'{"alg":"HS256","x":' + b"[" * 5000
                                       + b"]" * 5000 + b"}"), False),
    ("another secret", _token(secret="another-secret-of-enough-length-0123456789"), False),
    ("tampered payload", f"{HEADER}.{_b64(json.dumps(_claims(sub='someone-else')).encode())}.{SIGNATURE}",
     False),
    ("tampered signature", f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-2]}{'A' if SIGNATURE[-2] != 'A' else 'B'}"
                           f"{SIGNATURE[-1]}", False),
    ("signature stray bits", f"{HEADER}.{PAYLOAD}.{_set_stray_bits(SIGNATURE)}", False),
    ("odd payload", _signed(HEADER, ODD_PAYLOAD), True),
    ("payload stray bits", _signed(HEADER, _set_stray_bits(ODD_PAYLOAD)), False),
    ("payload padded", _signed(HEADER, _padded(ODD_PAYLOAD)), True),
    ("short header", _signed(SHORT_HEADER, PAYLOAD), True),
    ("header stray bits", _signed(_set_stray_bits(SHORT_HEADER), PAYLOAD), False),
    ("header padded", _signed(_padded(SHORT_HEADER), PAYLOAD), True),
    ("header over-padded", _signed(_padded(SHORT_HEADER) + "=", PAYLOAD), False),
    ("signature padded", f"{HEADER}.{PAYLOAD}.{_padded(SIGNATURE)}", True),
    ("signature over-padded", f"{GOOD}===", False),
    ("signature wrongly padded", f"{GOOD}{'=' * (-len(SIGNATURE) % 4 + 1)}", False),
    ("signature one character short", GOOD[:-1], False),
    ("signature five characters short", GOOD[:-5], False),
    ("signature one character long", GOOD + "A", False),
    ("signature empty", f"{HEADER}.{PAYLOAD}.", False),
    ("standard base64 characters", f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}+", False),
    ("character outside base64", f"{HEADER}.{PAYLOAD[:-1]}!.{SIGNATURE}", False),
    ("header character outside base64, signed", _signed(f"{HEADER[:-1]}!", PAYLOAD), False),
    ("header one character short, signed", _signed(HEADER[:-1], PAYLOAD), False),
    ("non-ASCII character", f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}\u00e9", False),
    ("non-ASCII bytes", f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}".encode() + b"\xe9", False),
    ("trailing newline", GOOD + "\n", False),
    ("two segments", f"{HEADER}.{PAYLOAD}", False),
    ("four segments", f"{GOOD}.{SIGNATURE}", False),
    ("four segments, empty payload", f"{HEADER}..{PAYLOAD}.{SIGNATURE}", False),
    ("one segment", HEADER, False),
    ("empty", "", False),
    ("dots only", "..", False),
    ("not a JWT", "not-a-jwt", False),
]


@pytest.mark.parametrize(("name", "token", "accepted"), CASES, ids=[case[0] for case in CASES])
def test_decode_token_answers_as_pyjwt_does(name: str, token: str | bytes, accepted: bool) -> None:
    reference = _reference(token)
    assert isinstance(reference, Principal) is accepted, reference
    assert _ours(token) == reference


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_each_required_claim_must_be_present(claim: str) -> None:
    token = _token(_claims(**{claim: None}))
    assert _reference(token) == INVALID
    assert _ours(token) == INVALID


def test_a_good_token_gives_its_principal() -> None:
    token = _token(_claims(sub="merchant-9", roles=["merchant", "unknown-role"], org="M-9", name="Shop"))
    principal = _ours(token)
    assert principal == Principal(subject="merchant-9", roles=frozenset({"merchant"}), org="M-9",
                                  name="Shop")
    assert isinstance(principal, Principal) and principal.expires == NOW + 3600
    assert not principal.expired()


def test_a_token_without_a_roles_claim_is_unauthenticated() -> None:
    assert _ours(_token(_claims(roles=None))) == "The token carries no roles claim."


def test_a_string_no_token_can_hold_is_refused_as_invalid() -> None:
    # PyJWT raises UnicodeEncodeError here; decode_token refuses it like any other bad token.
    assert _ours(f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}\ud800") == INVALID


@pytest.mark.parametrize("secret", [
    EC_PEM,
    json.dumps({"kty": "oct", "k": _b64(b"s" * 40)}),
])
def test_a_secret_pyjwt_will_not_use_for_hmac_refuses_every_token(secret: str) -> None:
    settings = dataclasses.replace(SETTINGS, jwt_secret=secret)
    token = _token(secret=secret)
    assert _reference(token, settings) == INVALID
    assert _ours(token, settings) == INVALID


def test_hs384_is_checked_when_it_is_the_pinned_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Settings, "jwt_algorithms", property(lambda self: ["HS384"]))
    # Tokens of their own: the verified-token cache assumes the algorithms follow the keys.
    hs384 = _token(_claims(sub="resident-hs384"), header={"alg": "HS384"}, digest="sha384")
    hs256 = _token(_claims(sub="resident-hs384"))
    assert isinstance(_reference(hs384), Principal)
    assert _ours(hs384) == _reference(hs384)
    assert _ours(hs256) == _reference(hs256) == INVALID


def test_shared_secret_tokens_are_checked_without_pyjwt(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("jwt.decode was called")

    monkeypatch.setattr(jwt, "decode", refuse)
    monkeypatch.setattr(jwt, "decode_complete", refuse)
    token = _token(_claims(sub="resident-without-pyjwt"))
    assert _ours(token) == Principal(subject="resident-without-pyjwt", roles=frozenset({"resident"}))
    assert _ours(_token(_claims(exp=NOW - 60))) == INVALID


def test_a_public_key_still_verifies_with_pyjwt() -> None:
    settings = dataclasses.replace(SETTINGS, jwt_secret=None, jwt_public_key=EC_PEM)
    good = jwt.encode(_claims(sub="resident-es256"), EC_KEY, algorithm="ES256")
    assert _ours(good, settings) == Principal(subject="resident-es256", roles=frozenset({"resident"}))
    # HS256 signed with the public key's PEM as the secret: the classic confusion, refused.
    assert _ours(_token(secret=EC_PEM), settings) == INVALID


def _random_header(rng: random.Random) -> dict[str, Any]:
    header: dict[str, Any] = {}
    for name, values in (
        ("alg", ["HS256", "HS256", "HS256", "HS384", "none", "", None, 1, "RS256"]),
        ("typ", ["JWT", "at+jwt", 1]),
        ("kid", ["k1", 2, None, ["k1"]]),
        ("b64", [True, False, 0, "false"]),
        ("crit", [["b64"], [], "b64", ["b64", "exp"], [1]]),
    ):
        if rng.random() < (0.9 if name == "alg" else 0.25):
            header[name] = values[0] if rng.random() < 0.5 else rng.choice(values)
    return header


def _random_claims(rng: random.Random) -> dict[str, Any]:
    pools: dict[str, list[Any]] = {
        "sub": ["resident-r", "", 7, None, ["x"]],
        "iss": [SETTINGS.jwt_issuer, "elsewhere", None, 1, [SETTINGS.jwt_issuer]],
        "aud": [SETTINGS.jwt_audience, [SETTINGS.jwt_audience, "x"], ["x"], "", [], None, 3,
                [SETTINGS.jwt_audience, 3]],
        "iat": [NOW - 60, NOW + 3600, "100", "x", None, 1.5, [1], True, 10**30],
        "exp": [NOW + 3600, NOW - 60, str(NOW + 3600), "x", None, NOW + 3600.25, False, 10**30, -(10**30)],
        "nbf": [NOW - 60, NOW + 3600, "x", None, str(NOW - 60), 0.5],
        "jti": ["j", 1, None],
        "roles": [["resident"], ["merchant", "center"], "resident", [1]],
        "org": ["M-1", 2, None],
    }
    optional = {"nbf", "jti", "roles", "org"}
    claims: dict[str, Any] = {}
    for name, values in pools.items():
        if rng.random() < (0.3 if name in optional else 0.95):
            # Mostly the first, good, value: otherwise nearly every token would be refused.
            claims[name] = values[0] if rng.random() < 0.75 else rng.choice(values)
    return claims


def test_decode_token_agrees_with_pyjwt_on_many_signed_tokens() -> None:
    rng = random.Random(20240611)
    answers = {"accepted": 0, "refused": 0}
    for _ in range(600):
        header = _random_header(rng) if rng.random() < 0.5 else {"alg": "HS256", "typ": "JWT"}
        digest = {"HS384": "sha384"}.get(header.get("alg"), "sha256")
        token = _token(_random_claims(rng), header=header, digest=digest)
        reference = _reference(token)
        assert _ours(token) == reference, (header, token)
        answers["accepted" if isinstance(reference, Principal) else "refused"] += 1
    # The sample must exercise both answers to prove anything.
    assert answers["accepted"] >= 20 and answers["refused"] >= 20, answers


def test_changing_any_one_character_is_refused() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    for index, character in enumerate(GOOD):
        for replacement in {alphabet[(alphabet.index(character) + 1) % len(alphabet)], "."} - {character}:
            token = GOOD[:index] + replacement + GOOD[index + 1:]
            assert _reference(token) == INVALID, (index, replacement)
            assert _ours(token) == INVALID, (index, replacement)
