"""Tortoise configuration and database lifecycle shared by the server, CLI and tests."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from tortoise import Tortoise, connections
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.api import migrate as migrate_api

from app.settings import Settings, get_settings, sqlite_path

log = logging.getLogger(__name__)

# Each domain is its own tortoise app with its own migrations package under migrations/.
APPS: dict[str, list[str]] = {
    "core": ["app.participants", "app.ledger.models", "app.idempotency", "app.audit"],
    "registry": ["registry.models"],
    "points": ["points.models"],
    "mall": ["mall.models"],
}


def _db_url(settings: Settings) -> str:
    url = settings.database_url
    if settings.is_sqlite:
        path = sqlite_path(settings)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return url
    if "maxsize=" not in url:
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}minsize=1&maxsize={settings.db_pool_size}"
    return url


class PooledConnection(asyncpg.Connection):
    """An asyncpg connection returned to the pool without the session-reset statement.

    asyncpg's default reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) is one more round
    trip on every release, i.e. on every request. Nothing here keeps session state: no advisory
    locks, LISTEN or session-level SET (only SET LOCAL), and cursors close with their
    transaction. An open transaction is still rolled back on release (asyncpg does that apart)."""

    def get_reset_query(self) -> str:
        """No reset statement: see the class docstring."""
        return ""


def _connection(settings: Settings) -> str | dict[str, Any]:
    url = _db_url(settings)
    if settings.is_sqlite:
        return url
    config = expand_db_url(url)
    config["credentials"]["connection_class"] = PooledConnection
    return config


def tortoise_config(settings: Settings | None = None) -> dict[str, Any]:
    """The Tortoise config dict for these settings, with every app and its migrations module."""
    settings = settings or get_settings()
    return {
        "connections": {"default": _connection(settings)},
        "apps": {
            label: {
                "models": models,
                "default_connection": "default",
                "migrations": f"migrations.{label}",
            }
            for label, models in APPS.items()
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def __getattr__(name: str) -> Any:
    """`app.db.TORTOISE_ORM` for the `tortoise` CLI (makemigrations), built from the settings."""
    if name == "TORTOISE_ORM":
        return tortoise_config()
    raise AttributeError(name)


async def init_db(settings: Settings | None = None) -> None:
    """Open the database connections for this process (no schema changes)."""
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)


async def close_db() -> None:
    """Close every database connection of this process."""
    await connections.close_all()


async def run_migrations(settings: Settings | None = None) -> None:
    """Apply every pending migration of every app, then close the connections."""
    await migrate_api(config=tortoise_config(settings))
    await connections.close_all()


def dialect() -> str:
    """'postgres' or 'sqlite', for the few places that write dialect SQL."""
    return "sqlite" if get_settings().is_sqlite else "postgres"
