"""Test session: one fresh database per run (PostgreSQL or SQLite), migrated with the real
migrations, Redis or the in-process stand-in, and a ledger check when the suite ends.

Select the backend with PUHUI_DATABASE_URL: a postgres:// URL names the server (a database of
its own is created and dropped), anything else runs on a temporary SQLite file. PUHUI_REDIS_URL
selects Redis; unset, the in-process stand-in is used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

os.environ["PUHUI_ENV"] = "test"
os.environ.setdefault(
    "PUHUI_JWT_SECRET", "test-secret-for-the-puhui-suite-0123456789-abcdefghijklmnopqrstuvwxyz"
)

import asyncpg
import httpx
import pytest

BASE_URL = os.environ.get("PUHUI_DATABASE_URL", "")
USE_POSTGRES = BASE_URL.startswith(("postgres://", "postgresql://"))
TEST_DB = f"puhui_test_{uuid.uuid4().hex[:10]}"


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1).split("?", 1)[0]


if USE_POSTGRES:
    os.environ["PUHUI_DATABASE_URL"] = _with_db(BASE_URL, TEST_DB)
else:
    _tmp = tempfile.mkdtemp(prefix="puhui-test-")
    os.environ["PUHUI_DATABASE_URL"] = f"sqlite://{_tmp}/puhui.sqlite3"


@pytest.fixture(scope="session")
async def database() -> AsyncIterator[str]:
    """A migrated database for the whole run; the ledger must verify when the run ends."""
    from app.db import close_db, init_db, run_migrations
    from app.ledger.verify import verify

    if USE_POSTGRES:
        admin = await asyncpg.connect(_asyncpg_dsn(BASE_URL))
        await admin.execute(f'CREATE DATABASE "{TEST_DB}"')
        await admin.close()
    await run_migrations()
    await init_db()
    try:
        yield os.environ["PUHUI_DATABASE_URL"]
        from app.events import flush_notices
        from points.credit import flush_refreshes

        await flush_notices()
        await flush_refreshes()
        report = await verify()
        assert report.ok, "ledger verify failed after the suite: " + "; ".join(report.problems[:20])
    finally:
        from app.redis import close_store

        if os.environ.get("PUHUI_REDIS_URL"):
            await _forget_store_keys()
        await close_store()
        await close_db()
        if USE_POSTGRES:
            admin = await asyncpg.connect(_asyncpg_dsn(BASE_URL))
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
            await admin.close()
        else:
            shutil.rmtree(_tmp, ignore_errors=True)


async def _forget_store_keys() -> None:
    """Drop what the run left in Redis: the keys named for its database (counters, marks, lease)."""
    from app.redis import database_digest, get_store

    client = get_store().client  # type: ignore[attr-defined]
    keys = [key async for key in client.scan_iter(match=f"puhui:*:{database_digest()}:*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture(scope="session")
async def app(database: str):
    """The ASGI application on the test database, with what its lifespan would start."""
    from app.main import create_app
    from mall.stock_gate import start_count

    built = create_app(manage_db=False)
    await start_count()
    return built


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://puhui.test") as c:
        yield c


@pytest.fixture
async def every_mark_held_afterwards() -> AsyncIterator[None]:
    """For tests that empty the stock gate's store or move its marks-since: leave it holding
    every mark, as a quiet start does, so later tests find the gate as a running service would."""
    from tests.mall_support import hold_every_mark

    yield
    await hold_every_mark()
