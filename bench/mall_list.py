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
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.mall_common import SECRET, graphql, merchant_with_rights
from bench.support import Bench, free_port, require_wrk, run_wrk, wrk_script
from tests.helpers import contract_operations

log = logging.getLogger("bench.mall_list")

HANDLERS = r"""
function request()
  counter = counter + 1
  local token = tokens[(counter * 7 + tid) % #tokens + 1]
  return wrk.format("POST", "/graphql",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end

function response(status, headers, resp)
  if status == 200 and string.find(resp, expected, 1, true) then ok = ok + 1 else bad = bad + 1 end
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


async def run(args: argparse.Namespace) -> None:
    """The whole benchmark; the database is dropped at the end unless --keep."""
    require_wrk()
    args.port = args.port or free_port()
    base = f"http://127.0.0.1:{args.port}"
    async with (Bench(args.server, SECRET, prefix="mallbench", redis=args.redis or None,
                      keep=args.keep) as bench,
                bench.serving(args.workers, args.port)):
        ids = await merchant_with_rights(bench, base, args.rights, 1_000, 10)
        tokens = [bench.sign(f"bench-list-{i:06d}", ["resident"]) for i in range(args.tokens)]
        variables = {"first": args.page}
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            first = await graphql(client, "MallRights", variables, tokens[0])
        edges = first["rights"]["edges"]
        if len(edges) != min(args.page, args.rights) or edges[0]["node"]["id"] != ids[-1]:
            raise SystemExit("the first page is not what was listed")
        body = json.dumps({"query": contract_operations()["MallRights"], "operationName": "MallRights",
                           "variables": variables})
        with tempfile.TemporaryDirectory(prefix="puhui-bench-mall-list-") as tmp:
            work = Path(tmp)
            (work / "tokens.txt").write_text("\n".join(tokens) + "\n")
            (work / "list.lua").write_text(wrk_script(
                {"body": json.dumps(body), "expected": json.dumps(ids[-1])}, ["ok", "bad"], HANDLERS))
            log.info("listing: %d connections for %d s", args.connections, args.duration)
            result = await asyncio.to_thread(run_wrk, args.port, args.threads, args.connections,
                                             args.duration, work / "list.lua", work / "tokens.txt")
    seconds = result["duration_us"] / 1e6
    print(f"mall listing: {args.rights} rights, first {args.page}, {args.connections} connections, "
          f"{args.workers} workers, Redis {'on' if args.redis else 'off'}, {args.duration} s")
    print(f"req/s       {result['requests'] / seconds:9.0f}   ({result['ok']} right pages, "
          f"{result['bad']} other answers, {result['errors']} socket errors)")
    print(f"latency p50 {result['p50_us'] / 1000:9.1f} ms")
    print(f"latency p99 {result['p99_us'] / 1000:9.1f} ms")
    if result["bad"] or result["errors"]:
        raise SystemExit(1)


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
