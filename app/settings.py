"""Settings read once from the environment; bad values stop the process with a one-line reason."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key

ENVIRONMENTS = ("development", "test", "production")
DEV_SECRET = "puhui-development-secret-change-me-0123456789"
_DIGITS = re.compile(r"[0-9]+")


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


@dataclass(frozen=True)
class Settings:
    """Everything the process needs from its environment."""

    env: str = "development"
    database_url: str = "sqlite://var/puhui.sqlite3"
    redis_url: str | None = None
    jwt_secret: str | None = DEV_SECRET
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str = "puhui-dev"
    jwt_audience: str = "puhui"
    db_pool_size: int = 20
    log_level: str = "INFO"
    cors_origins: tuple[str, ...] = field(default_factory=tuple)

    @property
    def production(self) -> bool:
        """True when running in production (errors masked, introspection off)."""
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite://")

    @property
    def jwt_algorithms(self) -> list[str]:
        """The algorithms tokens may be signed with: pinned, never taken from the token."""
        if self.jwt_public_key:
            return [public_key_algorithm(self.jwt_public_key)]
        if self.jwt_jwks_url:
            return ["RS256", "ES256"]
        return ["HS256"]


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


@lru_cache(maxsize=8)
def load_public_key(pem: str) -> PublicKeyTypes:
    """The public key of PEM text (parsed once per text)."""
    return load_pem_public_key(pem.encode())


@lru_cache(maxsize=8)
def public_key_algorithm(pem: str) -> str:
    """RS256 for an RSA key of 2048 bits or more, ES256 for a P-256 key; SettingsError otherwise."""
    try:
        key = load_public_key(pem)
    except (ValueError, TypeError):
        raise SettingsError("PUHUI_JWT_PUBLIC_KEY is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise SettingsError("PUHUI_JWT_PUBLIC_KEY: RSA keys must have at least 2048 bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise SettingsError("PUHUI_JWT_PUBLIC_KEY must be an RSA (RS256) or P-256 (ES256) public key")


def _public_key(raw: str | None) -> str | None:
    """The PEM text of PUHUI_JWT_PUBLIC_KEY: the PEM itself (newlines may be written \\n) or a file."""
    if not raw:
        return None
    text = raw.strip().replace("\\n", "\n")
    if not text.startswith("-----BEGIN"):
        path = Path(text)
        try:
            text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        except (OSError, UnicodeDecodeError):  # a name too long, an unreadable file, not text
            text = ""
        if not text:
            raise SettingsError("PUHUI_JWT_PUBLIC_KEY must be a PEM public key or the path of a PEM file")
    public_key_algorithm(text)
    return text + "\n"


def _database_url(raw: str | None) -> str:
    url = raw or "sqlite://var/puhui.sqlite3"
    scheme = url.split("://", 1)[0] if "://" in url else "none"
    if url.startswith("postgresql://"):
        url = "postgres://" + url[len("postgresql://") :]
    if url.startswith("sqlite://"):
        if not url[len("sqlite://") :].split("?", 1)[0]:
            raise SettingsError("PUHUI_DATABASE_URL sqlite://PATH needs a file path")
        return url
    if not url.startswith(("postgres://", "asyncpg://")):
        raise SettingsError(
            "PUHUI_DATABASE_URL must be sqlite://PATH or postgres://USER@HOST:PORT/DB, "
            f"got scheme {scheme!r}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError("PUHUI_DATABASE_URL has a malformed host or port") from None
    if not parts.hostname or not parts.path.strip("/"):
        raise SettingsError("PUHUI_DATABASE_URL must name a host and a database: postgres://USER@HOST:PORT/DB")
    if port == 0:
        raise SettingsError("PUHUI_DATABASE_URL has port 0")
    return url


def _redis_url(raw: str | None) -> str | None:
    """PUHUI_REDIS_URL as redis-py reads it: redis://HOST:PORT/DB, rediss://... or unix://PATH?db=DB."""
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("PUHUI_REDIS_URL must start with redis://, rediss:// or unix://")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise SettingsError(
            "PUHUI_REDIS_URL has a malformed host or port (ports are 1 to 65535): redis://HOST:PORT/DB"
        ) from None
    if port == 0:
        raise SettingsError("PUHUI_REDIS_URL has port 0 (ports are 1 to 65535)")
    dbs = parse_qs(parts.query).get("db", [])
    if parts.scheme == "unix":
        if not parts.path.strip("/"):
            raise SettingsError("PUHUI_REDIS_URL unix://PATH needs the socket's path")
    else:
        if not parts.hostname:
            raise SettingsError("PUHUI_REDIS_URL must name a host: redis://HOST:PORT/DB")
        if parts.path not in ("", "/"):
            dbs.append(parts.path[1:])
    if not all(_DIGITS.fullmatch(db) for db in dbs):
        raise SettingsError(
            "PUHUI_REDIS_URL's database must be a whole number from 0: redis://HOST:PORT/DB"
        )
    from redis.asyncio.connection import parse_url  # only when Redis is configured

    try:
        parse_url(raw)  # the values of its other options (socket_timeout=, ...)
    except ValueError as exc:
        raise SettingsError(f"PUHUI_REDIS_URL: {exc}") from None
    return raw


