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
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.auth import issue_token  # noqa: E402
from app.settings import load_settings  # noqa: E402

log = logging.getLogger("bench.convert")
SECRET = "bench-secret-for-the-convert-benchmark-0123456789"
PUHUI = str(Path(sys.executable).parent / "puhui")
CONVERT = ("mutation ConvertReductions($input: ConvertReductionsInput!) { convertReductions(input:"
           " $input) { conversion { id grams points createdAt } account { reductionGrams points }"
           " userErrors { code message field } } }")

WRK_SCRIPT = r"""
local threads = {}
local counter = 0
local tokens = {}
local query = QUERY
local grams = GRAMS
local run = RUN
local nthreads = NTHREADS

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  ok, refused, failed = 0, 0, 0
end

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

function done(summary, latency, requests)
  local sums = {ok = 0, refused = 0, failed = 0}
  for _, t in ipairs(threads) do
    sums.ok = sums.ok + t:get("ok")
    sums.refused = sums.refused + t:get("refused")
    sums.failed = sums.failed + t:get("failed")
  end
  io.write(string.format(
    'RESULT {"ok": %d, "refused": %d, "failed": %d, "requests": %d, "errors": %d,' ..
    ' "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    sums.ok, sums.refused, sums.failed, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
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
    parser.add_argument("--redis", default=None, help="PUHUI_REDIS_URL for the server (optional)")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    return parser.parse_args()


def _dsn(server: str, db: str) -> str:
    return f"{server.rstrip('/').replace('postgres://', 'postgresql://', 1)}/{db}"


async def seed(dsn: str, residents: int, grams_each: int) -> None:
    """`residents` residents with accounts, each credited `grams_each` g from one issued lot."""
    now = datetime.now(UTC)
    total = residents * grams_each
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "participant", columns=("kind", "subject", "display_name", "created_at"),
                records=[("individual", f"bench-conv-{i:07d}", f"Bench {i}", now)
                         for i in range(residents)],
            )
            await conn.execute(
                """INSERT INTO ledger_account (asset, kind, participant_id, balance, pending)
                   SELECT a.asset, 'holder', p.id,
                          CASE WHEN a.asset = 'REDUCTION_GRAMS' THEN $1::bigint ELSE 0 END, 0
                   FROM participant p
                   CROSS JOIN (VALUES ('REDUCTION_GRAMS'), ('POINTS')) AS a(asset)
                   WHERE p.kind = 'individual'""", grams_each)
            issuance = await conn.fetchval(
                "UPDATE ledger_account SET balance = balance + $1"
                " WHERE code = 'GRAMS_ISSUANCE' RETURNING id", -total)
            lot = await conn.fetchval(
                """INSERT INTO ledger_lot (serial_prefix, source_type, source_code, methodology_code,
                     methodology_version, methodology_class, vintage, issued_grams, created_at)
                   VALUES ($1, 'scenario', 'BENCH', 'BENCH-M', '1.0', 'II', 2026, $2, $3)
                   RETURNING id""", f"BENCH-{uuid.uuid4().hex[:10]}", total, now)
            reference = f"bench-lot:{lot}"
            await conn.execute(
                """INSERT INTO ledger_transfer (asset, kind, debit_account_id, credit_account_id,
                     amount, reference, memo, created_at)
                   SELECT 'REDUCTION_GRAMS', 'ISSUANCE', $1, a.id, a.balance, $2, '', $3
                   FROM ledger_account a WHERE a.kind = 'holder' AND a.asset = 'REDUCTION_GRAMS'
                   ORDER BY a.id""", issuance, reference, now)
            await conn.execute(
                """INSERT INTO ledger_entry (account_id, transfer_id, asset, kind, amount,
                     balance_after, memo, created_at)
                   SELECT credit_account_id, id, asset, kind, amount, amount, '', created_at
                   FROM ledger_transfer WHERE reference = $1
                   UNION ALL
                   SELECT debit_account_id, id, asset, kind, -amount,
                          -SUM(amount) OVER (ORDER BY id), '', created_at
                   FROM ledger_transfer WHERE reference = $1""", reference)
            await conn.execute(
                """INSERT INTO ledger_transfer_lot (transfer_id, lot_id, amount)
                   SELECT id, $1, amount FROM ledger_transfer WHERE reference = $2""",
                lot, reference)
            await conn.execute(
                """INSERT INTO ledger_lot_holding (account_id, lot_id, balance)
                   SELECT id, $1, balance FROM ledger_account
                   WHERE kind = 'holder' AND asset = 'REDUCTION_GRAMS'""", lot)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def write_tokens(path: Path, residents: int) -> None:
    """One resident token per line, in resident order."""
    settings = load_settings({"PUHUI_ENV": "development", "PUHUI_JWT_SECRET": SECRET})
    with path.open("w") as out:
        for i in range(residents):
            out.write(issue_token(f"bench-conv-{i:07d}", ["resident"], settings=settings) + "\n")


def write_script(path: Path, grams: int, threads: int) -> None:
    """The wrk Lua script sending ConvertReductions."""
    text = (WRK_SCRIPT.replace("QUERY", json.dumps(json.dumps(CONVERT)))
            .replace("NTHREADS", str(threads))
            .replace("GRAMS", json.dumps(str(grams)))
            .replace("RUN", json.dumps(uuid.uuid4().hex[:8])))
    path.write_text(text)


def start_server(env: dict[str, str], workers: int, port: int) -> subprocess.Popen[bytes]:
    """`puhui serve` in its own process group."""
    return subprocess.Popen([PUHUI, "serve", "--workers", str(workers), "--port", str(port)],
                            env=env, cwd=ROOT, start_new_session=True)


async def wait_healthy(base: str, server: subprocess.Popen[bytes], within: float = 60) -> None:
    """Wait until /healthz answers 200."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError("the server exited at start")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("the server did not become healthy")


