"""Benchmark: stream scenario records through `POST /ingest/...`, then issue them, on PostgreSQL.

Creates a fresh database, migrates it, bulk-inserts authorized residents (setup, not measured),
serves with `puhui serve --workers N`, streams the records over a few concurrent requests, runs
one issuance through GraphQL, and prints records/s for both, the peak server RSS (summed over
the server's processes, read from /proc), and - in the same run - the time of a plain COPY of
the same rows into a bare table, with the ratio (ingest + issue) / COPY. Drops the database.

The COPY baseline loads the NDJSON's fields (subject, quantity, occurredAt, externalRef) the way
a plain loader does: `COPY bench_bare FROM STDIN (FORMAT csv)` from the CSV text of the rows
(psql's \copy does the same), timed from the first byte sent to the server's answer. The same
rows are also loaded by binary COPY from Python tuples (asyncpg's copy_records_to_table); the
ratio uses the CSV figure, since the benchmark's own input is text too, and the binary one is
printed beside it.

    .venv/bin/python bench/ingest.py --records 50000 --residents 5000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import REAPED, Bench, RssWatch, add_residents, postgres_cpu, worker_cpu

log = logging.getLogger("bench.ingest")
SECRET = "bench-secret-for-the-ingest-benchmark-0123456789"
ORG = "91310000MA1FL8XQ30"


@dataclass
class Figures:
    """What one run measured."""

    records: int
    accepted: int
    ingest_s: float
    issued_records: int
    issue_s: float
    copy_s: float
    copy_binary_s: float
    peak_rss_mb: float
    peak_total_rss_mb: float
    ingest_worker_cpu_s: list[float]
    ingest_cpu: Cpu
    issue_cpu: Cpu


@dataclass
class Cpu:
    """CPU seconds spent during one phase: by the server's workers, by PostgreSQL (None when it
    does not run on this machine), and by this benchmark's own process (the client); and the
    most one process spent, which no number of cores can spread."""

    workers: float
    postgres: float | None
    client: float
    busiest: float

    def line(self) -> str:
        """The figures as one printed line, with the wall time they need at the least."""
        spent = self.workers + (self.postgres or 0.0) + self.client
        least = max(spent / os.cpu_count(), self.busiest)
        postgres = "n/a" if self.postgres is None else f"{self.postgres:.2f} s"
        return (f"workers {self.workers:.2f} s, PostgreSQL {postgres}, client {self.client:.2f} s:"
                f" at least {least:.2f} s of wall on {os.cpu_count()} cores")


def _since(before: dict[int, float], now: dict[int, float]) -> dict[int, float]:
    """CPU seconds each process spent between two readings (new processes from zero)."""
    return {pid: spent - before.get(pid, 0.0) for pid, spent in now.items()}


class CpuWatch:
    """Reads the CPU time of the server's workers, PostgreSQL and this process around a phase."""

    def __init__(self, server: subprocess.Popen[bytes]) -> None:
        self.server = server
        self.workers = worker_cpu(server)
        self.postgres = postgres_cpu()
        self.client = time.process_time()

    def per_worker(self) -> list[float]:
        """CPU seconds of each worker since the start, the busiest first."""
        return sorted(_since(self.workers, worker_cpu(self.server)).values(), reverse=True)

    def spent(self) -> Cpu:
        """What was spent since the start."""
        workers = self.per_worker()
        now = postgres_cpu()
        postgres = None if now is None or self.postgres is None else _since(self.postgres, now)
        client = time.process_time() - self.client
        processes = [*workers, client, *(s for p, s in (postgres or {}).items() if p != REAPED)]
        return Cpu(sum(workers), None if postgres is None else sum(postgres.values()), client,
                   max(processes))


def parse_args() -> argparse.Namespace:
    """Sizes and places from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=2, help="concurrent ingest requests")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL (a database is created on it and dropped)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/4",
                        help="PUHUI_REDIS_URL (several workers share their state through it)")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    return parser.parse_args()


def make_rows(records: int, residents: int, seed: int = 7) -> list[tuple[str, float, datetime, str]]:
    """The records: (subject, quantity, occurredAt, externalRef), spread over the last 30 days."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(minutes=5)
    return [
        (
            f"bench-res-{rng.randrange(residents):07d}",
            round(rng.uniform(0.5, 30.0), rng.choice((1, 2))),
            now - timedelta(seconds=rng.randrange(30 * 86400)),
            f"bench-{i:09d}",
        )
        for i in range(records)
    ]


