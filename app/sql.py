"""Raw SQL written once with `$n` placeholders, run on PostgreSQL or SQLite."""

from __future__ import annotations

import re
from collections.abc import Sequence
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


# Parameters per statement: under SQLite's 32,766 and PostgreSQL's 32,767.
MAX_PARAMETERS = 30_000


def _insert(
    table: str, columns: Sequence[str], rows: Sequence[Sequence[object]], tail: str = ""
) -> tuple[str, list[object]]:
    """A multi-row INSERT with `$n` placeholders and its flat parameter list."""
    width = len(columns)
    values = ", ".join(
        "(" + ", ".join(f"${n * width + k + 1}" for k in range(width)) + ")" for n in range(len(rows))
    )
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}{tail}"
    return statement, [value for row in rows for value in row]


async def insert_rows(
    conn: BaseDBAsyncClient,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    tail: str = "",
) -> list[dict]:
    """Insert rows with as few multi-row INSERTs as the parameter limit allows (`tail` follows
    the VALUES: ON CONFLICT, RETURNING); what the statements returned."""
    per_statement = MAX_PARAMETERS // len(columns)
    returned: list[dict] = []
    for start in range(0, len(rows), per_statement):
        returned += await fetch(*_insert(table, columns, rows[start : start + per_statement], tail), conn)
    return returned


def as_datetime(value: datetime | str | None) -> datetime | None:
    """A timestamp from a raw row: PostgreSQL gives datetimes, SQLite gives ISO text (UTC)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
