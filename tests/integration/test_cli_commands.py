"""The `puhui` commands besides serve: each refusal is one line on stderr and a non-zero exit, before
the command touches the database (unreachable, unmigrated, production) or signs a useless token."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.serve_support import Completed, cli_env, free_port, on_postgres, run_cli, scratch_database

pytestmark = pytest.mark.usefixtures("database")
PUBLIC_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()
DEMO_TABLES = ("registry_methodology", "registry_scenario", "registry_issuance", "participant",
               "ledger_transfer")
DATABASE_COMMANDS = [("migrate",), ("ledger", "verify"), ("demo",), ("jobs", "run-once"),
                     ("calendar", "load", "CALENDAR")]


def _one_line_failure(done: Completed) -> str:
    assert done.code != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("puhui: ")
    assert done.stdout == ""
    return lines[0]


async def _rows(url: str, table: str) -> int:
    """How many rows `table` of a scratch database holds, read outside the service."""
    if url.startswith("postgres"):
        connection = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            return await connection.fetchval(f"SELECT count(*) FROM {table}")
        finally:
            await connection.close()
    with contextlib.closing(sqlite3.connect(url[len("sqlite://"):])) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _with_calendar(command: tuple[str, ...], tmp_path: Path) -> list[str]:
    """The command's arguments, CALENDAR replaced by a valid calendar file."""
    path = tmp_path / "calendar.json"
    path.write_text(json.dumps({"year": 2031, "holidays": ["2031-01-01"], "workdays": []}))
    return [str(path) if arg == "CALENDAR" else arg for arg in command]


async def test_demo_is_refused_in_production_and_loads_nothing():
    async with scratch_database() as url:
        env = cli_env(PUHUI_ENV="production", PUHUI_DATABASE_URL=url, PUHUI_JWT_PUBLIC_KEY=PUBLIC_KEY,
                      PUHUI_JWT_ISSUER="https://idp.example", PUHUI_JWT_AUDIENCE="puhui")
        done = await run_cli("demo", env=env)
        assert "demo data is refused when PUHUI_ENV=production" in _one_line_failure(done)
        assert done.code == 2
        assert {table: await _rows(url, table) for table in DEMO_TABLES} == dict.fromkeys(DEMO_TABLES, 0)


async def test_demo_is_refused_where_development_tokens_are_not_accepted():
    async with scratch_database() as url:
        env = cli_env(PUHUI_DATABASE_URL=url, PUHUI_JWT_SECRET=None, PUHUI_JWT_PUBLIC_KEY=PUBLIC_KEY)
        done = await run_cli("demo", env=env)
        assert "PUHUI_JWT_SECRET" in _one_line_failure(done)
        assert {table: await _rows(url, table) for table in DEMO_TABLES} == dict.fromkeys(DEMO_TABLES, 0)


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
async def test_an_unreachable_database_stops_commands_with_one_line(command, tmp_path):
    url = (f"postgres://postgres@127.0.0.1:{free_port()}/nowhere" if on_postgres()
           else "sqlite:///proc/no-such-dir/puhui.sqlite3")
    done = await run_cli(*_with_calendar(command, tmp_path), env=cli_env(PUHUI_DATABASE_URL=url))
    assert "cannot use the database" in _one_line_failure(done)
    assert done.code == 1


@pytest.mark.parametrize("command", DATABASE_COMMANDS[1:], ids=" ".join)
async def test_an_unmigrated_database_stops_commands_with_one_line(command, tmp_path):
    async with scratch_database(migrated=False) as url:
        done = await run_cli(*_with_calendar(command, tmp_path), env=cli_env(PUHUI_DATABASE_URL=url))
    assert "run `puhui migrate`" in _one_line_failure(done)
    assert done.code == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"PUHUI_JWT_PUBLIC_KEY": "BINARY"},
        {"PUHUI_JWT_PUBLIC_KEY": "k" * 5000},
    ],
    ids=["a binary file", "a name too long for a path"],
)
async def test_a_public_key_that_is_no_pem_file_stops_every_command_with_one_line(overrides, tmp_path):
    binary = tmp_path / "idp.der"
    binary.write_bytes(bytes(range(256)))
    env = cli_env(**{name: str(binary) if value == "BINARY" else value
                     for name, value in overrides.items()})
    for command in (("schema",), ("token", "--sub", "ops", "--role", "center")):
        done = await run_cli(*command, env=env)
        assert "PUHUI_JWT_PUBLIC_KEY must be a PEM public key or the path of a PEM file" in (
            _one_line_failure(done))


@pytest.mark.parametrize(
    "overrides",
    [
        {"PUHUI_JWT_SECRET": None, "PUHUI_JWT_PUBLIC_KEY": PUBLIC_KEY},
        {"PUHUI_JWT_SECRET": None, "PUHUI_JWT_JWKS_URL": "https://idp.example/jwks.json"},
        {"PUHUI_JWT_PUBLIC_KEY": PUBLIC_KEY},  # the secret is set, but the service reads RS256 only
    ],
    ids=["public key", "jwks", "public key and secret"],
)
async def test_token_outside_production_needs_the_shared_secret(overrides):
    done = await run_cli("token", "--sub", "ops", "--role", "center", env=cli_env(**overrides))
    assert "development tokens need PUHUI_JWT_SECRET" in _one_line_failure(done)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--sub", "ops", "--role", "center", "--ttl", "-100"], "--ttl"),
        (["--sub", "ops", "--role", "center", "--ttl", "0"], "--ttl"),
        (["--sub", "", "--role", "resident"], "sub claim"),
        (["--sub", "x" * 129, "--role", "resident"], "sub claim"),
        (["--sub", "line\nbreak", "--role", "resident"], "sub claim"),
        (["--sub", "shop", "--role", "merchant", "--org", "bad org!"], "org claim"),
        (["--sub", "shop", "--role", "merchant", "--org", "M" * 19], "org claim"),
    ],
    ids=["negative ttl", "zero ttl", "empty sub", "long sub", "control character in sub",
         "org with spaces", "org too long"],
)
async def test_token_refuses_what_the_service_would_refuse(args, fragment):
    done = await run_cli("token", *args)
    assert fragment in _one_line_failure(done)
    assert done.code == 2
