"""Settings: good values load, bad ones raise SettingsError with a one-line reason."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.settings import DEV_SECRET, SettingsError, load_settings

SECRET = "s" * 40

PRODUCTION = {"PUHUI_ENV": "production", "PUHUI_JWT_ISSUER": "https://idp.example",
              "PUHUI_JWT_AUDIENCE": "puhui"}

def _pem(key: object) -> str:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


RSA_PEM = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PEM = _pem(ec.generate_private_key(ec.SECP256R1()))


def test_defaults_are_a_development_sqlite_service():
    settings = load_settings({})
    assert settings.env == "development"
    assert settings.is_sqlite and settings.database_url == "sqlite://var/puhui.sqlite3"
    assert settings.redis_url is None
    assert settings.jwt_secret == DEV_SECRET
    assert settings.jwt_algorithms == ["HS256"]
    assert not settings.production


def test_postgresql_urls_are_normalised():
    settings = load_settings({"PUHUI_DATABASE_URL": "postgresql://app@db.internal:5432/puhui"})
    assert settings.database_url == "postgres://app@db.internal:5432/puhui"
    assert not settings.is_sqlite


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PUHUI_ENV": "prod"}, "PUHUI_ENV"),
        ({"PUHUI_DATABASE_URL": "mysql://u@h/db"}, "PUHUI_DATABASE_URL"),
        ({"PUHUI_DATABASE_URL": "postgres.example.com"}, "PUHUI_DATABASE_URL"),
        ({"PUHUI_DATABASE_URL": "postgres://u@h:99999/db"}, "port"),
        ({"PUHUI_DATABASE_URL": "postgres://u@h:port/db"}, "port"),
        ({"PUHUI_DATABASE_URL": "postgres://u@h:5432/"}, "database"),
        ({"PUHUI_DATABASE_URL": "postgres:///db"}, "host"),
        ({"PUHUI_DATABASE_URL": "sqlite://"}, "path"),
        ({"PUHUI_REDIS_URL": "localhost:6379"}, "PUHUI_REDIS_URL"),
        ({"PUHUI_REDIS_URL": "redis://127.0.0.1:notaport/0"}, "port"),
        ({"PUHUI_REDIS_URL": "redis://127.0.0.1:99999/0"}, "port"),
        ({"PUHUI_REDIS_URL": "redis://127.0.0.1:0/0"}, "port 0"),
        ({"PUHUI_REDIS_URL": "redis://[::1/0"}, "malformed"),
        ({"PUHUI_REDIS_URL": "redis://:6379/0"}, "host"),
        ({"PUHUI_REDIS_URL": "redis://127.0.0.1:6379/x"}, "database"),
        ({"PUHUI_REDIS_URL": "redis://127.0.0.1:6379/-1"}, "database"),
        ({"PUHUI_REDIS_URL": "redis://127.0.0.1:6379?db=two"}, "database"),
        ({"PUHUI_REDIS_URL": "unix://"}, "path"),
        ({"PUHUI_REDIS_URL": "unix:///run/redis.sock?db=x"}, "database"),
        ({"PUHUI_REDIS_URL": "redis://127.0.0.1:6379/0?socket_timeout=soon"}, "socket_timeout"),
        ({"PUHUI_JWT_PUBLIC_KEY": "k" * 5000}, "path of a PEM file"),
        ({"PUHUI_JWT_SECRET": "too-short"}, "at least 32"),
        ({"PUHUI_ENV": "production"}, "PUHUI_JWT_PUBLIC_KEY or PUHUI_JWT_JWKS_URL"),
        ({"PUHUI_ENV": "production", "PUHUI_JWT_SECRET": SECRET}, "PUHUI_JWT_PUBLIC_KEY"),
        ({"PUHUI_JWT_PUBLIC_KEY": "not a key"}, "PEM"),
        ({"PUHUI_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"},
         "PEM"),
        ({"PUHUI_JWT_JWKS_URL": "ftp://idp/jwks"}, "http"),
        ({"PUHUI_JWT_PUBLIC_KEY": RSA_PEM, "PUHUI_JWT_JWKS_URL": "https://idp/jwks"}, "not both"),
        ({"PUHUI_DB_POOL_SIZE": "many"}, "whole number"),
        ({"PUHUI_DB_POOL_SIZE": "0"}, "between"),
        ({"PUHUI_LOG_LEVEL": "LOUD"}, "PUHUI_LOG_LEVEL"),
        ({"PUHUI_CORS_ORIGINS": "example.com"}, "PUHUI_CORS_ORIGINS"),
    ],
)
def test_bad_values_raise_a_one_line_reason(env, fragment):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


def test_a_database_password_never_appears_in_a_reason():
    with pytest.raises(SettingsError) as caught:
        load_settings({"PUHUI_DATABASE_URL": "postgres://app:hunter2-secret@h:bad/db"})
    assert "hunter2" not in str(caught.value)


def test_a_weak_rsa_key_is_refused():
    weak = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(SettingsError, match="2048"):
        load_settings({"PUHUI_JWT_PUBLIC_KEY": weak})


def test_an_ec_key_on_another_curve_is_refused():
    other = _pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(SettingsError, match="P-256"):
        load_settings({"PUHUI_JWT_PUBLIC_KEY": other})


def test_production_with_a_public_key_pins_its_algorithm_and_drops_the_secret():
    rsa_settings = load_settings({**PRODUCTION, "PUHUI_JWT_PUBLIC_KEY": RSA_PEM,
                                  "PUHUI_JWT_SECRET": SECRET})
    assert rsa_settings.production
    assert rsa_settings.jwt_secret is None
    assert rsa_settings.jwt_algorithms == ["RS256"]
    ec_settings = load_settings({**PRODUCTION, "PUHUI_JWT_PUBLIC_KEY": EC_PEM})
    assert ec_settings.jwt_algorithms == ["ES256"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"PUHUI_JWT_ISSUER": ""}, "PUHUI_JWT_ISSUER and PUHUI_JWT_AUDIENCE"),
        ({"PUHUI_JWT_AUDIENCE": ""}, "PUHUI_JWT_ISSUER and PUHUI_JWT_AUDIENCE"),
        ({"PUHUI_LOG_LEVEL": "debug"}, "DEBUG is refused in production"),
    ],
)
def test_production_needs_the_tokens_issuer_and_audience_and_no_debug_log(changes, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings({**PRODUCTION, "PUHUI_JWT_PUBLIC_KEY": RSA_PEM, **changes})
    assert load_settings({**PRODUCTION, "PUHUI_JWT_PUBLIC_KEY": RSA_PEM}).jwt_issuer == "https://idp.example"


def test_a_public_key_may_be_given_with_escaped_newlines_or_as_a_file(tmp_path):
    escaped = RSA_PEM.strip().replace("\n", "\\n")
    assert load_settings({"PUHUI_JWT_PUBLIC_KEY": escaped}).jwt_public_key == RSA_PEM
    path = tmp_path / "idp.pem"
    path.write_text(EC_PEM)
    settings = load_settings({"PUHUI_JWT_PUBLIC_KEY": str(path)})
    assert settings.jwt_public_key == EC_PEM
    assert settings.jwt_algorithms == ["ES256"]


def test_a_public_key_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "idp.der"
    path.write_bytes(b"0\x82\x01\"0\r\x06\t*\x86H\x86\xf7\r\x01\x01\x01\x05\x00\xff\xfe")
    with pytest.raises(SettingsError, match="path of a PEM file"):
        load_settings({"PUHUI_JWT_PUBLIC_KEY": str(path)})


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1",
        "redis://:hunter2@cache.internal:6380/15",
        "rediss://app:secret@cache.internal:6380/2?socket_timeout=2.5",
        "redis://127.0.0.1:6379?db=3",
        "unix:///run/redis/redis.sock?db=1",
    ],
)
def test_redis_urls_redis_py_reads_are_accepted(url):
    assert load_settings({"PUHUI_REDIS_URL": url}).redis_url == url


def test_a_redis_password_never_appears_in_a_reason():
    with pytest.raises(SettingsError) as caught:
        load_settings({"PUHUI_REDIS_URL": "redis://:hunter2-secret@cache:port/0"})
    assert "hunter2" not in str(caught.value)


def test_jwks_allows_rs256_and_es256_only():
    settings = load_settings({**PRODUCTION, "PUHUI_JWT_JWKS_URL": "https://idp.example/jwks.json"})
    assert settings.jwt_algorithms == ["RS256", "ES256"]
    assert settings.jwt_secret is None


def test_cors_origins_are_a_comma_separated_list():
    settings = load_settings({"PUHUI_CORS_ORIGINS": "https://ops.example/, http://localhost:3000"})
    assert settings.cors_origins == ("https://ops.example", "http://localhost:3000")
