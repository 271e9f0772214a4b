"""Benchmark: a flash sale. N residents press "redeem" on one right of stock S at the same moment.

Creates a fresh PostgreSQL database, migrates it, gives N residents enough points (set-based SQL,
not measured), serves with `puhui serve --workers W` with Redis on, sets up a merchant and one
right of stock S through the API, warms the mall listing once, then opens C keep-alive
connections and sends every resident's RedeemRight (the contract text) exactly once, all
connections starting together. Prints attempts/s over the whole sale and p50/p99 latency, checks
that exactly S succeeded and every other attempt was OUT_OF_STOCK with no non-200 answer, stops
the server and runs `puhui ledger verify`.

In the same run, with the server stopped, a bare asyncpg loop (not the product) makes the same
number of attempts at the same concurrency, each one transaction: the conditional stock UPDATE
and, on success, a balance UPDATE and an order INSERT. Prints its attempts/s and p99 and the
ratio (target: the service at least half the bare loop's rate).

    .venv/bin/python bench/flash_sale.py --residents 2000 --stock 100      # a quick check
    .venv/bin/python bench/flash_sale.py                                    # 20,000 / 1,000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.mall_common import SECRET, graphql, merchant_with_rights
from bench.support import (
    Bench,
    LoadResult,
    all_at_once,
    cpu_seconds,
    free_port,
    post_bytes,
    run_load,
    seed_residents,
)
from tests.helpers import contract_operations

log = logging.getLogger("bench.flash_sale")
PREFIX = "bench-sale"


def parse_args() -> argparse.Namespace:
    """Sizes and places from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=20_000)
    parser.add_argument("--stock", type=int, default=1_000)
    parser.add_argument("--price", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL (a database is created on it and dropped)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/4", help="PUHUI_REDIS_URL")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    return parser.parse_args()


async def warm_listing(bench: Bench, base: str) -> None:
    """Every app opens the list first: one MallRights call fills the cache and the stock gate."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await graphql(client, "MallRights", {"first": 20}, bench.sign(f"{PREFIX}-0000000", ["resident"]))


def sale_requests(bench: Bench, args: argparse.Namespace, right_id: str) -> list[bytes]:
    """One RedeemRight per resident, prepared before the gun."""
    query = contract_operations()["RedeemRight"]
    return [
        post_bytes("127.0.0.1", args.port, bench.sign(f"{PREFIX}-{i:07d}", ["resident"]), {
            "query": query, "operationName": "RedeemRight",
            "variables": {"input": {"rightId": right_id, "quantity": 1, "idempotencyKey": f"sale-{i}"}},
        })
        for i in range(args.residents)
    ]


def classify(result: LoadResult) -> dict[str, int]:
    """Successes, OUT_OF_STOCK refusals and anything else."""
    counts = {"ok": 0, "out_of_stock": 0, "other": 0}
    for body in result.bodies:
        if b'"userErrors":[]' in body and b'"status":"ISSUED"' in body:
            counts["ok"] += 1
        elif b'"code":"OUT_OF_STOCK"' in body:
            counts["out_of_stock"] += 1
        else:
            counts["other"] += 1
            if counts["other"] <= 3:
                log.warning("unexpected answer: %s", body[:300])
    return counts


async def database_figures(bench: Bench) -> dict[str, int]:
    """Redemptions made, stock left and the merchant pool, from the database."""
    conn = await asyncpg.connect(bench.dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT COUNT(*) FROM mall_redemption) AS redemptions,
                      (SELECT COALESCE(SUM(stock_remaining), 0) FROM mall_right) AS stock_left,
                      (SELECT COUNT(DISTINCT participant_id) FROM mall_redemption) AS buyers,
                      (SELECT MIN(balance) FROM ledger_account WHERE kind = 'holder') AS lowest""")
    finally:
        await conn.close()
    return {k: int(v or 0) for k, v in dict(row).items()}