def ndjson(rows: list[tuple[str, float, datetime, str]]) -> bytes:
    """Rows as an NDJSON body."""
    return b"".join(
        orjson.dumps({"subject": s, "quantity": q, "occurredAt": t.isoformat(), "externalRef": r})
        + b"\n"
        for s, q, t, r in rows
    )


async def setup(dsn: str, residents: int) -> str:
    """A published methodology and scenario, and `residents` authorized residents with accounts."""
    code = f"BENCH-{uuid.uuid4().hex[:6].upper()}"
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        operator = await conn.fetchval(
            "INSERT INTO participant (kind, org_code, display_name, created_at)"
            " VALUES ('organisation', $1, 'Bench metro', $2) RETURNING id", ORG, now)
        methodology = await conn.fetchval(
            """INSERT INTO registry_methodology (code, name, kind, methodology_class, version,
                 activity_unit, grams_per_unit, daily_cap_grams, status, submitted_by, created_at,
                 published_at)
               VALUES ('BENCH-METRO', 'Bench metro trips', 'SCENARIO', 'II', '1.0',
                 'passenger-km', 47, 5000, 'PUBLISHED', 'bench', $1, $1) RETURNING id""", now)
        await conn.execute(
            """INSERT INTO registry_scenario (code, name, methodology_id, operator_participant_id,
                 operator_org, no_double_counting_commitment, status, created_at, published_at)
               VALUES ($1, 'Bench metro', $2, $3, $4, TRUE, 'PUBLISHED', $5, $5)""",
            code, methodology, operator, ORG, now)
        await add_residents(conn, "bench-res", residents, now)
        await conn.execute(
            """INSERT INTO registry_scenario_authorization (participant_id, scenario_code, granted_at)
               SELECT id, $1, $2 FROM participant WHERE kind = 'individual'""",
            code, now - timedelta(days=60))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return code


