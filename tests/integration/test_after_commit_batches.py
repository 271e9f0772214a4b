"""After-commit work in batches: credit refreshes and account-change notices, queued per process,
done once per participant, and done before the service stops (PostgreSQL or SQLite, Redis or
the stand-in)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from app.events import account_changed, account_channel, flush_notices
from app.redis import RedisStore, Store, get_store
from app.settings import get_settings
from points import credit
from points.credit import current_grade, flush_refreshes, refresh_credit, refresh_credit_many
from points.credit_rules import CreditInputs, CreditResult
from points.models import CreditStanding, MisconductFlag
from tests.helpers import data, gql
from tests.ledger_support import issue_grams
from tests.points_support import CENTER, resident

WAIT = 10.0  # a hang guard, not a latency assertion
STAFF = """query($s: String) { participantStanding(subject: $s) { creditStanding { score grade } } }"""


async def _next(listener) -> str:
    async with asyncio.timeout(WAIT):
        return await listener.next()


async def _score(participant_id: int) -> int | None:
    row = await CreditStanding.get_or_none(participant_id=participant_id)
    return None if row is None else row.score


async def _flag(participant_id: int) -> None:
    """A fraud finding recorded without a refresh: it leaves every balance as it was."""
    await MisconductFlag.create(participant_id=participant_id, kind="FRAUDULENT_RECORDS",
                                reason="fabricated records", recorded_by="center-ops",
                                recorded_at=datetime.now(UTC))


async def test_a_burst_of_refreshes_recomputes_each_participant_once(database, monkeypatch):
    people = [(await resident())[2] for _ in range(6)]
    earners = people[::2]
    for pid in earners:
        await issue_grams(pid, 50_000)  # 10 more points of score, once recomputed
    await flush_refreshes()  # whatever earlier work queued
    computed: list[CreditInputs] = []
    compute = credit.compute_credit

    def counted(inputs: CreditInputs) -> CreditResult:
        computed.append(inputs)
        return compute(inputs)

    monkeypatch.setattr(credit, "compute_credit", counted)  # counts, computes as before

    for _ in range(3):  # as many commits per participant, in one burst
        for pid in people:
            await refresh_credit(pid)
        await refresh_credit_many(people + people)
    await flush_refreshes()

    assert len(computed) == len(people)
    assert [await _score(pid) for pid in people] == [410 if pid in earners else 400 for pid in people]


async def test_queued_refreshes_are_done_in_the_background(database):
    _, _, pid = await resident()
    assert await current_grade(pid) == "B"
    await _flag(pid)
    await refresh_credit(pid)
    for _ in range(int(WAIT / 0.01)):  # no flush asked for: the flusher does it on its own
        if await _score(pid) == 150:
            break
        await asyncio.sleep(0.01)
    assert await _score(pid) == 150


async def test_a_grade_check_does_not_wait_for_a_queued_refresh(client):
    subject, _, pid = await resident()
    assert await current_grade(pid) == "B"
    await _flag(pid)
    await refresh_credit(pid)  # queued: the stored standing may still say B
    assert await current_grade(pid) == "C"
    seen = data(await gql(client, STAFF, {"s": subject}, CENTER))["participantStanding"]
    assert seen["creditStanding"] == {"score": 150, "grade": "C"}


async def test_notices_to_one_participant_in_a_window_are_published_once(database):
    _, _, pid = await resident()
    store = get_store()
    channel = account_channel(pid)
    async with store.listen(channel) as listener:
        await account_changed([pid])  # published by the flusher, no flush asked for
        assert await _next(listener) == "changed"

        for _ in range(5):
            await account_changed([pid, pid])
        await flush_notices()
        await store.publish(channel, "after")  # the next message once the flush is out
        assert await _next(listener) == "changed"
        assert await _next(listener) == "after"


@contextlib.asynccontextmanager
async def _outliving_store() -> AsyncIterator[Store]:
    """A store whose listeners outlive the app's shutdown (which closes the process's store)."""
    url = get_settings().redis_url
    if not url:
        yield get_store()  # the stand-in: closing it delivers on as before
        return
    store = RedisStore(url)
    try:
        yield store
    finally:
        await store.close()


async def test_shutdown_does_the_queued_work(database):
    from app.main import create_app

    _, _, pid = await resident()
    assert await current_grade(pid) == "B"
    await _flag(pid)
    app = create_app(manage_db=False)
    thresholds = gc.get_threshold()
    try:
        async with _outliving_store() as store, store.listen(account_channel(pid)) as listener:
            async with app.router.lifespan_context(app):
                await account_changed([pid])
                await refresh_credit(pid)
            assert await _score(pid) == 150
            assert await _next(listener) == "changed"
    finally:  # the app's startup tunes the collector for a server process; give it back
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_a_batch_that_read_before_a_flag_never_overwrites_the_standing_after_it(
    database, monkeypatch
):
    """A refresh batch reads its inputs, a fraud flag is recorded and the standing recomputed
    (grade C), then the batch writes its older result: the standing stays C."""
    _, _, pid = await resident()
    assert await current_grade(pid) == "B"
    original = credit._store
    read, release = asyncio.Event(), asyncio.Event()

    async def held_store(results, now):
        if not read.is_set():  # only the first (stale) batch waits before writing
            read.set()
            await release.wait()
        await original(results, now)

    monkeypatch.setattr(credit, "_store", held_store)
    stale = asyncio.create_task(credit.recompute_many([pid]))
    async with asyncio.timeout(WAIT):
        await read.wait()
    await _flag(pid)
    await credit.recompute_credit(pid)  # what recording a flag does
    release.set()
    async with asyncio.timeout(WAIT):
        await stale
    assert await current_grade(pid) == "C"
    assert await _score(pid) == 150
