"""Health of the process's dependencies: the database, and Redis when configured."""

from __future__ import annotations

import asyncio
import logging

from tortoise import connections

from app.redis import get_store
from app.settings import Settings

log = logging.getLogger(__name__)
CHECK_TIMEOUT_SECONDS = 2.0


async def _database_ok() -> bool:
    try:
        await asyncio.wait_for(
            connections.get("default").execute_query("SELECT 1"), CHECK_TIMEOUT_SECONDS
        )
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        log.warning("health: database unreachable: %s", type(exc).__name__)
        return False
    return True


async def _redis_ok(settings: Settings) -> bool:
    try:
        return await asyncio.wait_for(get_store(settings).ping(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("health: redis did not answer within %.0f s", CHECK_TIMEOUT_SECONDS)
        return False


async def health(settings: Settings) -> tuple[bool, dict[str, str]]:
    """Whether every dependency answers, and each one's state ("ok" or "unreachable")."""
    checks = {"database": "ok" if await _database_ok() else "unreachable"}
    if settings.redis_url:
        checks["redis"] = "ok" if await _redis_ok(settings) else "unreachable"
    return all(v == "ok" for v in checks.values()), checks
