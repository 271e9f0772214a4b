"""Idempotency records: a key fixes what a retry may do, inside the caller's transaction."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from app.errors import IdempotencyConflict, InvalidInput


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


class Claim:
    """A claimed key: either new (fill `complete`) or a replay carrying the first result."""

    def __init__(self, record: IdempotencyRecord, replay: bool) -> None:
        self.record = record
        self.replay = replay

    @property
    def result(self) -> Any:
        """The stored result of the first request (for a replay)."""
        return self.record.result

    async def complete(self, result: Any, conn: BaseDBAsyncClient) -> None:
        """Store the result of the first request, in the same transaction as its effects."""
        self.record.result = result
        await self.record.save(using_db=conn, update_fields=["result"])


async def claim(scope: str, key: str, payload: dict[str, Any], conn: BaseDBAsyncClient) -> Claim:
    """Claim (scope, key) in `conn`'s transaction; replay the first result or refuse a conflict."""
    key = check_key(key)
    digest = request_hash(payload)
    try:
        async with in_transaction(conn.connection_name) as savepoint:
            record = await IdempotencyRecord.create(
                scope=scope, key=key, request_hash=digest, using_db=savepoint
            )
        return Claim(record, replay=False)
    except IntegrityError:
        pass
    existing = await IdempotencyRecord.filter(scope=scope, key=key).using_db(conn).first()
    if existing is None:  # pragma: no cover - the conflicting row was rolled back meanwhile
        raise IdempotencyConflict("The idempotency key is in use; retry.", "idempotencyKey")
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            "This idempotency key was used with different input.", "idempotencyKey"
        )
    return Claim(existing, replay=True)
