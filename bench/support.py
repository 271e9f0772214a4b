"""Plumbing shared by the benchmarks: a throwaway PostgreSQL database with `puhui` commands on it,
servers in their own process groups, tokens, seeded residents, server CPU and RSS from /proc,
wrk scripts and runs, and a small raw HTTP/1.1 load client.

The load client keeps one keep-alive connection per concurrent user and sends prepared request
bytes, so it costs far less CPU than an HTTP library; it times every request itself.

The scripts put the repository root on sys.path before importing this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from app.auth import issue_token
from app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
PUHUI = str(Path(sys.executable).parent / "puhui")
ISSUANCE = {"REDUCTION_GRAMS": "GRAMS_ISSUANCE", "POINTS": "POINTS_ISSUANCE"}
log = logging.getLogger("bench")


def dsn(server: str, db: str) -> str:
    """An asyncpg DSN for database `db` on `server`."""
    return f"{server.rstrip('/').replace('postgres://', 'postgresql://', 1)}/{db}"


# ---------------------------------------------------------------- servers


def free_ports(count: int) -> list[int]:
    """TCP ports on 127.0.0.1 that nothing listens on now (other benches may run at once)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def free_port() -> int:
    """One TCP port on 127.0.0.1 that nothing listens on now."""
    return free_ports(1)[0]


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server's whole process group (a no-op once it has exited)."""
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
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise RuntimeError("the server did not become healthy")


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A server in its own process group."""
    return subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)


@contextlib.asynccontextmanager
async def serving(command: list[str], env: dict[str, str],
                  port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`command` in its own process group, once healthy on `port`; stopped on leaving."""
    server = start(command, env)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", server)
        yield server
    finally:
        stop(server)


def _children(pid: int) -> list[int]:
    """The direct children of process `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def _stat(pid: int) -> list[str]:
    """The fields of /proc/`pid`/stat after the command name (from the state on); [] once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _cpu(pid: int) -> float:
    """CPU time (user + system) used so far by process `pid`, 0 once it is gone (Linux /proc)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def cpu_seconds(server: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) used so far by a server and its worker processes (Linux /proc)."""
    return sum(_cpu(pid) for pid in (server.pid, *_children(server.pid)))


REAPED = 0  # the key of postgres_cpu()'s figure for the server processes that have exited