def _http_url(name: str, raw: str | None) -> str | None:
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// URL")
    return raw


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build Settings from an environment mapping, raising SettingsError on any bad value."""
    env = dict(os.environ if env is None else env)
    mode = env.get("PUHUI_ENV", "development") or "development"
    if mode not in ENVIRONMENTS:
        raise SettingsError(f"PUHUI_ENV must be one of {', '.join(ENVIRONMENTS)}, got {mode!r}")

    database_url = _database_url(env.get("PUHUI_DATABASE_URL"))

    redis_url = _redis_url(env.get("PUHUI_REDIS_URL"))

    secret = env.get("PUHUI_JWT_SECRET") or None
    public_key = _public_key(env.get("PUHUI_JWT_PUBLIC_KEY"))
    jwks_url = _http_url("PUHUI_JWT_JWKS_URL", env.get("PUHUI_JWT_JWKS_URL"))
    if public_key and jwks_url:
        raise SettingsError("set PUHUI_JWT_PUBLIC_KEY or PUHUI_JWT_JWKS_URL, not both")
    if mode == "production":
        if not (public_key or jwks_url):
            raise SettingsError(
                "production needs PUHUI_JWT_PUBLIC_KEY or PUHUI_JWT_JWKS_URL (RS256/ES256 tokens)"
            )
        if not (env.get("PUHUI_JWT_ISSUER") and env.get("PUHUI_JWT_AUDIENCE")):
            raise SettingsError(
                "production needs PUHUI_JWT_ISSUER and PUHUI_JWT_AUDIENCE: the iss and aud the"
                " identity provider puts in its tokens"
            )
        secret = None
    elif not (secret or public_key or jwks_url):
        secret = DEV_SECRET
    if secret is not None and len(secret) < 32:
        raise SettingsError("PUHUI_JWT_SECRET must be at least 32 characters")

    log_level = (env.get("PUHUI_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"PUHUI_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level}")
    if log_level == "DEBUG" and mode == "production":
        raise SettingsError(
            "PUHUI_LOG_LEVEL=DEBUG is refused in production: the database layer logs query"
            " parameters (personal data) at DEBUG"
        )

    origins = tuple(o.strip().rstrip("/") for o in env.get("PUHUI_CORS_ORIGINS", "").split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SettingsError(f"PUHUI_CORS_ORIGINS entries must be http(s) origins, got {origin!r}")

    return Settings(
        env=mode,
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_jwks_url=jwks_url,
        jwt_issuer=env.get("PUHUI_JWT_ISSUER") or "puhui-dev",
        jwt_audience=env.get("PUHUI_JWT_AUDIENCE") or "puhui",
        db_pool_size=_int(env, "PUHUI_DB_POOL_SIZE", 20, 1, 500),
        log_level=log_level,
        cors_origins=origins,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file path for a sqlite:// URL, or None for other databases."""
    if not settings.is_sqlite:
        return None
    raw = settings.database_url[len("sqlite://") :].split("?", 1)[0]
    return None if raw == ":memory:" else Path(raw)