def csv_text(rows: list[tuple[str, float, datetime, str]]) -> bytes:
    """The rows as the CSV file a plain loader would send."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows((s, repr(q), t.isoformat(), r) for s, q, t, r in rows)
    return out.getvalue().encode()


async def plain_copy(dsn: str, rows: list[tuple[str, float, datetime, str]]) -> tuple[float, float]:
    """Seconds for a plain COPY of the same rows into a bare table: CSV text, then binary."""
    text = csv_text(rows)
    conn = await asyncpg.connect(dsn)
    timings = []
    try:
        for binary in (False, True):
            await conn.execute(
                "DROP TABLE IF EXISTS bench_bare;"
                " CREATE TABLE bench_bare (subject text, quantity double precision,"
                " occurred_at timestamptz, external_ref text)")
            started = time.perf_counter()
            if binary:
                await conn.copy_records_to_table("bench_bare", records=rows)
            else:
                await conn.copy_to_table("bench_bare", source=memoryview(text), format="csv")
            timings.append(time.perf_counter() - started)
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench_bare")
        await conn.close()
    return timings[0], timings[1]


async def ingest(base: str, code: str, token: str, bodies: list[bytes]) -> tuple[int, float]:
    """Send the bodies concurrently, all at once; accepted records and seconds.

    The workers share one listening socket and take its connections in turn (app.accepting).
    """
    headers = {"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"}

    async def send(client: httpx.AsyncClient, body: bytes) -> dict:
        async def pieces():
            for start in range(0, len(body), 1 << 16):
                yield body[start : start + (1 << 16)]

        response = await client.post(f"/ingest/scenarios/{code}/records", content=pieces(),
                                     headers=headers)
        response.raise_for_status()
        return response.json()

    async with httpx.AsyncClient(base_url=base, timeout=None) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(send(client, b) for b in bodies))
        elapsed = time.perf_counter() - started
    for answer in answers:
        if answer["rejected"]:
            log.warning("%d records rejected, first: %s", len(answer["rejected"]), answer["rejected"][0])
    return sum(a["accepted"] for a in answers), elapsed


ISSUE = """mutation($input: IssueScenarioReductionsInput!) {
  issueScenarioReductions(input: $input) {
    issuance { id serialPrefix totalGrams recipients periodEnd records }
    userErrors { code message field }
  }
}"""


async def issue(base: str, code: str, token: str) -> tuple[dict, float]:
    """One issuance through GraphQL; its payload and seconds."""
    variables = {"input": {"scenarioCode": code, "periodEnd": datetime.now(UTC).isoformat(),
                           "idempotencyKey": f"bench-{uuid.uuid4().hex}"}}
    async with httpx.AsyncClient(base_url=base, timeout=None) as client:
        started = time.perf_counter()
        response = await client.post("/graphql", json={"query": ISSUE, "variables": variables},
                                     headers={"authorization": f"Bearer {token}"})
        elapsed = time.perf_counter() - started
    payload = response.json()["data"]["issueScenarioReductions"]
    if payload["userErrors"]:
        raise RuntimeError(f"issuance refused: {payload['userErrors']}")
    return payload["issuance"], elapsed


async def run(args: argparse.Namespace) -> Figures:
    """The whole benchmark; the database is dropped at the end unless --keep."""
    async with Bench(args.server, SECRET, redis=args.redis, keep=args.keep) as bench:
        log.info("setting up %d residents", args.residents)
        code = await setup(bench.dsn, args.residents)
        rows = make_rows(args.records, args.residents)
        share = -(-len(rows) // args.streams)
        bodies = [ndjson(rows[i : i + share]) for i in range(0, len(rows), share)]
        operator = bench.sign("bench-operator", ["scenario_operator"], org=ORG)
        center = bench.sign("bench-center", ["center"])

        base = f"http://127.0.0.1:{args.port}"
        async with bench.serving(args.workers, args.port) as server:
            log.info("plain COPY of %d rows", len(rows))
            copy_s, copy_binary_s = await plain_copy(bench.dsn, rows)
            del rows

            watch = RssWatch(server.pid)
            watch.start()
            log.info("streaming %d records in %d requests", args.records, len(bodies))
            watch_cpu = CpuWatch(server)
            accepted, ingest_s = await ingest(base, code, operator, bodies)
            per_worker, ingest_cpu = watch_cpu.per_worker(), watch_cpu.spent()
            log.info("issuing")
            watch_cpu = CpuWatch(server)
            issuance, issue_s = await issue(base, code, center)
            issue_cpu = watch_cpu.spent()
            watch.sample()
            await watch.stop()
            if not await asyncio.to_thread(bench.ledger_verify):
                raise RuntimeError("ledger verify failed after the benchmark")
    return Figures(args.records, accepted, ingest_s, issuance["records"], issue_s, copy_s,
                   copy_binary_s, watch.peak_workers_kb / 1024, watch.peak_total_kb / 1024, per_worker,
                   ingest_cpu, issue_cpu)


def report(f: Figures) -> str:
    """The figures as printed lines."""
    work = f.ingest_s + f.issue_s
    ratio = work / f.copy_s if f.copy_s else float("nan")
    binary_ratio = work / f.copy_binary_s if f.copy_binary_s else float("nan")
    return "\n".join([
        f"records sent          {f.records:>12,}   accepted {f.accepted:,}",
        f"ingest                {f.ingest_s:>12.2f} s  {f.records / f.ingest_s:>12,.0f} records/s",
        "  CPU per worker      " + ", ".join(f"{s:.2f} s" for s in f.ingest_worker_cpu_s)
        + "  (the workers take the streams in turn: app.accepting)",
        "  CPU                 " + f.ingest_cpu.line(),
        f"issuance              {f.issue_s:>12.2f} s  {f.issued_records / f.issue_s:>12,.0f} records/s",
        "  CPU                 " + f.issue_cpu.line(),
        f"plain COPY (CSV)      {f.copy_s:>12.2f} s  {f.records / f.copy_s:>12,.0f} rows/s",
        f"plain COPY (binary)   {f.copy_binary_s:>12.2f} s  {f.records / f.copy_binary_s:>12,.0f} rows/s",
        f"(ingest + issue)/COPY {ratio:>12.2f}   (CSV COPY; target <= 4; {binary_ratio:.2f} "
        "against the binary COPY)",
        f"peak server RSS       {f.peak_rss_mb:>12.0f} MB (workers; {f.peak_total_rss_mb:.0f} MB with "
        "the supervisor; target < 500)",
    ])


def main() -> None:
    """Run the benchmark and print its figures."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    figures = asyncio.run(run(parse_args()))
    sys.stdout.write(report(figures) + "\n")


if __name__ == "__main__":
    main()
