"""`puhui` as a real subprocess: CLI runs, `puhui serve` on a free port, and scratch databases.

The suite's backend decides the scratch database: a PostgreSQL database of its own (dropped
afterwards) or a SQLite file, migrated with `puhui migrate` like a deployment would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
PUHUI = str(Path(sys.executable).with_name("puhui"))
START_WAIT_SECONDS = 30.0
CLI_WAIT_SECONDS = 120.0


def on_postgres() -> bool:
    """True when the suite runs on PostgreSQL."""
    return os.environ["PUHUI_DATABASE_URL"].startswith("postgres")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(**overrides: str | None) -> dict[str, str]:
    """The suite's environment with overrides (None removes a variable)."""
    env = {**os.environ, "PUHUI_LOG_LEVEL": "WARNING"}
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass
class Completed:
    """What a finished CLI run left behind."""

    code: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: dict[str, str] | None = None) -> Completed:
    """Run `puhui ARGS` to completion (CLI_WAIT_SECONDS is a hang guard, not a measurement)."""
    process = await asyncio.create_subprocess_exec(
        PUHUI, *args, cwd=ROOT, env=env or cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_WAIT_SECONDS)
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


@dataclass
class Server:
    """A running `puhui serve`."""

    base: str
    process: asyncio.subprocess.Process
    log_path: Path
    final_log: str | None = None

    def log(self) -> str:
        """Everything the server wrote to stderr (so far, or in all once it stopped)."""
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Worker processes uvicorn's supervisor spawned (none when it serves in-process)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"spawn_main" in cmdline:
                pids.append(int(entry.name))
        return pids


@contextlib.asynccontextmanager
async def serving(env: dict[str, str] | None = None, workers: int = 1) -> AsyncIterator[Server]:
    """`puhui serve` on a free port until /healthz answers (whatever its status)."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="puhui-serve-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = await asyncio.create_subprocess_exec(
            PUHUI, "serve", "--port", str(port), "--workers", str(workers),
            cwd=ROOT, env=env or cli_env(), stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        async with httpx.AsyncClient(base_url=server.base) as http:
            for _ in range(int(START_WAIT_SECONDS / 0.1)):
                if process.returncode is not None:
                    raise RuntimeError(f"puhui serve exited: {server.log()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    await http.get("/healthz")
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"puhui serve did not answer: {server.log()[-2000:]}")
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        server.final_log = _read_and_remove(log_path)


def _read_and_remove(path: Path) -> str:
    text = path.read_text(errors="replace")
    path.unlink()
    return text


def _admin_dsn() -> str:
    parts = urlsplit(os.environ["PUHUI_DATABASE_URL"].split("?", 1)[0])
    return urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))


def _named(name: str) -> str:
    parts = urlsplit(os.environ["PUHUI_DATABASE_URL"])
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


@contextlib.asynccontextmanager
async def scratch_database(migrated: bool = True) -> AsyncIterator[str]:
    """A database of the suite's backend for one test, migrated by `puhui migrate`; yields its URL."""
    if on_postgres():
        name = f"puhui_scratch_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(_admin_dsn())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = _named(name)
    else:
        name = ""
        folder = tempfile.mkdtemp(prefix="puhui-scratch-")
        url = f"sqlite://{folder}/puhui.sqlite3"
    try:
        if migrated:
            done = await run_cli("migrate", env=cli_env(PUHUI_DATABASE_URL=url))
            assert done.code == 0, done.stderr
        yield url
    finally:
        if name:
            await drop_database(url)
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def drop_database(url: str) -> None:
    """Drop a scratch PostgreSQL database, closing whatever is connected to it."""
    name = urlsplit(url).path.strip("/")
    admin = await asyncpg.connect(_admin_dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def execute_sql(url: str, statement: str) -> None:
    """Run one statement on a scratch database, outside the service."""
    if url.startswith("postgres"):
        connection = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()
        return
    with contextlib.closing(sqlite3.connect(url[len("sqlite://"):])) as connection:
        connection.execute(statement)
        connection.commit()
