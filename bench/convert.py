"""Benchmark: residents converting reductions to points concurrently over HTTP, on PostgreSQL.

Creates a fresh database, migrates it, gives every resident grams in one issued lot (set-based
SQL, not measured), serves with `puhui serve --workers N`, and drives ConvertReductions with
`wrk` (apt-get install -y wrk) at C connections for D seconds: each request is one resident's
conversion with its own idempotency key, residents taken round robin so that all of them convert.
Prints successful conversions/s, p50/p99 latency (wrk's, per request), then stops the server,
runs `puhui ledger verify` and checks that the reserve holds exactly the grams converted.
Drops the database unless --keep.

    .venv/bin/python bench/convert.py --residents 300 --duration 3       # a quick check
    .venv/bin/python bench/convert.py                                     # 10,000 residents
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import Bench, require_wrk, run_wrk, seed_residents, wrk_script
from tests.helpers import contract_operations

log = logging.getLogger("bench.convert")
SECRET = "bench-secret-for-the-convert-benchmark-0123456789"
CONVERT = contract_operations()["ConvertReductions"]

HANDLERS = r"""
function request()
  local i = (counter * nthreads + tid) % #tokens + 1
  counter = counter + 1
  local body = '{"query":' .. query .. ',"variables":{"input":{"grams":"' .. grams ..
    '","idempotencyKey":"' .. run .. '-' .. tid .. '-' .. counter .. '"}}}'
  return wrk.format("POST", "/graphql",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tokens[i]}, body)
end

function response(status, headers, body)
  if status ~= 200 then
    failed = failed + 1
  elseif string.find(body, '"userErrors":[]', 1, true) then
    ok = ok + 1
  else
    refused = refused + 1
    if refused <= 3 then io.stderr:write("REFUSED " .. body .. "\n") end
  end
end
"""


def parse_args() -> argparse.Namespace:
    """Sizes and places from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--grams-each", type=int, default=1_000, help="grams each resident holds")
    parser.add_argument("--grams", type=int, default=10, help="grams per conversion request")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL (a database is created on it and dropped)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/4",
                        help="PUHUI_REDIS_URL (several workers share their state through it)")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    return parser.parse_args()


def write_tokens(bench: Bench, path: Path, residents: int) -> None:
    """One resident token per line, in resident order."""
    with path.open("w") as out:
        for i in range(residents):
            out.write(bench.sign(f"bench-conv-{i:07d}", ["resident"]) + "\n")


def write_script(path: Path, grams: int, threads: int) -> None:
    """The wrk Lua script sending ConvertReductions."""
    path.write_text(wrk_script(
        {"query": json.dumps(json.dumps(CONVERT)), "grams": json.dumps(str(grams)),
         "run": json.dumps(uuid.uuid4().hex[:8]), "nthreads": str(threads)},
        ["ok", "refused", "failed"], HANDLERS))


async def check_books(dsn: str, grams_each: int, residents: int) -> dict:
    """Conversions, grams in the reserve and residents' grams: nothing created, nothing lost."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT COUNT(*) FROM points_conversion) AS conversions,
                      (SELECT COALESCE(SUM(grams), 0) FROM points_conversion) AS converted,
                      (SELECT COALESCE(SUM(points), 0) FROM points_conversion) AS points,
                      (SELECT balance FROM ledger_account WHERE code = 'CONVERSION_RESERVE')
                        AS reserve,
                      (SELECT SUM(balance) FROM ledger_account
                        WHERE kind = 'holder' AND asset = 'REDUCTION_GRAMS') AS held,
                      (SELECT COUNT(DISTINCT participant_id) FROM points_conversion) AS converters""")
    finally:
        await conn.close()
    figures = {k: int(v or 0) for k, v in dict(row).items()}
    figures["conserved"] = (figures["reserve"] == figures["converted"]
                            and figures["held"] + figures["reserve"] == grams_each * residents)
    return figures


async def run(args: argparse.Namespace) -> None:
    """The whole benchmark; the database is dropped at the end unless --keep."""
    require_wrk()
    async with Bench(args.server, SECRET, redis=args.redis, keep=args.keep) as bench:
        with tempfile.TemporaryDirectory(prefix="puhui-bench-convert-") as tmp:
            work = Path(tmp)
            log.info("seeding %d residents with %d g each", args.residents, args.grams_each)
            await seed_residents(bench, "bench-conv", args.residents, grams=args.grams_each)
            write_tokens(bench, work / "tokens.txt", args.residents)
            write_script(work / "convert.lua", args.grams, args.threads)
            async with bench.serving(args.workers, args.port):
                log.info("converting: %d connections for %d s", args.connections, args.duration)
                result = await asyncio.to_thread(run_wrk, args.port, args.threads, args.connections,
                                                 args.duration, work / "convert.lua", work / "tokens.txt")
        books = await check_books(bench.dsn, args.grams_each, args.residents)
        verified = await asyncio.to_thread(bench.ledger_verify)
    seconds = result["duration_us"] / 1e6
    print(f"residents {args.residents}, {args.connections} connections, "
          f"{args.workers} workers, {args.duration} s")
    print(f"conversions/s  {result['ok'] / seconds:9.0f}   ({result['ok']} ok, "
          f"{result['refused']} refused, {result['failed']} non-200, "
          f"{result['errors']} socket errors)")
    print(f"latency p50    {result['p50_us'] / 1000:9.1f} ms")
    print(f"latency p99    {result['p99_us'] / 1000:9.1f} ms")
    print(f"residents who converted {books['converters']}; conversions in the database "
          f"{books['conversions']}; grams converted {books['converted']}; "
          f"reserve {books['reserve']}; conserved {books['conserved']}")
    print(f"puhui ledger verify: {'ok' if verified else 'FAILED'}")
    # wrk stops counting at the deadline; requests in flight then may still commit.
    if not (verified and books["conserved"] and books["conversions"] >= result["ok"]):
        raise SystemExit(1)


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
