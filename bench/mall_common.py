"""Shared pieces of the mall benchmarks: a throwaway PostgreSQL database, `puhui serve`, seeding,
the merchant and its right set up through the API, and a small raw HTTP/1.1 load client.

The load client keeps one keep-alive connection per concurrent user and sends prepared request
bytes, so it costs far less CPU than an HTTP library; it times every request itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.auth import issue_token  # noqa: E402
from app.settings import load_settings  # noqa: E402
from tests.helpers import contract_operations, credit_code  # noqa: E402

log = logging.getLogger("bench.mall")
SECRET = "bench-secret-for-the-mall-benchmarks-0123456789"
PUHUI = str(Path(sys.executable).parent / "puhui")
SETTINGS = load_settings({"PUHUI_ENV": "development", "PUHUI_JWT_SECRET": SECRET})


def sign(subject: str, roles: list[str], org: str | None = None) -> str:
    """A token the bench server accepts."""
    return issue_token(subject, roles, org=org, settings=SETTINGS, ttl_seconds=3600)


def dsn(server: str, db: str) -> str:
    """An asyncpg DSN for database `db` on `server`."""
    return f"{server.rstrip('/').replace('postgres://', 'postgresql://', 1)}/{db}"


@dataclass
class Bench:
    """A throwaway database and the environment of a server on it."""

    server_url: str
    redis: str | None
    db: str = field(default_factory=lambda: f"mallbench_{uuid.uuid4().hex[:10]}")

    @property
    def env(self) -> dict[str, str]:
        """The environment for `puhui` commands on the bench database."""
        env = {**os.environ, "PUHUI_DATABASE_URL": f"{self.server_url.rstrip('/')}/{self.db}",
               "PUHUI_ENV": "development", "PUHUI_JWT_SECRET": SECRET, "PUHUI_LOG_LEVEL": "WARNING"}
        env.pop("PUHUI_REDIS_URL", None)
        if self.redis:
            env["PUHUI_REDIS_URL"] = self.redis
        return env

    @property
    def dsn(self) -> str:
        """The asyncpg DSN of the bench database."""
        return dsn(self.server_url, self.db)

    async def create(self) -> None:
        """Create and migrate the database."""
        admin = await asyncpg.connect(dsn(self.server_url, "postgres"))
        await admin.execute(f'CREATE DATABASE "{self.db}"')
        await admin.close()
        await asyncio.to_thread(subprocess.run, [PUHUI, "migrate"], env=self.env, cwd=ROOT,
                                check=True, stdout=subprocess.DEVNULL)

    async def drop(self) -> None:
        """Drop the database."""
        admin = await asyncpg.connect(dsn(self.server_url, "postgres"))
        await admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        await admin.close()

    def serve(self, workers: int, port: int) -> subprocess.Popen[bytes]:
        """`puhui serve` in its own process group."""
        return subprocess.Popen([PUHUI, "serve", "--workers", str(workers), "--port", str(port)],
                                env=self.env, cwd=ROOT, start_new_session=True)

    def ledger_verify(self) -> bool:
        """`puhui ledger verify` on the bench database."""
        done = subprocess.run([PUHUI, "ledger", "verify"], env=self.env, cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode != 0:
            log.error("ledger verify failed: %s", done.stdout[-2000:])
        return done.returncode == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (other benches may run at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(server: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) used so far by a server and its worker processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == server.pid or ppid == server.pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server's whole process group."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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


async def seed_residents(bench: Bench, prefix: str, count: int, points_each: int) -> None:
    """`count` residents `prefix-0000000`.., each issued `points_each` points (set-based SQL)."""
    now = datetime.now(UTC)
    total = count * points_each
    conn = await asyncpg.connect(bench.dsn)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "participant", columns=("kind", "subject", "display_name", "created_at"),
                records=[("individual", f"{prefix}-{i:07d}", f"Bench {i}", now) for i in range(count)],
            )
            await conn.execute(
                """INSERT INTO ledger_account (asset, kind, participant_id, balance, pending)
                   SELECT a.asset, 'holder', p.id,
                          CASE WHEN a.asset = 'POINTS' THEN $1::bigint ELSE 0 END, 0
                   FROM participant p
                   CROSS JOIN (VALUES ('REDUCTION_GRAMS'), ('POINTS')) AS a(asset)
                   WHERE p.kind = 'individual' AND p.subject LIKE $2""", points_each, f"{prefix}-%")
            if not points_each:
                return
            issuance = await conn.fetchval(
                "UPDATE ledger_account SET balance = balance + $1"
                " WHERE code = 'POINTS_ISSUANCE' RETURNING id", -total)
            reference = f"bench-points:{prefix}"
            await conn.execute(
                """INSERT INTO ledger_transfer (asset, kind, debit_account_id, credit_account_id,
                     amount, reference, memo, created_at)
                   SELECT 'POINTS', 'ISSUANCE', $1, a.id, a.balance, $2, '', $3
                   FROM ledger_account a JOIN participant p ON p.id = a.participant_id
                   WHERE a.asset = 'POINTS' AND p.subject LIKE $4 ORDER BY a.id""",
                issuance, reference, now, f"{prefix}-%")
            await conn.execute(
                """INSERT INTO ledger_entry (account_id, transfer_id, asset, kind, amount,
                     balance_after, memo, created_at)
                   SELECT credit_account_id, id, asset, kind, amount, amount, '', created_at
                   FROM ledger_transfer WHERE reference = $1
                   UNION ALL
                   SELECT debit_account_id, id, asset, kind, -amount,
                          -SUM(amount) OVER (ORDER BY id), '', created_at
                   FROM ledger_transfer WHERE reference = $1""", reference)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def graphql(client: httpx.AsyncClient, name: str, variables: dict, auth: str) -> dict:
    """Run one contract operation; its data, or raise on errors."""
    response = await client.post("/graphql", json={
        "query": contract_operations()[name], "variables": variables},
        headers={"authorization": f"Bearer {auth}"})
    if response.status_code >= 500 or not response.content.startswith(b"{"):
        raise RuntimeError(f"{name}: HTTP {response.status_code} {response.text[:500]}")
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"{name}: {body['errors']}")
    return body["data"]


async def merchant_with_rights(base: str, rights: int, stock: int, price: int,
                               category: str = "bench") -> tuple[str, list[str]]:
    """A merchant applied and approved, listing `rights` rights; (merchant token, right ids)."""
    code = credit_code()
    merchant = sign("bench-merchant", ["merchant"], org=code)
    center = sign("bench-center", ["center"])
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        applied = await graphql(client, "ApplyMerchant", {"input": {
            "name": "Bench Coffee", "creditCode": code, "contact": "13800138000"}}, merchant)
        merchant_id = applied["applyMerchant"]["merchant"]["id"]
        await graphql(client, "ReviewMerchant", {"input": {"id": merchant_id, "approve": True}}, center)
        ids = []
        for i in range(rights):
            created = await graphql(client, "CreateRight", {"input": {
                "title": f"Bench right {i}", "description": "A flat white at any shop",
                "category": category, "pointsPrice": str(price), "stock": stock}}, merchant)
            payload = created["createRight"]
            if payload["userErrors"]:
                raise RuntimeError(payload["userErrors"])
            ids.append(payload["right"]["id"])
    return merchant, ids


def post_bytes(host: str, port: int, token: str, payload: dict) -> bytes:
    """A prepared HTTP/1.1 keep-alive POST /graphql request."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass
class LoadResult:
    """What a load run saw: per-request latencies and bodies classified by the caller."""

    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    bodies: list[bytes]

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in seconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0


async def _one_user(host: str, port: int, requests: Iterator[bytes], start: asyncio.Event,
                    result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await start.wait()
    try:
        for request in requests:
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - began)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.bodies.append(body)
    finally:
        writer.close()


async def run_load(host: str, port: int, requests: list[bytes], connections: int) -> LoadResult:
    """Send every prepared request once over `connections` keep-alive connections at once."""
    shared = iter(requests)
    result = LoadResult(0.0, [], {}, [])
    start = asyncio.Event()
    users = [asyncio.create_task(_one_user(host, port, shared, start, result))
             for _ in range(connections)]
    await asyncio.sleep(0.5)  # every connection open before the gun
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*users)
    result.seconds = time.perf_counter() - began
    return result
