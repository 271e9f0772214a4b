"""Voucher expiry by the periodic jobs: refunded like a cancellation, once, from any worker."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from app import jobs
from app.ledger.verify import verify
from graphql_schema.ids import decode_id
from mall.models import Redemption, RedemptionTally
from mall.redemptions import expire_due
from tests.mall_support import approved_merchant, iso, listed_right, points_of, redeem, resident, stock_of
from tests.serve_support import run_cli


async def _voucher_ending_soon(client, seconds: float = 1.5):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="30", stock=4,
                                  validUntil=iso(timedelta(seconds=seconds)))
    buyer = await resident(points=100)
    payload = await redeem(client, buyer, right_id)
    assert payload["userErrors"] == [], payload
    return merchant, right_id, buyer, decode_id("Redemption", payload["redemption"]["id"])


async def test_expired_vouchers_are_refunded_once_even_when_two_runs_race(client):
    merchant, right_id, buyer, pk = await _voucher_ending_soon(client, seconds=600)
    assert await points_of(buyer.participant_id) == (70, 0)
    later = datetime.now(UTC) + timedelta(seconds=601)
    first, second = await asyncio.gather(expire_due(later), expire_due(later))
    assert first + second >= 1
    row = await Redemption.get(id=pk)
    assert row.status == "EXPIRED" and row.closed_at is not None
    assert await points_of(buyer.participant_id) == (100, 0)
    assert await points_of(merchant.participant_id) == (0, 0)
    assert await stock_of(client, right_id, merchant) == 4
    tally = await RedemptionTally.get(
        right_id=decode_id("Right", right_id), participant_id=buyer.participant_id
    )
    assert tally.quantity == 0
    assert await expire_due(later) == 0
    assert (await verify()).ok


async def test_unexpired_and_used_vouchers_are_left_alone(client):
    merchant, right_id, buyer, pk = await _voucher_ending_soon(client, seconds=600)
    await expire_due()
    assert (await Redemption.get(id=pk)).status == "ISSUED"


async def test_the_background_loop_expires_vouchers(client):
    _, _, buyer, pk = await _voucher_ending_soon(client, seconds=1)
    await asyncio.sleep(1.2)
    task = asyncio.get_running_loop().create_task(jobs.run_forever(interval=1, first_delay=0))
    try:
        for _ in range(50):
            if (await Redemption.get(id=pk)).status == "EXPIRED":
                break
            await asyncio.sleep(0.1)
    finally:
        await jobs.stop_jobs(task)
    assert (await Redemption.get(id=pk)).status == "EXPIRED"
    assert await points_of(buyer.participant_id) == (100, 0)


async def test_puhui_jobs_run_once(client):
    _, _, buyer, pk = await _voucher_ending_soon(client, seconds=1)
    await asyncio.sleep(1.2)
    result = await run_cli("jobs", "run-once")
    assert result.code == 0, result.stderr
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["vouchers_expired"] >= 1
    assert (await Redemption.get(id=pk)).status == "EXPIRED"
    assert await points_of(buyer.participant_id) == (100, 0)
