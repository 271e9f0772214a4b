"""Streaming NDJSON ingestion of scenario records: `POST /ingest/scenarios/{code}/records`.

Each line is `{"subject", "quantity", "occurredAt", "externalRef"}`; lines are indexed from 0 and
blank lines are skipped (their index is not reused). The body is read and applied in chunks, each
its own transaction, so memory stays bounded however long the body; a chunk once committed stays
committed, and sending the same body again answers its accepted lines as duplicates. The answer
is the same per-item result as submitScenarioRecords: `{"accepted", "duplicates", "rejected":
[{"index", "code", "message"}]}`; rejections are spooled to a temporary file, not kept in memory.
While one chunk is being applied, the next one is read and parsed.

Lines are parsed by `LineParser`: plain lines (an object of the four fields, the quantity a
number of at most 15 significant digits) with orjson, every other line by the exact path
(`parse_line`: Python's json with Decimal numbers), which also words every rejection. Both give
the same item for a plain line: a number of at most 15 significant digits is the float orjson
reads, and that float's shortest repr is the number.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.accepting import Busy
from app.auth import principal_from_header_async
from app.errors import AccessError, DomainError, InvalidInput, NotFound, Unauthenticated
from app.settings import get_settings
from app.units import BIGINT_MAX
from registry import rules
from registry.records import apply_batch, scenario_terms
from registry.rules import Item, Outcome, Rejection, Terms

log = logging.getLogger(__name__)

CHUNK_LINES = 50_000
MAX_LINE = 64 * 1024
SPOOL_BYTES = 1 << 20
CACHE_SIZE = 100_000  # quantities and hours remembered by one parser
# Rejections listed in one answer at most. A rejection takes up to about 80 bytes of the answer
# while a rejected line may take 2 bytes of the body; past this many the stream stops, the
# chunks applied staying applied, so no body can make the answer (spooled to disk) unbounded.
MAX_REJECTED = 1_000_000
_TOO_LONG = f"The line is longer than {MAX_LINE} bytes."


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)
_STATUS = {"UNAUTHENTICATED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "INVALID_STATE": 409,
           "UNSUPPORTED_MEDIA_TYPE": 415, "INTERNAL_SERVER_ERROR": 500}


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


# Bytes of number characters become b"9", all others b" ": a line whose translation holds no
# run of 16 nines has no number of more than 15 significant digits.
_NUMBER_CHARS = bytes(0x39 if chr(c) in "0123456789." else 0x20 for c in range(256))
_LONG_NUMBER = b"9" * 16
_PLAIN_FLOATS = (1e-9, 1e12)  # orjson floats outside: the exact path (no underflow, no overflow)
# Date-times of this shape are read alike by fromisoformat (fast) and dateutil's isoparse (what
# the GraphQL DateTime scalar and the exact path use); any other text takes the exact path.
# (Out-of-range hours fail fromisoformat, which also sends the line to the exact path.)
_PLAIN_INSTANT = re.compile(
    r"[0-9]{4}-[0-9][0-9]-[0-9][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-2][0-9]:[0-5][0-9])"
).fullmatch


def long_numbers(data: bytes) -> bool:
    """True when `data` may hold a number of more than 15 significant digits."""
    return _LONG_NUMBER in data.translate(_NUMBER_CHARS)


class LineParser:
    """Parses the lines of one body, remembering quantities' grams and hours' Shanghai offsets."""

    def __init__(self, grams_per_unit: int) -> None:
        self.grams_per_unit = grams_per_unit
        self._quantities: dict[float, tuple[Decimal, int]] = {}
        self._offsets: dict[int, timedelta | None] = {}

    def parse(self, index: int, line: bytes, plain: bool = True) -> Item | Rejection:
        """One line as an item or its rejection; `plain=False` sends it to the exact path."""
        if plain:
            item = self._plain(index, line)
            if item is not None:
                return item
        return parse_line(index, line, self.grams_per_unit)

    def _plain(self, index: int, line: bytes) -> Item | None:
        """The item of a plain, well-formed line; None for anything else."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if type(obj) is not dict:
            return None
        subject, quantity = obj.get("subject"), obj.get("quantity")
        at, ref = obj.get("occurredAt"), obj.get("externalRef")
        if (
            type(subject) is not str
            or type(ref) is not str
            or type(at) is not str
            or not 0 < len(subject) <= rules.MAX_SUBJECT
            or not 0 < len(ref) <= rules.MAX_REF
            or "\x00" in subject
            or "\x00" in ref
        ):
            return None
        kind = type(quantity)
        if kind is float:
            if not _PLAIN_FLOATS[0] <= quantity < _PLAIN_FLOATS[1]:
                return None
        elif kind is not int or not 0 < quantity < _PLAIN_FLOATS[1]:
            return None
        known = self._quantities.get(quantity)
        if known is None:
            number = rules.as_decimal(quantity)
            if number is None:
                return None
            known = (number, rules.computed_grams(number, self.grams_per_unit))
            if known[1] > BIGINT_MAX:
                return None  # the exact path words the refusal
            if len(self._quantities) >= CACHE_SIZE:
                self._quantities.clear()
            self._quantities[quantity] = known
        if _PLAIN_INSTANT(at) is None:
            return None  # the exact path reads it as the GraphQL DateTime scalar does
        try:
            moment = datetime.fromisoformat(at).astimezone(UTC)
            return Item(index, subject, known[0], moment, ref, known[1], self._day(moment))
        except (ValueError, OverflowError):  # the exact path words the refusal
            return None

    def _day(self, moment: datetime) -> date:
        """rules.shanghai_day, with the offset remembered per hour when it holds the whole hour."""
        hour = moment.toordinal() * 24 + moment.hour
        if hour in self._offsets:
            offset = self._offsets[hour]
        else:
            start = moment.replace(minute=0, second=0, microsecond=0)
            offset = start.astimezone(rules.SHANGHAI).utcoffset()
            last = (start + timedelta(hours=1, microseconds=-1)).astimezone(rules.SHANGHAI)
            if last.utcoffset() != offset:
                offset = None  # a change of offset within this hour: no shortcut
            if len(self._offsets) >= CACHE_SIZE:
                self._offsets.clear()
            self._offsets[hour] = offset
        if offset is None:
            return rules.shanghai_day(moment)
        return (moment + offset).date()


