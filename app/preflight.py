"""Checks the `puhui` commands run before their work: the database answers (and is migrated)."""

from __future__ import annotations

import asyncio

from tortoise.context import TortoiseContext
from tortoise.migrations.executor import MigrationExecutor

from app.db import tortoise_config
from app.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10.0


class PreflightError(Exception):
    """The service cannot start; the message is one line for the operator."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


async def check_database(settings: Settings, migrated: bool = True) -> None:
    """Raise PreflightError unless the database answers and, if `migrated`, has every migration."""
    try:
        config = tortoise_config(settings)
        async with TortoiseContext() as context:
            await asyncio.wait_for(context.init(config=config), CONNECT_TIMEOUT_SECONDS)
            connection = context.db("default")
            await asyncio.wait_for(connection.execute_query("SELECT 1"), CONNECT_TIMEOUT_SECONDS)
            steps = await MigrationExecutor(connection, config["apps"]).plan() if migrated else []
    except TimeoutError:
        raise PreflightError(
            f"the database did not answer within {CONNECT_TIMEOUT_SECONDS:.0f} s"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to connect is reported in one line
        raise PreflightError(f"cannot use the database: {_reason(exc)}") from None
    pending = [f"{s.migration.app_label}.{s.migration.name}" for s in steps if not s.backward]
    if pending:
        raise PreflightError(
            f"the database lacks {len(pending)} migration(s), first {pending[0]}: run `puhui migrate`"
        )
