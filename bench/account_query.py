"""Benchmark: the resident's account query (contract MyAccount) over HTTP, against a bare endpoint.

In one run, on PostgreSQL:
1. creates its own database, migrates it with `puhui migrate`, and seeds --residents residents
   (bulk SQL, not measured) with grams issued from one lot, points, experience, a growth-level
   table, and their credit standings computed by the product's own code;
2. serves `puhui serve --workers W` and drives the contract's MyAccount query text (read from
   ../shared/contract/operations.graphql, which tests/api/test_contract.py validates) with `wrk`
   at C connections, each request with the next resident's token (a Lua script
   rotating through all tokens), after a warm-up;
3. serves, under the same uvicorn settings (W workers sharing sockets opened as `puhui serve`
   opens them and takes their connections, no access log, proxy headers), a bare
   Starlette endpoint defined in this file (not in the product) that verifies the same HS256 JWT
   (pinned algorithm, issuer, audience, required claims) on every request and reads the same rows
   with asyncpg in one statement (participant, balances, experience, level table, credit row);
4. prints req/s, p50 and p99 (wrk's latency percentiles) for both, and the ratio of req/s.
Targets from the issue: GraphQL at least half the bare endpoint's req/s; p99 under 50 ms.

wrk is needed (`apt-get install -y wrk`).
wrk shares the machine's cores with the server: compare figures only within one run.

    .venv/bin/python bench/account_query.py --residents 500 --duration 5 --warmup 2   # quick
    .venv/bin/python bench/account_query.py                                             # full
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import accepting, listening
from bench.support import (
    ROOT,
    Bench,
    add_residents,
    free_ports,
    require_wrk,
    run_wrk,
    serving,
    wrk_script,
)
from tests.helpers import contract_operations

SECRET = "bench-secret-for-the-account-query-benchmark-0123456789"
ISSUER, AUDIENCE = "puhui-bench", "puhui"
PREFIX = "bench-acct"
SUBJECT = PREFIX + "-{:07d}"
LEVELS = [("L1", "Seedling", 0), ("L2", "Sapling", 500), ("L3", "Grove", 2_000),
          ("L4", "Forest", 10_000)]
log = logging.getLogger("bench.account_query")

HANDLERS = r"""
function request()
  local i = (counter * nthreads + tid) % #tokens + 1
  counter = counter + 1
  return wrk.format("POST", path,
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tokens[i]}, body)
end

function response(status, headers, body)
  if status == 200 and not string.find(body, '"errors"', 1, true) then
    ok = ok + 1
  else
    failed = failed + 1
  end
end
"""

# ---------------------------------------------------------------- the bare endpoint (not product)

BARE_SQL = """
SELECT pt.id AS id, pt.display_name AS display_name,
       COALESCE(g.balance, 0) - COALESCE(g.pending, 0) AS grams,
       COALESCE(p.balance, 0) - COALESCE(p.pending, 0) AS points,
       COALESCE(x.total, 0) AS experience, c.score AS score, c.grade AS grade,
       l.code AS level_code, l.name AS level_name, l.min_experience AS level_min
FROM participant pt
LEFT JOIN ledger_account g ON g.participant_id = pt.id AND g.asset = 'REDUCTION_GRAMS'
LEFT JOIN ledger_account p ON p.participant_id = pt.id AND p.asset = 'POINTS'
LEFT JOIN points_experience x ON x.participant_id = pt.id
LEFT JOIN points_credit_standing c ON c.participant_id = pt.id
LEFT JOIN points_growth_level l ON 1 = 1
WHERE pt.subject = $1
ORDER BY l.min_experience
"""


def _bare_account(rows: list[asyncpg.Record]) -> dict[str, Any]:
    first = rows[0]
    levels = [{"code": r["level_code"], "name": r["level_name"], "minExperience": r["level_min"]}
              for r in rows if r["level_code"] is not None]
    reached = [lv for lv in levels if lv["minExperience"] <= first["experience"]]
    following = [lv for lv in levels if lv["minExperience"] > first["experience"]]
    return {"me": {
        "id": str(first["id"]),
        "displayName": first["display_name"],
        "account": {
            "reductionGrams": str(first["grams"]),
            "points": str(first["points"]),
            "experience": first["experience"],
            "level": reached[-1] if reached else None,
            "nextLevel": following[0] if following else None,
            "creditStanding": ({"score": first["score"], "grade": first["grade"]}
                               if first["score"] is not None else None),
        },
    }}


def bare_app() -> Starlette:
    """The bare endpoint: verify the JWT, read the rows with asyncpg, answer JSON (uvicorn factory)."""
    dsn = os.environ["BENCH_DSN"]
    pool_size = int(os.environ["BENCH_POOL_SIZE"])
    state: dict[str, asyncpg.Pool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
        yield
        await state["pool"].close()

    async def account(request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            claims = jwt.decode(value, SECRET, algorithms=["HS256"], audience=AUDIENCE,
                                issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "iss", "aud"]})
        except jwt.PyJWTError:
            return JSONResponse({"errors": [{"message": "unauthenticated"}]}, status_code=401)
        rows = await state["pool"].fetch(BARE_SQL, claims["sub"])
        if not rows:
            return JSONResponse({"errors": [{"message": "unknown resident"}]}, status_code=404)
        return JSONResponse({"data": _bare_account(rows)})

    async def healthz(request: Request) -> Response:
        await state["pool"].fetchval("SELECT 1")
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/account", account, methods=["POST"]),
                             Route("/healthz", healthz)], lifespan=lifespan)


# ---------------------------------------------------------------- the run


def parse_args() -> argparse.Namespace:
    """Sizes and places from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=int, default=30, help="seconds measured per endpoint")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the duration is split in")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load before measuring")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=20,
                        help="database connections per worker, for both servers (default: puhui's"
                             " own PUHUI_DB_POOL_SIZE default; both run at once: 2 servers x"
                             " workers x pool must stay under max_connections)")
    parser.add_argument("--port", type=int, default=0,
                        help="GraphQL port, the bare one is +1 (default: two free ports)")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL (a database is created on it and dropped)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/4",
                        help="PUHUI_REDIS_URL (several workers share their state through it)")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    parser.add_argument("--serve-bare", type=int, metavar="PORT",
                        help="(used by the run itself) serve the bare endpoint on PORT")
    return parser.parse_args()


