"""Raw SQL written once with `$n` placeholders, run on PostgreSQL or SQLite."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from app.db import dialect

_PLACEHOLDER = re.compile(r"\$(\d+)")


def for_dialect(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The statement and parameters for the current database (`?` in order on SQLite)."""
    if dialect() == "postgres":
        return sql, params
    ordered = [params[int(m.group(1)) - 1] for m in _PLACEHOLDER.finditer(sql)] if params else []
    return _PLACEHOLDER.sub("?", sql), ordered


async def fetch(sql: str, params: list[Any], conn: BaseDBAsyncClient | None = None) -> list[dict]:
    """Rows of a query as dicts."""
    statement, values = for_dialect(sql, params)
    return await (conn or connections.get("default")).execute_query_dict(statement, values)


async def execute(sql: str, params: list[Any], conn: BaseDBAsyncClient | None = None) -> None:
    """Run a statement whose rows are not needed."""
    statement, values = for_dialect(sql, params)
    await (conn or connections.get("default")).execute_query(statement, values)


def as_datetime(value: datetime | str | None) -> datetime | None:
    """A timestamp from a raw row: PostgreSQL gives datetimes, SQLite gives ISO text (UTC)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