async def bare_loop(bench: Bench, attempts: int, stock: int, price: int, connections: int) -> LoadResult:
    """The comparator: per attempt one transaction, conditional stock UPDATE first, then on success
    a balance UPDATE and an order INSERT; `attempts` attempts over `connections` connections."""
    setup = await asyncpg.connect(bench.dsn)
    try:
        await setup.execute(
            """CREATE TABLE bare_right (id int PRIMARY KEY, stock int NOT NULL CHECK (stock >= 0));
               CREATE TABLE bare_balance (id int PRIMARY KEY, points bigint NOT NULL CHECK (points >= 0));
               CREATE TABLE bare_order (id bigserial PRIMARY KEY, resident int NOT NULL,
                                        right_id int NOT NULL, created_at timestamptz DEFAULT now())""")
        await setup.execute("INSERT INTO bare_right VALUES (1, $1)", stock)
        await setup.copy_records_to_table("bare_balance", records=[(i, price * 10) for i in range(attempts)])
        await setup.execute("ANALYZE")
    finally:
        await setup.close()
    pool = await asyncpg.create_pool(bench.dsn, min_size=connections, max_size=connections)
    result = LoadResult()
    todo = iter(range(attempts))
    start = asyncio.Event()

    async def user() -> None:
        async with pool.acquire() as conn:
            await start.wait()
            for resident in todo:
                began = time.perf_counter()
                async with conn.transaction():
                    taken = await conn.execute(
                        "UPDATE bare_right SET stock = stock - 1 WHERE id = 1 AND stock > 0")
                    if taken == "UPDATE 1":
                        await conn.execute(
                            "UPDATE bare_balance SET points = points - $2 WHERE id = $1", resident, price)
                        await conn.execute(
                            "INSERT INTO bare_order (resident, right_id) VALUES ($1, 1)", resident)
                result.latencies.append(time.perf_counter() - began)
                result.bodies.append(b"ok" if taken == "UPDATE 1" else b"out")

    await all_at_once([asyncio.create_task(user()) for _ in range(connections)], start, result)
    await pool.close()
    return result


async def run(args: argparse.Namespace) -> None:
    """The whole benchmark; the database is dropped at the end unless --keep."""
    args.port = args.port or free_port()
    base = f"http://127.0.0.1:{args.port}"
    async with Bench(args.server, SECRET, prefix="mallbench", redis=args.redis, keep=args.keep) as bench:
        log.info("seeding %d residents with %d points each", args.residents, args.price * 10)
        await seed_residents(bench, PREFIX, args.residents, points=args.price * 10)
        async with bench.serving(args.workers, args.port) as server:
            [right_id] = await merchant_with_rights(bench, base, 1, args.stock, args.price)
            await warm_listing(bench, base)
            requests = await asyncio.to_thread(sale_requests, bench, args, right_id)
            log.info("the sale: %d residents, stock %d, %d connections", args.residents, args.stock,
                     args.connections)
            cpu_before = cpu_seconds(server)
            sale = await run_load("127.0.0.1", args.port, requests, args.connections)
            server_cpu = cpu_seconds(server) - cpu_before
        counts = classify(sale)
        figures = await database_figures(bench)
        verified = await asyncio.to_thread(bench.ledger_verify)
        log.info("the bare asyncpg loop: %d attempts at %d connections", args.residents, args.connections)
        bare = await bare_loop(bench, args.residents, args.stock, args.price, args.connections)
        bare_ok = sum(1 for b in bare.bodies if b == b"ok")

        rate = args.residents / sale.seconds
        bare_rate = args.residents / bare.seconds
        print(f"flash sale: {args.residents} residents, stock {args.stock}, {args.connections} connections,"
              f" {args.workers} workers, Redis {'on' if args.redis else 'off'}")
        print(f"service    attempts/s {rate:8.0f}   p50 {sale.percentile(50) * 1000:7.1f} ms"
              f"   p99 {sale.percentile(99) * 1000:7.1f} ms   ({sale.seconds:.2f} s)")
        print(f"bare loop  attempts/s {bare_rate:8.0f}   p50 {bare.percentile(50) * 1000:7.1f} ms"
              f"   p99 {bare.percentile(99) * 1000:7.1f} ms   ({bare.seconds:.2f} s, {bare_ok} sold)")
        print(f"ratio service / bare loop: {rate / bare_rate:.2f} (target >= 0.5)")
        print(f"server CPU during the sale: {server_cpu:.1f} s, {server_cpu / args.residents * 1000:.2f} ms"
              " per attempt (a figure that does not depend on what else the machine runs)")
        print(f"answers: {counts['ok']} redeemed, {counts['out_of_stock']} OUT_OF_STOCK, "
              f"{counts['other']} other; HTTP statuses {sale.statuses}")
        print(f"database: {figures['redemptions']} redemptions by {figures['buyers']} residents, "
              f"stock left {figures['stock_left']}, lowest holder balance {figures['lowest']}")
        print(f"puhui ledger verify: {'ok' if verified else 'FAILED'}")
        exact = (counts["ok"] == args.stock == figures["redemptions"] == figures["buyers"]
                 and counts["out_of_stock"] == args.residents - args.stock and counts["other"] == 0
                 and sale.statuses == {200: args.residents} and figures["stock_left"] == 0)
        print(f"no oversell, every loser OUT_OF_STOCK, no 500s: {'yes' if exact else 'NO'}")
        if not (exact and verified and figures["lowest"] >= 0):
            raise SystemExit(1)


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvloop.run(run(parse_args()))


if __name__ == "__main__":
    main()