def serve_bare(port: int, workers: int) -> int:
    """Serve the bare endpoint as `puhui serve` serves the product (app.listening)."""
    config = uvicorn.Config("account_query:bare_app", factory=True, host="127.0.0.1", port=port,
                            workers=workers, access_log=False, proxy_headers=True,
                            log_level="warning", loop=accepting.loop_setting(workers),
                            http="httptools")
    return listening.serve(config, listening.bind("127.0.0.1", port, config.backlog))


async def seed(dsn: str, residents: int) -> None:
    """Residents with grams (one issued lot), points, experience, and a growth-level table."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await add_residents(conn, PREFIX, residents, now, grams="1000 + (p.id % 997) * 13",
                                points="p.id % 500", names="居民 {:05d}")
            await conn.execute(
                """INSERT INTO points_experience (participant_id, total, updated_at)
                   SELECT id, (id * 7) % 3000, $1 FROM participant WHERE kind = 'individual'""", now)
            await conn.executemany(
                "INSERT INTO points_growth_level (code, name, min_experience) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING", LEVELS)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def compute_credit(env: dict[str, str]) -> None:
    """Store every resident's credit standing with the product's own code (as readers would)."""
    code = ("import asyncio\n"
            "from app.db import close_db, init_db\n"
            "from app.participants import Participant\n"
            "from points.credit import recompute_many\n"
            "async def main():\n"
            "    await init_db()\n"
            "    ids = await Participant.filter(kind='individual').values_list('id', flat=True)\n"
            "    await recompute_many(ids)\n"
            "    await close_db()\n"
            "asyncio.run(main())\n")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)


def write_tokens(path: Path, residents: int) -> str:
    """One resident token per line, signed like the identity provider would (HS256 here);
    returns the first."""
    now = int(time.time())
    with path.open("w") as out:
        for i in range(residents):
            claims = {"sub": SUBJECT.format(i), "roles": ["resident"], "iss": ISSUER,
                      "aud": AUDIENCE, "iat": now, "exp": now + 6 * 3600}
            out.write(jwt.encode(claims, SECRET, algorithm="HS256") + "\n")
    return path.read_text().split("\n", 1)[0]


def write_script(path: Path, route: str, query: str, threads: int) -> None:
    """The wrk Lua script posting `query` to `route` with rotating tokens."""
    body = json.dumps({"query": query, "operationName": "MyAccount"})
    path.write_text(wrk_script({"path": json.dumps(route), "body": json.dumps(body),
                                "nthreads": str(threads)}, ["ok", "failed"], HANDLERS))


async def sample(base: str, route: str, query: str, first: str) -> dict[str, Any]:
    """One request with the first resident's token (both endpoints must agree on the figures)."""
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post(route, json={"query": query},
                                     headers={"authorization": f"Bearer {first}"})
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"{route} answered {response.status_code}: {response.text[:500]}")
    return body["data"]["me"]["account"]


