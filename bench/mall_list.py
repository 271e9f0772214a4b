"""Benchmark: the mall listing (MallRights, first page) at C connections over HTTP.

Creates a fresh PostgreSQL database, migrates it, serves with `puhui serve --workers W` (Redis on
by default), lists R rights of one approved merchant through the API, then drives the contract's
MallRights query (first: P) with `wrk` (apt-get install -y wrk) at C connections for D seconds,
tokens of many residents taken round robin. Prints req/s, p50 and p99 (wrk's), checks that every
answer was a 200 with the page, and drops the database unless --keep.

    .venv/bin/python bench/mall_list.py --duration 3 --rights 30      # a quick check
    .venv/bin/python bench/mall_list.py                                # 64 connections, 20 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.mall_common import (  # noqa: E402
    Bench,
    contract_operations,
    free_port,
    graphql,
    merchant_with_rights,
    sign,
    stop,
    wait_healthy,
)

log = logging.getLogger("bench.mall_list")

WRK_SCRIPT = r"""
local threads = {}
local counter = 0
local tokens = {}
local body = BODY
local expected = EXPECTED

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  ok, bad = 0, 0
end

function request()
  counter = counter + 1
  local token = tokens[(counter * 7 + tid) % #tokens + 1]
  return wrk.format("POST", "/graphql",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end

function response(status, headers, resp)
  if status == 200 and string.find(resp, expected, 1, true) then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local sums = {ok = 0, bad = 0}
  for _, t in ipairs(threads) do
    sums.ok = sums.ok + t:get("ok")
    sums.bad = sums.bad + t:get("bad")
  end
  io.write(string.format(
    'RESULT {"ok": %d, "bad": %d, "requests": %d, "errors": %d, "duration_us": %d,' ..
    ' "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    sums.ok, sums.bad, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def parse_args() -> argparse.Namespace:
    """Sizes and places from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rights", type=int, default=50, help="rights listed")
    parser.add_argument("--page", type=int, default=20, help="MallRights first: N")
    parser.add_argument("--tokens", type=int, default=1_000, help="distinct resident tokens")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL (a database is created on it and dropped)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/4",
                        help="PUHUI_REDIS_URL ('' for the in-process stand-in)")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    return parser.parse_args()


def run_wrk(args: argparse.Namespace, script: Path, tokens: Path) -> dict:
    """Drive the load; wrk's RESULT line as a dict."""
    done = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
         "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{args.port}", "--", str(tokens)],
        capture_output=True, text=True, check=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"wrk printed no result: {done.stdout[-2000:]} {done.stderr[-2000:]}")


async def run(args: argparse.Namespace) -> None:
    """The whole benchmark; the database is dropped at the end unless --keep."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    args.port = args.port or free_port()
    bench = Bench(args.server, args.redis or None)
    await bench.create()
    server = None
    base = f"http://127.0.0.1:{args.port}"
    work = Path(tempfile.mkdtemp(prefix="puhui-bench-mall-list-"))
    try:
        server = bench.serve(args.workers, args.port)
        await wait_healthy(base, server)
        _, ids = await merchant_with_rights(base, args.rights, 1_000, 10)
        tokens = [sign(f"bench-list-{i:06d}", ["resident"]) for i in range(args.tokens)]
        (work / "tokens.txt").write_text("\n".join(tokens) + "\n")
        variables = {"first": args.page}
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            first = await graphql(client, "MallRights", variables, tokens[0])
        edges = first["rights"]["edges"]
        if len(edges) != min(args.page, args.rights) or edges[0]["node"]["id"] != ids[-1]:
            raise SystemExit("the first page is not what was listed")
        body = json.dumps({"query": contract_operations()["MallRights"], "operationName": "MallRights",
                           "variables": variables})
        (work / "list.lua").write_text(
            WRK_SCRIPT.replace("BODY", json.dumps(body)).replace("EXPECTED", json.dumps(ids[-1]))
        )
        log.info("listing: %d connections for %d s", args.connections, args.duration)
        result = await asyncio.to_thread(run_wrk, args, work / "list.lua", work / "tokens.txt")
        seconds = result["duration_us"] / 1e6
        print(f"mall listing: {args.rights} rights, first {args.page}, {args.connections} connections, "
              f"{args.workers} workers, Redis {'on' if args.redis else 'off'}, {args.duration} s")
        print(f"req/s       {result['requests'] / seconds:9.0f}   ({result['ok']} right pages, "
              f"{result['bad']} other answers, {result['errors']} socket errors)")
        print(f"latency p50 {result['p50_us'] / 1000:9.1f} ms")
        print(f"latency p99 {result['p99_us'] / 1000:9.1f} ms")
        if result["bad"] or result["errors"]:
            raise SystemExit(1)
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            await bench.drop()
        else:
            log.info("kept database %s", bench.db)


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
