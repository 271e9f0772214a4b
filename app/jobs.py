"""Periodic jobs: voucher expiry (and whatever else must happen by the clock).

`run_all_once()` runs every job once (`puhui jobs run-once` for operators). The service runs
them itself in a background loop started from the lifespan: every JOB_INTERVAL seconds each
worker asks the store for a lease (SET NX with a TTL of one interval); only the worker that
gets it runs the jobs, so `--workers N` does the work once per interval, not N times. The lease
is never released early: it is a rate limit as much as a lock. Should a lease lapse while a
run is still going, a second run is harmless: each job is idempotent (a voucher is expired and
refunded by a conditional update that only one transaction can win).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from app.redis import database_digest, get_store

log = logging.getLogger(__name__)
JOB_INTERVAL = 60
FIRST_RUN_DELAY = 5


async def run_all_once() -> dict[str, int]:
    """Run every periodic job once; what each did."""
    from mall.redemptions import expire_due

    return {"vouchers_expired": await expire_due()}


def lease_key() -> str:
    """The store key of the jobs lease, one per database (servers of other databases may share Redis)."""
    return f"puhui:jobs:{database_digest()}:lease"


async def _take_lease(interval: int) -> bool:
    try:
        return await get_store().set_nx(lease_key(), str(os.getpid()), interval)
    except Exception:  # noqa: BLE001 - without the store every worker runs; the jobs are idempotent
        log.warning("jobs lease unavailable; running without it")
        return True


async def run_forever(interval: int = JOB_INTERVAL, first_delay: float = FIRST_RUN_DELAY) -> None:
    """Run the jobs every `interval` seconds when this worker holds the lease; never raises."""
    await asyncio.sleep(first_delay)
    while True:
        try:
            if await _take_lease(interval):
                done = await run_all_once()
                if any(done.values()):
                    log.info("periodic jobs: %s", done)
        except Exception:
            log.exception("periodic jobs failed")
        await asyncio.sleep(interval)


def start_jobs() -> asyncio.Task[None]:
    """Start the background loop on the running event loop."""
    return asyncio.get_running_loop().create_task(run_forever(), name="puhui-jobs")


async def stop_jobs(task: asyncio.Task[None]) -> None:
    """Stop the background loop."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
