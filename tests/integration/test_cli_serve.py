"""The `puhui` command as deployments use it: serve (workers, health), token, schema, bad settings."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from graphql_schema.schema import schema
from tests.helpers import credit_code, data, error_codes, gql, op, token, unique
from tests.registry_support import CENTER, submit_methodology
from tests.serve_support import (
    PUHUI,
    ROOT,
    Completed,
    cli_env,
    free_port,
    on_postgres,
    run_cli,
    scratch_database,
    serving,
)

pytestmark = pytest.mark.usefixtures("database")
ME = "query { me { id account { reductionGrams points } } }"
REFUSAL_WAIT_SECONDS = 20.0  # a refused serve stops at once; one still running after this serves
PUBLIC_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()


def _one_line_failure(done) -> str:
    assert done.code != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("puhui: ")
    return lines[0]


async def _serve_refused(*args: str, env: dict[str, str] | None = None) -> Completed:
    """`puhui serve ARGS` that must stop at once; stopped, and the test failed, if it serves."""
    process = await asyncio.create_subprocess_exec(
        PUHUI, "serve", *args, cwd=ROOT, env=env or cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), REFUSAL_WAIT_SECONDS)
    except TimeoutError:
        process.terminate()
        await process.wait()
        pytest.fail(f"puhui serve {' '.join(args)} was not refused: it is serving")
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"PUHUI_DATABASE_URL": "mysql://root@127.0.0.1/puhui"}, "PUHUI_DATABASE_URL"),
        ({"PUHUI_DATABASE_URL": "postgres://postgres@127.0.0.1:notaport/x"}, "port"),
        ({"PUHUI_ENV": "staging"}, "PUHUI_ENV"),
        ({"PUHUI_ENV": "production", "PUHUI_JWT_PUBLIC_KEY": None, "PUHUI_JWT_JWKS_URL": None},
         "PUHUI_JWT_PUBLIC_KEY"),
        ({"PUHUI_JWT_SECRET": "short-secret"}, "PUHUI_JWT_SECRET"),
        ({"PUHUI_JWT_PUBLIC_KEY": "/nonexistent/idp.pem"}, "PUHUI_JWT_PUBLIC_KEY"),
        ({"PUHUI_REDIS_URL": "127.0.0.1:6379"}, "PUHUI_REDIS_URL"),
    ],
)
async def test_bad_settings_stop_serve_with_one_line(overrides, fragment):
    done = await run_cli("serve", "--port", str(free_port()), env=cli_env(**overrides))
    assert fragment in _one_line_failure(done)


async def test_several_workers_need_redis_to_share_their_state():
    env = cli_env(PUHUI_REDIS_URL=None)
    if on_postgres():
        done = await _serve_refused("--workers", "2", "--port", str(free_port()), env=env)
        assert "--workers 2 needs PUHUI_REDIS_URL" in _one_line_failure(done)
    else:  # SQLite serves with one worker, and so needs no Redis
        async with serving(env=env, workers=2) as server:
            assert server.worker_pids() == []
        assert "SQLite serves with one worker" in server.log()


@pytest.mark.parametrize("port", ["99999", "65536", "0"])
async def test_serve_refuses_a_port_outside_1_to_65535(port):
    done = await _serve_refused("--port", port)
    assert "--port must be between 1 and 65535" in _one_line_failure(done)


@pytest.mark.parametrize(
    ("url", "workers"),
    [
        ("redis://127.0.0.1:notaport/0", 1),
        ("redis://127.0.0.1:99999/0", 1),
        ("redis://127.0.0.1:6379/x", 1),
        ("redis://127.0.0.1:notaport/0", 2),
    ],
)
async def test_a_malformed_redis_url_stops_serve_with_one_line(url, workers):
    done = await _serve_refused("--port", str(free_port()), "--workers", str(workers),
                                env=cli_env(PUHUI_REDIS_URL=url))
    assert "PUHUI_REDIS_URL" in _one_line_failure(done)
    assert done.code == 2


async def test_an_unreachable_database_stops_serve_with_one_line():
    url = (f"postgres://postgres@127.0.0.1:{free_port()}/nowhere" if on_postgres()
           else "sqlite:///proc/no-such-dir/puhui.sqlite3")
    done = await run_cli("serve", "--port", str(free_port()), env=cli_env(PUHUI_DATABASE_URL=url))
    assert "database" in _one_line_failure(done)
    assert done.code == 1


async def test_an_unmigrated_database_stops_serve_with_one_line():
    async with scratch_database(migrated=False) as url:
        done = await run_cli("serve", "--port", str(free_port()),
                             env=cli_env(PUHUI_DATABASE_URL=url))
    assert "puhui migrate" in _one_line_failure(done)


async def test_token_is_refused_in_production():
    env = cli_env(PUHUI_ENV="production", PUHUI_JWT_PUBLIC_KEY=PUBLIC_KEY,
                  PUHUI_JWT_ISSUER="https://idp.example", PUHUI_JWT_AUDIENCE="puhui")
    done = await run_cli("token", "--sub", "ops", "--role", "center", env=env)
    assert "development tokens are refused when PUHUI_ENV=production" in _one_line_failure(done)
    assert done.stdout == ""


async def test_token_prints_a_working_development_token(client):
    subject = unique("cli-")
    done = await run_cli("token", "--sub", subject, "--role", "resident")
    assert done.code == 0, done.stderr
    jwt_text = done.stdout.strip()
    assert data(await gql(client, ME, auth=jwt_text))["me"]["account"]["points"] == "0"
    refused = await run_cli("token", "--sub", "x", "--role", "emperor")
    assert "unknown role" in _one_line_failure(refused)
    no_org = await run_cli("token", "--sub", "x", "--role", "merchant")
    assert "--org" in _one_line_failure(no_org)


async def test_schema_prints_the_schema_the_service_serves():
    done = await run_cli("schema")
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == schema.as_str().strip()


async def test_serve_with_two_workers_answers_health_and_graphql():
    async with serving(workers=2) as server:
        if on_postgres():
            assert len(server.worker_pids()) == 2
        else:
            assert server.worker_pids() == []
            assert "SQLite serves with one worker" in server.log()
        async with httpx.AsyncClient(base_url=server.base) as http:
            health = await http.get("/healthz")
            assert health.status_code == 200
            expected = {"status": "ok", "database": "ok"}
            if os.environ.get("PUHUI_REDIS_URL"):
                expected["redis"] = "ok"
            assert health.json() == expected

            subjects = [unique("served-") for _ in range(16)]
            responses = await asyncio.gather(*[
                http.post("/graphql", json={"query": ME},
                          headers={"authorization": f"Bearer {token(s)}"})
                for s in subjects
            ])
            ids = set()
            for response in responses:
                assert response.status_code == 200
                ids.add(data(response.json())["me"]["id"])
            assert len(ids) == len(subjects)

            again = await http.get("/graphql", params={"query": ME},
                                   headers={"authorization": f"Bearer {token(subjects[0])}"})
            assert data(again.json())["me"]["id"] in ids
            anonymous = await http.post("/graphql", json={"query": ME})
            assert error_codes(anonymous.json()) == ["UNAUTHENTICATED"]
    assert "Traceback" not in server.log()


async def test_a_port_already_served_stops_a_second_serve_with_one_line():
    workers = 2 if on_postgres() else 1  # SQLite serves with one worker
    async with serving(env=cli_env(PUHUI_LOG_LEVEL="INFO"), workers=workers) as server:
        port = server.base.rsplit(":", 1)[1]
        for second in sorted({1, workers}):
            done = await _serve_refused("--port", port, "--workers", str(second))
            assert f"cannot listen on 127.0.0.1:{port}" in _one_line_failure(done)
            assert done.code == 1
        async with httpx.AsyncClient(base_url=server.base) as http:
            assert (await http.get("/healthz")).status_code == 200
    assert f"running on {server.base} " in server.log()  # where to point a browser


async def test_every_worker_writes_the_service_log():
    env = cli_env(PUHUI_LOG_LEVEL="INFO")
    async with serving(env=env, workers=2) as server, \
            httpx.AsyncClient(base_url=server.base) as http:
        submitter = token(roles="scenario_operator", org=credit_code())
        made = data(await submit_methodology(http, submitter))["submitMethodology"]
        review = {"input": {"id": made["methodology"]["id"], "approve": True}}
        assessed = data(await op(http, "AssessMethodology", review, CENTER))["assessMethodology"]
        assert assessed["userErrors"] == []
    # The assessment is audited; its audit line reaches the log from the worker that ran it.
    assert "audit action=methodology.assess" in server.log()


async def test_healthz_is_503_when_redis_is_unreachable():
    env = cli_env(PUHUI_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    async with serving(env=env) as server, httpx.AsyncClient(base_url=server.base) as http:
        response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy", "database": "ok", "redis": "unreachable"}