@dataclass
class Target:
    """One endpoint under test: its server, route and wrk script, and its figures so far."""

    label: str
    command: list[str]
    port: int
    route: str
    script: Path
    rounds: list[dict[str, int]] = field(default_factory=list)

    def figures(self) -> tuple[float, float, float]:
        """req/s over every round, the median round's p50 and the worst round's p99 (ms)."""
        ok = sum(r["ok"] for r in self.rounds)
        seconds = sum(r["duration_us"] for r in self.rounds) / 1e6
        p50 = statistics.median(r["p50_us"] for r in self.rounds) / 1000
        p99 = max(r["p99_us"] for r in self.rounds) / 1000
        return ok / seconds, p50, p99


async def measure(args: argparse.Namespace, targets: list[Target], env: dict[str, str],
                  query: str, tokens: Path, first: str) -> list[dict[str, Any]]:
    """Serve every target at once, check one answer each, warm up, then measure in alternating
    rounds (so that load from elsewhere on the machine falls on both alike); stop the servers."""

    def load(target: Target, seconds: int) -> dict[str, int]:
        """wrk on the target for `seconds`."""
        return run_wrk(target.port, args.threads, args.connections, seconds, target.script, tokens)

    async with contextlib.AsyncExitStack() as servers:
        answers = []
        for target in targets:
            await servers.enter_async_context(serving(target.command, env, target.port))
            answers.append(await sample(f"http://127.0.0.1:{target.port}", target.route, query, first))
            if args.warmup > 0:
                await asyncio.to_thread(load, target, args.warmup)
        seconds = max(1, args.duration // args.rounds)
        for number in range(args.rounds):
            for target in targets:
                log.info("round %d/%d: %s, %d connections for %d s", number + 1, args.rounds,
                         target.label, args.connections, seconds)
                figures = await asyncio.to_thread(load, target, seconds)
                target.rounds.append(figures)
                log.info("round %d/%d: %s: %.0f req/s, p50 %.1f ms, p99 %.1f ms", number + 1, args.rounds,
                         target.label, figures["ok"] / (figures["duration_us"] / 1e6),
                         figures["p50_us"] / 1000, figures["p99_us"] / 1000)
    return answers


def report(target: Target) -> float:
    """Print one endpoint's figures; return its successful requests per second."""
    rate, p50, p99 = target.figures()
    failed = sum(r["failed"] for r in target.rounds)
    errors = sum(r["errors"] for r in target.rounds)
    print(f"{target.label:<9} {rate:9.0f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
          f"({failed} failed, {errors} socket errors)")
    return rate


async def run(args: argparse.Namespace) -> None:
    """The whole benchmark; the database is dropped at the end unless --keep."""
    require_wrk()
    bench = Bench(args.server, SECRET, prefix="puhui_bench_acct", redis=args.redis, keep=args.keep,
                  extra_env={"PUHUI_JWT_ISSUER": ISSUER, "PUHUI_JWT_AUDIENCE": AUDIENCE,
                             "PUHUI_DB_POOL_SIZE": str(args.pool_size),
                             "BENCH_POOL_SIZE": str(args.pool_size)})
    bench.extra_env["BENCH_DSN"] = bench.dsn
    async with bench:
        with tempfile.TemporaryDirectory(prefix="puhui-bench-account-") as tmp:
            work = Path(tmp)
            log.info("seeding %d residents", args.residents)
            await seed(bench.dsn, args.residents)
            await asyncio.to_thread(compute_credit, bench.env)
            first = write_tokens(work / "tokens.txt", args.residents)
            query = contract_operations()["MyAccount"].strip()
            graphql_port, bare_port = (args.port, args.port + 1) if args.port else free_ports(2)
            targets = [
                Target("GraphQL", bench.serve_command(args.workers, graphql_port), graphql_port,
                       "/graphql", work / "graphql.lua"),
                Target("bare", [sys.executable, __file__, "--serve-bare", str(bare_port),
                                "--workers", str(args.workers)],
                       bare_port, "/account", work / "bare.lua"),
            ]
            for target in targets:
                write_script(target.script, target.route, query, args.threads)
            graphql_account, bare_account = await measure(args, targets, bench.env, query,
                                                        work / "tokens.txt", first)
    agree = {k: graphql_account[k] == bare_account.get(k) for k in graphql_account}
    print(f"residents {args.residents}, {args.connections} connections, {args.workers} workers, "
          f"{args.rounds} alternating rounds, {args.duration} s each endpoint after "
          f"{args.warmup} s warm-up, PostgreSQL")
    print("query: the contract's MyAccount")
    graphql_rate = report(targets[0])
    bare_rate = report(targets[1])
    print(f"ratio     {graphql_rate / bare_rate:9.2f}  (GraphQL req/s / bare req/s; target >= 0.5;"
          f" p99 target < 50 ms; p50 is the median round's, p99 the worst round's)")
    print(f"same figures from both for the first resident: {all(agree.values())} "
          f"({', '.join(k for k, same in agree.items() if not same) or 'all fields'})")


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args()
    if args.serve_bare:
        raise SystemExit(serve_bare(args.serve_bare, args.workers))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
