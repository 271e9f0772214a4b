"""Idempotency records: a key fixes what a retry may do, inside the caller's transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from app.errors import IdempotencyConflict, InvalidInput
from app.sql import execute, fetch, insert_rows


class IdempotencyRecord(Model):
    """The first request made with (scope, key), its input hash and its result."""

    id = fields.BigIntField(primary_key=True)
    scope = fields.CharField(max_length=160)
    key = fields.CharField(max_length=128)
    request_hash = fields.CharField(max_length=64)
    result = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "idempotency_record"
        unique_together = (("scope", "key"),)


def request_hash(payload: dict[str, Any]) -> str:
    """A stable hash of a request's input."""
    raw = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def check_key(key: str) -> str:
    """Validate an idempotency key: 1 to 128 printable characters."""
    key = key.strip()
    if not 0 < len(key) <= 128 or not key.isprintable():
        raise InvalidInput("idempotencyKey must be 1 to 128 printable characters.", "idempotencyKey")
    return key


_CLAIM_COLUMNS = ("scope", '"key"', "request_hash", "result", "created_at")
_IF_NEW = ' ON CONFLICT (scope, "key") DO NOTHING RETURNING '
_FIRST = 'SELECT request_hash, result FROM idempotency_record WHERE scope = $1 AND "key" = $2'
_COMPLETE = "UPDATE idempotency_record SET result = $1 WHERE id = $2"
_CLAIMED = 'SELECT 1 FROM idempotency_record WHERE scope = $1 AND "key" = $2'


@dataclass
class Claim:
    """A claimed key: either new (fill `complete`) or a replay carrying the first result."""

    record_id: int | None
    replay: bool
    result: Any = None

    async def complete(self, result: Any, conn: BaseDBAsyncClient) -> None:
        """Store the result of the first request, in the same transaction as its effects."""
        await execute(_COMPLETE, [json.dumps(result), self.record_id], conn)


def _stored(result: Any) -> str | None:
    return None if result is None else json.dumps(result)


async def claim(
    scope: str, key: str, payload: dict[str, Any], conn: BaseDBAsyncClient, result: Any = None
) -> Claim:
    """Claim (scope, key) in `conn`'s transaction; replay the first result or refuse a conflict.

    A `result` known before the effects (a voucher code drawn in advance, say) is stored with
    the claim, so no `complete` is needed. One insert that yields to a concurrent claim of the
    same key (waiting for its transaction to end) instead of failing, so the caller's
    transaction is never aborted by it."""
    key = check_key(key)
    digest = request_hash(payload)
    now = datetime.now(UTC)
    rows = await insert_rows(conn, "idempotency_record", _CLAIM_COLUMNS,
                             [(scope, key, digest, _stored(result), now)], _IF_NEW + "id")
    if rows:
        return Claim(int(rows[0]["id"]), replay=False)
    first = await fetch(_FIRST, [scope, key], conn)
    if not first:  # pragma: no cover - the conflicting row was rolled back meanwhile
        raise IdempotencyConflict("The idempotency key is in use; retry.", "idempotencyKey")
    if first[0]["request_hash"] != digest:
        raise IdempotencyConflict(
            "This idempotency key was used with different input.", "idempotencyKey"
        )
    result = first[0]["result"]
    return Claim(None, replay=True, result=json.loads(result) if isinstance(result, str) else result)


async def claimed(scope: str, key: str) -> bool:
    """True when a committed request has claimed (scope, key) (one probe of its unique index)."""
    return bool(await fetch(_CLAIMED, [scope, check_key(key)]))


async def claim_new(
    claims: Sequence[tuple[str, str, dict[str, Any], Any]], conn: BaseDBAsyncClient
) -> set[tuple[str, str]]:
    """Claim several (scope, key, payload, result) at once in `conn`'s transaction; the
    (scope, key) pairs claimed now. A key claimed before is left as it was: its caller claims
    it alone (`claim`) to replay the first result or refuse a conflict."""
    now = datetime.now(UTC)
    rows = [(scope, check_key(key), request_hash(payload), _stored(result), now)
            for scope, key, payload, result in claims]
    returned = await insert_rows(conn, "idempotency_record", _CLAIM_COLUMNS, rows,
                                 _IF_NEW + 'scope, "key"')
    return {(row["scope"], row["key"]) for row in returned}