def run_wrk(args: argparse.Namespace, script: Path, tokens: Path) -> dict:
    """Drive the load; wrk's RESULT line as a dict."""
    done = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
         "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{args.port}", "--", str(tokens)],
        capture_output=True, text=True, check=True,
    )
    for line in done.stderr.splitlines():
        if line.startswith("REFUSED "):
            log.warning("refused: %s", line[len("REFUSED "):][:500])
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"wrk printed no result: {done.stdout[-2000:]} {done.stderr[-2000:]}")


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


def ledger_verify(env: dict[str, str]) -> bool:
    """`puhui ledger verify` on the bench database."""
    done = subprocess.run([PUHUI, "ledger", "verify"], env=env, cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        log.error("ledger verify failed: %s", done.stdout[-2000:])
    return done.returncode == 0


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


async def run(args: argparse.Namespace) -> None:
    """The whole benchmark; the database is dropped at the end unless --keep."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    db = f"puhui_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_dsn(args.server, "postgres"))
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    env = {**os.environ, "PUHUI_DATABASE_URL": f"{args.server.rstrip('/')}/{db}",
           "PUHUI_ENV": "development", "PUHUI_JWT_SECRET": SECRET, "PUHUI_LOG_LEVEL": "WARNING"}
    env.pop("PUHUI_REDIS_URL", None)
    if args.redis:
        env["PUHUI_REDIS_URL"] = args.redis
    dsn = _dsn(args.server, db)
    server: subprocess.Popen[bytes] | None = None
    work = Path(tempfile.mkdtemp(prefix="puhui-bench-convert-"))
    try:
        await asyncio.to_thread(subprocess.run, [PUHUI, "migrate"], env=env, cwd=ROOT, check=True,
                                stdout=subprocess.DEVNULL)
        log.info("seeding %d residents with %d g each", args.residents, args.grams_each)
        await seed(dsn, args.residents, args.grams_each)
        write_tokens(work / "tokens.txt", args.residents)
        write_script(work / "convert.lua", args.grams, args.threads)
        server = start_server(env, args.workers, args.port)
        await wait_healthy(f"http://127.0.0.1:{args.port}", server)
        log.info("converting: %d connections for %d s", args.connections, args.duration)
        result = await asyncio.to_thread(run_wrk, args, work / "convert.lua", work / "tokens.txt")
        stop(server)
        server = None
        books = await check_books(dsn, args.grams_each, args.residents)
        verified = await asyncio.to_thread(ledger_verify, env)
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
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            admin = await asyncpg.connect(_dsn(args.server, "postgres"))
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()
        else:
            log.info("kept database %s", db)


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