async def read_chunks(
    body: AsyncIterator[bytes], grams_per_unit: int, size: int = CHUNK_LINES
) -> AsyncIterator[list[Item | Rejection]]:
    """Checked entries of the body's lines, `size` lines at a time."""
    parser = LineParser(grams_per_unit)
    chunk: list[Item | Rejection] = []
    pending = b""
    index = 0
    skipping = False  # inside a line already rejected as too long
    async for data in body:
        pending += data
        lines = pending.split(b"\n")
        pending = lines.pop()
        check = long_numbers(data) or long_numbers(lines[0]) if lines else False
        for line in lines:
            if skipping:
                skipping = False
                continue
            if len(line) > MAX_LINE:  # arrived whole in one piece of the body
                chunk.append(rules.invalid(index, _TOO_LONG))
            elif line.strip():
                chunk.append(parser.parse(index, line, not (check and long_numbers(line))))
            index += 1
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if len(pending) > MAX_LINE and not skipping:
            chunk.append(rules.invalid(index, _TOO_LONG))
            index += 1
            skipping = True
            pending = b""
        elif skipping:
            pending = b""
        await asyncio.sleep(0)  # let the chunk being applied go on meanwhile
    if pending.strip() and not skipping:
        chunk.append(parser.parse(index, pending, not long_numbers(pending)))
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

    def check_room(self) -> None:
        """INVALID_INPUT once more lines were rejected than one answer lists."""
        if self.rejected > MAX_REJECTED:
            raise InvalidInput(
                f"More than {MAX_REJECTED} lines were rejected, so the stream was stopped; what"
                " was accepted before stays accepted. Correct the data and send the rest again.")

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


_WINDING_DOWN: set[asyncio.Task[None]] = set()  # held here so that no pending one is collected