def postgres_cpu() -> dict[int, float] | None:
    """CPU time used so far by the PostgreSQL server on this machine, by process id, with the
    processes that exited (the postmaster's reaped children) under REAPED; None when no server
    runs here."""
    ticks: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if entry.joinpath("comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        fields = _stat(int(entry.name))
        if not fields:
            continue
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
        try:
            postmaster = Path(f"/proc/{fields[1]}/comm").read_text().strip() != "postgres"
        except OSError:
            postmaster = True
        if postmaster:
            ticks[REAPED] = ticks.get(REAPED, 0) + int(fields[13]) + int(fields[14])
    if not ticks:
        return None
    return {pid: t / os.sysconf("SC_CLK_TCK") for pid, t in ticks.items()}


def worker_pids(pid: int) -> list[int]:
    """The worker processes of the server `pid`: its children, not counting multiprocessing's
    resource tracker; the server itself when it serves alone (one worker runs in-process)."""
    found = []
    for child in _children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in command:
            found.append(child)
    return found or [pid]


def worker_cpu(server: subprocess.Popen[bytes]) -> dict[int, float]:
    """CPU time used so far by each worker process of a server, by pid."""
    return {pid: _cpu(pid) for pid in worker_pids(server.pid)}


def _rss_kb(pid: int) -> int:
    """The resident set size of process `pid` in KiB, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class RssWatch:
    """Samples the RSS of the server's worker processes (and of all its processes) every 100 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_workers_kb = 0
        self.peak_total_kb = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample."""
        workers = worker_pids(self.pid)
        worker_kb = sum(_rss_kb(p) for p in workers)
        others = sum(_rss_kb(p) for p in {self.pid, *_children(self.pid)} - set(workers))
        self.peak_workers_kb = max(self.peak_workers_kb, worker_kb)
        self.peak_total_kb = max(self.peak_total_kb, worker_kb + others)

    async def _run(self) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(0.1)

    def start(self) -> None:
        """Start sampling in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# ---------------------------------------------------------------- the bench database


@dataclass
class Bench:
    """A throwaway database on a PostgreSQL server and the environment of `puhui` commands on it.

    `async with Bench(...)` creates and migrates the database, and drops it on leaving unless `keep`.
    """

    server_url: str
    secret: str
    prefix: str = "puhui_bench"
    redis: str | None = None
    keep: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    db: str = field(init=False)

    def __post_init__(self) -> None:
        """Name the database."""
        self.db = f"{self.prefix}_{uuid.uuid4().hex[:8]}"

    @property
    def env(self) -> dict[str, str]:
        """The environment for `puhui` commands (and other servers) on the bench database."""
        env = {**os.environ, "PUHUI_DATABASE_URL": f"{self.server_url.rstrip('/')}/{self.db}",
               "PUHUI_ENV": "development", "PUHUI_JWT_SECRET": self.secret,
               "PUHUI_LOG_LEVEL": "WARNING", **self.extra_env}
        env.pop("PUHUI_REDIS_URL", None)
        if self.redis:
            env["PUHUI_REDIS_URL"] = self.redis
        return env

    @property
    def dsn(self) -> str:
        """The asyncpg DSN of the bench database."""
        return dsn(self.server_url, self.db)

    @functools.cached_property
    def settings(self) -> Settings:
        """The settings a server on the bench database runs with."""
        return load_settings(self.env)

    def sign(self, subject: str, roles: list[str], org: str | None = None) -> str:
        """A token the bench server accepts."""
        return issue_token(subject, roles, org=org, settings=self.settings, ttl_seconds=6 * 3600)

    async def __aenter__(self) -> Bench:
        """Create and migrate the database."""
        admin = await asyncpg.connect(dsn(self.server_url, "postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{self.db}"')
        finally:
            await admin.close()
        try:
            await asyncio.to_thread(subprocess.run, [PUHUI, "migrate"], env=self.env, cwd=ROOT,
                                    check=True, stdout=subprocess.DEVNULL)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Drop the database unless kept."""
        await self.close()

    async def close(self) -> None:
        """Drop the database, or say where it was kept."""
        if self.keep:
            log.info("kept database %s", self.db)
            return
        admin = await asyncpg.connect(dsn(self.server_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        finally:
            await admin.close()

    def serve_command(self, workers: int, port: int) -> list[str]:
        """The `puhui serve` command line."""
        return [PUHUI, "serve", "--workers", str(workers), "--port", str(port)]

    def serving(self, workers: int,
                port: int) -> contextlib.AbstractAsyncContextManager[subprocess.Popen[bytes]]:
        """`puhui serve` on the bench database, once healthy; stopped on leaving."""
        return serving(self.serve_command(workers, port), self.env, port)

    def ledger_verify(self) -> bool:
        """`puhui ledger verify` on the bench database."""
        done = subprocess.run([PUHUI, "ledger", "verify"], env=self.env, cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode != 0:
            log.error("ledger verify failed: %s", done.stdout[-2000:])
        return done.returncode == 0


# ---------------------------------------------------------------- seeding (set-based SQL)


async def add_residents(conn: asyncpg.Connection, prefix: str, count: int, now: datetime, *,
                        grams: int | str = 0, points: int | str = 0, names: str = "Bench {}") -> None:
    """`count` residents `prefix-0000000`.. with holder accounts holding `grams` and `points` (a
    number, or an SQL expression over their participant row p), credited from the issuance
    accounts with transfers and entries, the grams from one issued lot."""
    await conn.copy_records_to_table(
        "participant", columns=("kind", "subject", "display_name", "created_at"),
        records=[("individual", f"{prefix}-{i:07d}", names.format(i), now) for i in range(count)],
    )
    await conn.execute(
        f"""INSERT INTO ledger_account (asset, kind, participant_id, balance, pending)
            SELECT a.asset, 'holder', p.id,
                   CASE WHEN a.asset = 'REDUCTION_GRAMS' THEN ({grams})::bigint
                        ELSE ({points})::bigint END, 0
            FROM participant p
            CROSS JOIN (VALUES ('REDUCTION_GRAMS'), ('POINTS')) AS a(asset)
            WHERE p.kind = 'individual' AND p.subject LIKE $1""", f"{prefix}-%")
    issued = await _issue(conn, "REDUCTION_GRAMS", prefix, now)
    if issued:
        reference, total = issued
        lot = await conn.fetchval(
            """INSERT INTO ledger_lot (serial_prefix, source_type, source_code, methodology_code,
                 methodology_version, methodology_class, vintage, issued_grams, created_at)
               VALUES ($1, 'scenario', 'BENCH', 'BENCH-M', '1.0', 'II', 2026, $2, $3)
               RETURNING id""", f"BENCH-{uuid.uuid4().hex[:10]}", total, now)
        await conn.execute(
            """INSERT INTO ledger_transfer_lot (transfer_id, lot_id, amount)
               SELECT id, $1, amount FROM ledger_transfer WHERE reference = $2""", lot, reference)
        await conn.execute(
            """INSERT INTO ledger_lot_holding (account_id, lot_id, balance)
               SELECT credit_account_id, $1, amount FROM ledger_transfer WHERE reference = $2""",
            lot, reference)
    await _issue(conn, "POINTS", prefix, now)


async def _issue(conn: asyncpg.Connection, asset: str, prefix: str,
                 now: datetime) -> tuple[str, int] | None:
    """Credit the `prefix` residents' `asset` balances from its issuance account, one transfer and
    two entries per resident; (the transfers' reference, the total), or None when all are 0."""
    holders = """FROM ledger_account a JOIN participant p ON p.id = a.participant_id
                 WHERE a.kind = 'holder' AND a.asset = $1 AND a.balance > 0 AND p.subject LIKE $2"""
    total = await conn.fetchval(f"SELECT COALESCE(SUM(a.balance), 0) {holders}", asset, f"{prefix}-%")
    if not total:
        return None
    issuance, after = await conn.fetchrow(
        "UPDATE ledger_account SET balance = balance - $2 WHERE code = $1 RETURNING id, balance",
        ISSUANCE[asset], total)
    reference = f"bench-{asset.lower()}:{prefix}"
    await conn.execute(
        f"""INSERT INTO ledger_transfer (asset, kind, debit_account_id, credit_account_id, amount,
              reference, memo, created_at)
            SELECT a.asset, 'ISSUANCE', $3, a.id, a.balance, $4, '', $5 {holders} ORDER BY a.id""",
        asset, f"{prefix}-%", issuance, reference, now)
    await conn.execute(
        """INSERT INTO ledger_entry (account_id, transfer_id, asset, kind, amount, balance_after,
             memo, created_at)
           SELECT credit_account_id, id, asset, kind, amount, amount, '', created_at
           FROM ledger_transfer WHERE reference = $1
           UNION ALL
           SELECT debit_account_id, id, asset, kind, -amount,
                  $2::bigint - SUM(amount) OVER (ORDER BY id), '', created_at
           FROM ledger_transfer WHERE reference = $1""", reference, after + total)
    return reference, total


async def seed_residents(bench: Bench, prefix: str, count: int, *, grams: int | str = 0,
                         points: int | str = 0) -> None:
    """`add_residents` in one transaction on the bench database, then ANALYZE."""
    conn = await asyncpg.connect(bench.dsn)
    try:
        async with conn.transaction():
            await add_residents(conn, prefix, count, datetime.now(UTC), grams=grams, points=points)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# ---------------------------------------------------------------- wrk

_WRK_FRAME = r"""
local threads = {}
local counter = 0
local tokens = {}
CONSTANTS

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  COUNTERS = ZEROS
end

HANDLERS

function done(summary, latency, requests)
  local sums = {SUMS}
  for _, t in ipairs(threads) do
    for name in pairs(sums) do sums[name] = sums[name] + t:get(name) end
  end
  io.write(string.format(
    'RESULT {FIELDS"requests": %d, "errors": %d,' ..
    ' "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    VALUESsummary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk_script(constants: dict[str, str], counters: list[str], handlers: str) -> str:
    """A wrk Lua script: `handlers` define request() and response(), reading the resident tokens
    (`tokens`, one a line in the file given after `--`), the thread's `tid`, `counter` and the
    Lua `constants`, and counting into the per-thread `counters`; done() prints one RESULT line
    of JSON with the counters summed over threads, requests, socket errors, duration and latency."""
    parts = {
        "CONSTANTS": "\n".join(f"local {name} = {value}" for name, value in constants.items()),
        "COUNTERS": ", ".join(counters),
        "ZEROS": ", ".join("0" for _ in counters),
        "HANDLERS": handlers.strip(),
        "SUMS": ", ".join(f"{name} = 0" for name in counters),
        "FIELDS": "".join(f'"{name}": %d, ' for name in counters),
        "VALUES": "".join(f"sums.{name}, " for name in counters),
    }
    return re.sub("|".join(parts), lambda found: parts[found.group(0)], _WRK_FRAME)


def require_wrk() -> None:
    """Stop with a hint unless wrk is installed."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")


def run_wrk(port: int, threads: int, connections: int, seconds: int, script: Path,
            tokens: Path) -> dict[str, int]:
    """Drive load on `port` for `seconds`; wrk's RESULT line as a dict (stderr lines that a script
    starts with "REFUSED " are logged as warnings)."""
    done = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", str(script), f"http://127.0.0.1:{port}", "--", str(tokens)],
        capture_output=True, text=True, check=True)
    for line in done.stderr.splitlines():
        if line.startswith("REFUSED "):
            log.warning("refused: %s", line[len("REFUSED "):][:500])
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"wrk printed no result: {done.stdout[-2000:]} {done.stderr[-2000:]}")


# ---------------------------------------------------------------- the raw keep-alive load client


def post_bytes(host: str, port: int, token: str, payload: dict) -> bytes:
    """A prepared HTTP/1.1 keep-alive POST /graphql request."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass
class LoadResult:
    """What a load run saw: per-request latencies and bodies classified by the caller."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in seconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0


async def _one_user(host: str, port: int, requests: Iterator[bytes], start: asyncio.Event,
                    result: LoadResult) -> None:
    """One keep-alive connection sending requests from the shared iterator until it is empty."""
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


async def all_at_once(users: list[asyncio.Task[None]], start: asyncio.Event, result: LoadResult) -> None:
    """Let the users (each waiting for `start`) go together once all are ready; time them all."""
    await asyncio.sleep(0.5)  # every connection open before the gun
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*users)
    result.seconds = time.perf_counter() - began


async def run_load(host: str, port: int, requests: list[bytes], connections: int) -> LoadResult:
    """Send every prepared request once over `connections` keep-alive connections at once."""
    shared = iter(requests)
    result = LoadResult()
    start = asyncio.Event()
    users = [asyncio.create_task(_one_user(host, port, shared, start, result))
             for _ in range(connections)]
    await all_at_once(users, start, result)
    return result
