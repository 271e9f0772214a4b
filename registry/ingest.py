"""Streaming NDJSON ingestion of scenario records: `POST /ingest/scenarios/{code}/records`.

Each line is `{"subject", "quantity", "occurredAt", "externalRef"}`; lines are indexed from 0 and
blank lines are skipped (their index is not reused). The body is read and applied in chunks, each
its own transaction, so memory stays bounded however long the body; a chunk once committed stays
committed, and sending the same body again answers its accepted lines as duplicates. The answer
is the same per-item result as submitScenarioRecords: `{"accepted", "duplicates", "rejected":
[{"index", "code", "message"}]}`; rejections are spooled to a temporary file, not kept in memory.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.auth import principal_from_header
from app.errors import AccessError, DomainError, NotFound, Unauthenticated
from app.settings import get_settings
from registry import rules
from registry.records import Terms, scenario_terms
from registry.records_sql import apply_chunk
from registry.rules import Item, Outcome, Rejection

log = logging.getLogger(__name__)

CHUNK_LINES = 10_000
MAX_LINE = 64 * 1024
SPOOL_BYTES = 1 << 20


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)
_STATUS = {"UNAUTHENTICATED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "INVALID_STATE": 409}


def _error(code: str, message: str, **extra: Any) -> JSONResponse:
    status = _STATUS.get(code, 400)
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"code": code, "message": message, **extra}, status, headers=headers)


def parse_line(index: int, line: bytes, grams_per_unit: int) -> Item | Rejection:
    """One NDJSON line as a checked item, or its INVALID_INPUT rejection (never an exception)."""
    try:
        obj = _DECODER.decode(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return rules.invalid(index, "The line is not valid JSON.")
    return rules.item_from_json(index, obj, grams_per_unit)


async def read_chunks(
    body: AsyncIterator[bytes], grams_per_unit: int, size: int = CHUNK_LINES
) -> AsyncIterator[list[Item | Rejection]]:
    """Checked entries of the body's lines, `size` lines at a time."""
    chunk: list[Item | Rejection] = []
    pending = b""
    index = 0
    skipping = False  # inside a line already rejected as too long
    async for data in body:
        pending += data
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if skipping:
                skipping = False
                continue
            if line.strip():
                chunk.append(parse_line(index, line, grams_per_unit))
            index += 1
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if len(pending) > MAX_LINE and not skipping:
            chunk.append(rules.invalid(index, f"The line is longer than {MAX_LINE} bytes."))
            index += 1
            skipping = True
            pending = b""
        elif skipping:
            pending = b""
    if pending.strip() and not skipping:
        chunk.append(parse_line(index, pending, grams_per_unit))
    if chunk:
        yield chunk


class _Result:
    """Running counts of the whole body, with rejections spooled to a temporary file."""

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        # Closed by body() once sent, or by the handler when the request fails.
        self.spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115

    def add(self, outcome: Outcome) -> None:
        self.accepted += outcome.accepted
        self.duplicates += outcome.duplicates
        for r in outcome.rejected:
            if self.rejected:
                self.spool.write(b",")
            self.spool.write(orjson.dumps({"index": r.index, "code": r.code, "message": r.message}))
            self.rejected += 1

    async def body(self) -> AsyncIterator[bytes]:
        try:
            head = {"accepted": self.accepted, "duplicates": self.duplicates}
            yield orjson.dumps(head)[:-1] + b',"rejected":['
            self.spool.seek(0)
            while block := self.spool.read(1 << 16):
                yield block
            yield b"]}"
        finally:
            self.spool.close()


async def ingest_scenario_records(request: Request) -> Response:
    """Apply an NDJSON body of records of the caller's published scenario, chunk by chunk."""
    settings = get_settings()
    try:
        principal = principal_from_header(request.headers.get("authorization"), settings)
        if principal is None:
            raise Unauthenticated()
        terms: Terms = await scenario_terms(principal, request.path_params["code"])
    except (AccessError, DomainError) as exc:
        if isinstance(exc, NotFound):
            return _error("NOT_FOUND", "No such scenario.")
        return _error(exc.code, exc.message)
    now = datetime.now(UTC)
    result = _Result()
    try:
        async for chunk in read_chunks(request.stream(), terms.grams_per_unit, CHUNK_LINES):
            result.add(await apply_chunk(terms, chunk, now))
    except DomainError as exc:
        result.spool.close()
        log.info("ingest of %s stopped: %s", terms.code, exc.message)
        return _error(exc.code, exc.message, accepted=result.accepted, duplicates=result.duplicates)
    except BaseException:
        result.spool.close()
        raise
    log.info(
        "ingested %s: %d accepted, %d duplicates, %d rejected",
        terms.code, result.accepted, result.duplicates, result.rejected,
    )
    return StreamingResponse(result.body(), media_type="application/json")