async def _wind_down(
    code: str, applying: asyncio.Task[Outcome] | None, result: _Result, why: str,
    handled: BaseException | None = None,
) -> None:
    """Wait for the chunk handed over when the stream stopped and count it if it was applied (a
    failure of its own is logged, unless it is the one being `handled`); then log how the
    stream stopped and what it kept."""
    if applying is not None:
        [last] = await asyncio.gather(applying, return_exceptions=True)
        if isinstance(last, Outcome):
            result.accepted += last.accepted
            result.duplicates += last.duplicates
        elif isinstance(last, DomainError):
            log.info("ingest of %s: the chunk in flight was refused: %s", code, last.message)
        elif not (applying.cancelled() or last is handled):
            log.error("ingest of %s: the chunk in flight failed", code, exc_info=last)
    log.warning("ingest of %s stopped: %s; the %d records accepted before stay accepted",
                code, why, result.accepted)


async def _shielded(winding_down: Coroutine[Any, Any, None]) -> None:
    """Run `winding_down` in a task of its own, awaited shielded: cancelling the request (again)
    neither cancels the chunk in flight nor loses the log line of what was kept."""
    task = asyncio.ensure_future(winding_down)
    _WINDING_DOWN.add(task)
    task.add_done_callback(_WINDING_DOWN.discard)
    await asyncio.shield(task)


async def ingest_scenario_records(request: Request) -> Response:
    """Apply an NDJSON body of records of the caller's published scenario, chunk by chunk."""
    with Busy():  # from its first instant, other workers take new connections first
        return await _ingest(request)


async def _ingest(request: Request) -> Response:
    if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
        return _error("UNSUPPORTED_MEDIA_TYPE",
                      "The body is read as plain NDJSON: send it without a Content-Encoding.")
    settings = get_settings()
    try:
        principal = await principal_from_header_async(request.headers.get("authorization"), settings)
        if principal is None:
            raise Unauthenticated()
        terms: Terms = await scenario_terms(principal, request.path_params["code"])
    except (AccessError, DomainError) as exc:
        if isinstance(exc, NotFound):
            return _error("NOT_FOUND", "No such scenario.")
        return _error(exc.code, exc.message)
    now = datetime.now(UTC)
    result = _Result()
    applying: asyncio.Task[Outcome] | None = None
    try:
        # A chunk's outcome is taken off `applying` before it is counted, so a failure while
        # counting it never counts it again below. A chunk is awaited shielded: cancelling the
        # request does not cancel the chunk, which is waited for and counted (`_wind_down`).
        async for chunk in read_chunks(request.stream(), terms.grams_per_unit, CHUNK_LINES):
            if applying is not None:
                outcome, applying = await asyncio.shield(applying), None
                result.add(outcome)
                result.check_room()
            applying = asyncio.create_task(apply_batch(terms, chunk, now))
        if applying is not None:
            outcome, applying = await asyncio.shield(applying), None
            result.add(outcome)
    except DomainError as exc:
        result.spool.close()
        log.info("ingest of %s stopped: %s", terms.code, exc.message)
        return _error(exc.code, exc.message, accepted=result.accepted, duplicates=result.duplicates)
    except ClientDisconnect:
        result.spool.close()
        await _shielded(_wind_down(terms.code, applying, result, "the client disconnected"))
        return Response(status_code=400)  # nobody is left to read it
    except Exception as exc:  # e.g. the database connection lost: logged once, answered with a code
        result.spool.close()
        log.exception("ingest of %s failed", terms.code)
        await _shielded(_wind_down(terms.code, applying, result, "an unexpected failure", exc))
        return _error(
            "INTERNAL_SERVER_ERROR",
            "The stream stopped on an unexpected failure; what was accepted before stays accepted."
            " Send the body again: the lines already counted answer as duplicates.",
            accepted=result.accepted, duplicates=result.duplicates)
    except BaseException:  # cancelled, as when the server stops: the chunk in flight goes on
        result.spool.close()
        await _shielded(_wind_down(terms.code, applying, result, "the request was cancelled"))
        raise
    log.info(
        "ingested %s: %d accepted, %d duplicates, %d rejected",
        terms.code, result.accepted, result.duplicates, result.rejected,
    )
    return StreamingResponse(result.body(), media_type="application/json")
