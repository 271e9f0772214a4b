"""POST /ingest/scenarios/{code}/records: NDJSON in, the same per-item answers as GraphQL."""

from __future__ import annotations

import asyncio
import errno
import gzip
import io
import json
import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from registry import ingest
from registry.models import ScenarioRecord
from registry.rules import shanghai_day
from tests.helpers import credit_code, cut_off_request, error_codes, op, token, unique
from tests.records_support import (
    World,
    add_resident,
    ago,
    answers,
    issue,
    make_world,
    ndjson,
    record,
    shanghai_noon,
    stream,
    submit,
)


async def _twin_worlds() -> tuple[World, World]:
    """Two scenarios alike: same factor, cap, and residents in the same authorization states."""
    pair = []
    for _ in range(2):
        world = await make_world(residents=2, grams_per_unit=100, cap=1000)
        await add_resident(world, since=None)
        await add_resident(world, since=timedelta(days=20), until=timedelta(days=10))
        pair.append(world)
    return pair[0], pair[1]


def _mixed_batch(world: World) -> list[dict[str, Any]]:
    a, b, never, revoked = world.subjects
    noon = shanghai_noon(3)
    return [
        record(a, 2.3, noon, "r0"),
        record(a, 6.789, noon + timedelta(minutes=1), "r1"),
        record(a, 5, noon + timedelta(minutes=2), "r2"),          # clipped to 92
        record(a, 1, noon + timedelta(minutes=3), "r0"),          # duplicate in the batch
        record(b, 0.01, noon, "r4"),                              # 1 g
        record(b, 0.001, noon, "r5"),                             # 0 g computed, accepted
        record(never, 1, noon, "r6"),                             # NOT_AUTHORIZED
        record(revoked, 1, ago(days=5), "r7"),                    # NOT_AUTHORIZED
        record(revoked, 1, ago(days=15), "r8"),
        record(a, 1, ago(days=95), "r9"),                         # OUT_OF_PERIOD
        record(b, 1, ago(hours=-2), "r10"),                       # OUT_OF_PERIOD (future)
        record(b, -1, noon, "r11"),                               # INVALID_INPUT
        record(never, 1, noon, "r12"),                            # rejected, ...
        record(b, 1, noon + timedelta(hours=1), "r12"),           # ... so this one counts
        record(b, 12, noon + timedelta(hours=2), "r14"),          # 1200 computed, clipped
        record(b, 3, noon + timedelta(days=1), "r15"),            # another day
    ]


async def _stored(world: World) -> dict[str, tuple[int, int]]:
    rows = await ScenarioRecord.filter(scenario_id=world.scenario_id).values_list(
        "external_ref", "computed_grams", "earned_grams"
    )
    return {ref: (c, e) for ref, c, e in rows}


async def _earned_on(world: World, who: str, moment) -> int:
    """Grams a resident earned on the Shanghai day of `moment` (what the daily cap reads)."""
    earned = await ScenarioRecord.filter(
        scenario_id=world.scenario_id, participant_id=world.residents[who], day=shanghai_day(moment)
    ).values_list("earned_grams", flat=True)
    return sum(earned)


async def test_streaming_gives_the_same_answers_and_records_as_the_batch_mutation(client):
    via_graphql, via_stream = await _twin_worlds()
    first = await submit(client, via_graphql, _mixed_batch(via_graphql))
    response = await stream(client, via_stream, ndjson(_mixed_batch(via_stream)))
    assert response.status_code == 200, response.text
    streamed = response.json()
    assert answers(streamed) == answers(first)
    assert answers(first) == (9, 1, [(6, "NOT_AUTHORIZED"), (7, "NOT_AUTHORIZED"),
                                      (9, "OUT_OF_PERIOD"), (10, "OUT_OF_PERIOD"),
                                      (11, "INVALID_INPUT"), (12, "NOT_AUTHORIZED")])
    assert await _stored(via_stream) == await _stored(via_graphql)
    for world in (via_graphql, via_stream):
        assert (await issue(client, world.code, ago(minutes=1)))["userErrors"] == []
    assert await _stored(via_stream) == await _stored(via_graphql)
    assert (await _stored(via_stream))["r2"] == (500, 92)
    assert (await _stored(via_stream))["r14"] == (1200, 899)  # b earned 101 g earlier that day

    # Again, now with everything already counted: duplicates and the same rejections, both ways.
    again_graphql = await submit(client, via_graphql, _mixed_batch(via_graphql))
    again_stream = (await stream(client, via_stream, ndjson(_mixed_batch(via_stream)))).json()
    assert answers(again_stream) == answers(again_graphql)
    assert again_graphql["accepted"] == 0 and again_graphql["duplicates"] == 11


async def test_chunk_boundaries_do_not_change_the_answers(client, monkeypatch):
    whole, chunked = await _twin_worlds()
    expected = (await stream(client, whole, ndjson(_mixed_batch(whole)))).json()
    monkeypatch.setattr(ingest, "CHUNK_LINES", 3)
    got = (await stream(client, chunked, ndjson(_mixed_batch(chunked)))).json()
    assert answers(got) == answers(expected)
    assert await _stored(chunked) == await _stored(whole)


async def test_a_stream_cut_off_keeps_the_chunks_applied_and_logs_no_error(
    app, client, monkeypatch, caplog
):
    world = await make_world(residents=1)
    who = world.subjects[0]
    monkeypatch.setattr(ingest, "CHUNK_LINES", 2)
    body = ndjson([record(who, 1, shanghai_noon(2) + timedelta(minutes=i), f"cut{i}")
                   for i in range(5)])
    headers = {"authorization": f"Bearer {world.operator}", "content-type": "application/x-ndjson"}
    with caplog.at_level(logging.INFO):
        await cut_off_request(app, f"/ingest/scenarios/{world.code}/records", headers,
                                     body[:-10], declared=len(body))  # the fifth line cut off
    assert sorted(await _stored(world)) == ["cut0", "cut1", "cut2", "cut3"]  # two chunks of two
    assert [r.levelname for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("the client disconnected; the 4 records accepted before stay accepted" in r.message
               for r in caplog.records)
    resent = (await stream(client, world, body)).json()
    assert (resent["accepted"], resent["duplicates"], resent["rejected"]) == (1, 4, [])


async def test_a_failure_mid_stream_answers_a_code_with_what_stays_accepted(client, monkeypatch, caplog):
    world = await make_world(residents=1)
    who = world.subjects[0]
    monkeypatch.setattr(ingest, "CHUNK_LINES", 2)
    apply_batch = ingest.apply_batch
    chunks = []

    async def lose_the_database_on_the_second_chunk(*args):
        chunks.append(args)
        if len(chunks) == 2:
            raise ConnectionError("the connection to the database was lost")
        return await apply_batch(*args)

    monkeypatch.setattr(ingest, "apply_batch", lose_the_database_on_the_second_chunk)
    body = ndjson([record(who, 1, shanghai_noon(2) + timedelta(minutes=i), f"lost{i}") for i in range(5)])
    with caplog.at_level(logging.INFO):
        response = await stream(client, world, body)
    assert response.status_code == 500
    answer = response.json()
    assert answer["code"] == "INTERNAL_SERVER_ERROR" and "Send the body again" in answer["message"]
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    assert sorted(await _stored(world)) == ["lost0", "lost1"]
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info is not None  # logged once, with its cause
    monkeypatch.setattr(ingest, "apply_batch", apply_batch)
    resent = (await stream(client, world, body)).json()
    assert (resent["accepted"], resent["duplicates"], resent["rejected"]) == (3, 2, [])


async def test_a_failure_while_counting_a_chunk_counts_it_once(client, monkeypatch):
    class FullDisk(io.BytesIO):
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    world = await make_world(residents=1)
    who = world.subjects[0]
    monkeypatch.setattr(ingest, "CHUNK_LINES", 2)
    monkeypatch.setattr(ingest.tempfile, "SpooledTemporaryFile", lambda max_size: FullDisk())
    lines = [record(who, 1, ago(hours=3), "full0"), {"subject": who}, record(who, 1, ago(hours=2), "full2")]
    response = await stream(client, world, ndjson(lines))  # the first chunk's rejection is not kept
    assert response.status_code == 500
    assert (response.json()["accepted"], response.json()["duplicates"]) == (1, 0)
    assert sorted(await _stored(world)) == ["full0"]


def _slow_chunks_of_two(monkeypatch) -> asyncio.Event:
    """Chunks of two lines, each applied 0.3 s after it is handed over; the event is set then."""
    monkeypatch.setattr(ingest, "CHUNK_LINES", 2)
    apply_batch = ingest.apply_batch
    applying = asyncio.Event()

    async def slowly(*args):
        applying.set()
        await asyncio.sleep(0.3)
        return await apply_batch(*args)

    monkeypatch.setattr(ingest, "apply_batch", slowly)
    return applying


@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_stream_cancelled_mid_chunk_finishes_the_chunk_and_logs_the_count(
    client, monkeypatch, caplog, cancels
):
    """As when the server stops and cancels a request (once, or again while it winds down): the
    chunk handed over is applied whole and counted in the log, so a resend can be reconciled."""
    world = await make_world(residents=1)
    who = world.subjects[0]
    applying = _slow_chunks_of_two(monkeypatch)
    body = ndjson([record(who, 1, ago(hours=3), "cancel0"), record(who, 1, ago(hours=2), "cancel1")])
    with caplog.at_level(logging.INFO):
        request = asyncio.create_task(stream(client, world, body))
        await applying.wait()
        for _ in range(cancels):
            request.cancel()
            await asyncio.sleep(0.01)
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.gather(*ingest._WINDING_DOWN)
    assert sorted(await _stored(world)) == ["cancel0", "cancel1"]
    assert any("the request was cancelled; the 2 records accepted before stay accepted" in r.message
               for r in caplog.records)


async def test_a_stream_cancelled_while_it_winds_down_after_a_disconnect_keeps_its_chunk(
    app, monkeypatch, caplog
):
    world = await make_world(residents=1)
    who = world.subjects[0]
    applying = _slow_chunks_of_two(monkeypatch)
    body = ndjson([record(who, 1, ago(hours=3), "gone0"), record(who, 1, ago(hours=2), "gone1")])
    headers = {"authorization": f"Bearer {world.operator}", "content-type": "application/x-ndjson"}
    with caplog.at_level(logging.INFO):
        request = asyncio.create_task(cut_off_request(
            app, f"/ingest/scenarios/{world.code}/records", headers, body, declared=len(body) + 10))
        await applying.wait()
        await asyncio.sleep(0.01)  # the disconnect is read; the chunk is being waited for
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.gather(*ingest._WINDING_DOWN)
    assert sorted(await _stored(world)) == ["gone0", "gone1"]
    assert any("the client disconnected; the 2 records accepted before stay accepted" in r.message
               for r in caplog.records)


async def test_date_times_are_read_as_the_mutation_reads_them(client):
    """The stream reads occurredAt as the GraphQL DateTime scalar does: the same records, the
    same instants, and what the scalar refuses is refused."""
    day = (datetime.now(timezone(timedelta(hours=8))) - timedelta(days=3)).date()
    unusual = [f"{day:%Y-%m-%d}T24:00:00+08:00",  # the next midnight
               f"{day:%Y-%m-%d}t10:00:00z", f"{day:%Y-%j}T10:00:00Z", f"{day:%Y%m%d}T100000Z"]
    streamed, submitted = await make_world(residents=1), await make_world(residents=1)
    for world in (streamed, submitted):
        [who] = world.subjects
        rows = [{**record(who, 1, ago(days=1), f"u{i}"), "occurredAt": at}
                for i, at in enumerate(unusual)]
        got = ((await stream(client, world, ndjson(rows))).json() if world is streamed
               else await submit(client, world, rows))
        assert answers(got) == (4, 0, []), (world is streamed, got)
    instants = [await ScenarioRecord.filter(scenario_id=w.scenario_id).order_by("external_ref")
                .values_list("occurred_at", flat=True) for w in (streamed, submitted)]
    assert instants[0] == instants[1]
    assert instants[0][0] == datetime.combine(day + timedelta(days=1), datetime.min.time(),
                                              timezone(timedelta(hours=8)))
    for i, text in enumerate([f"{day:%Y-%m-%d}T10:00:00+08:00:30", f"{day:%Y-%m-%d}T10:00:00+00:00:00",
                              f"{day:%Y-%m-%d}T10:00:00 +08:00", f"{day:%Y-%m-%d}T10:00:00.Z",
                              f"{day:%Y-%m-%d}T10:00:00+08:60", f"{day:%Y-%m-%d}T10:00:00+0860",
                              f"{day:%G-W%V}T10:00:00+08:00"]):
        row = {**record(streamed.subjects[0], 1, ago(days=1), f"bad{i}"), "occurredAt": text}
        refused = (await stream(client, streamed, ndjson([row]))).json()
        assert answers(refused) == (0, 0, [(0, "INVALID_INPUT")]), text
        mutation = await op(client, "SubmitScenarioRecords", {"input": {
            "scenarioCode": submitted.code, "records": [{**row, "subject": submitted.subjects[0]}]}},
            submitted.operator)
        assert error_codes(mutation) == ["BAD_USER_INPUT"], text


async def test_malformed_lines_are_rejected_by_index_and_blank_lines_skipped(client):
    world = await make_world(residents=1)
    who = world.subjects[0]
    good = json.dumps(record(who, 1, ago(hours=2))).encode()
    lines = [
        good,                                              # 0
        b"{not json",                                      # 1
        b"",                                               # 2 blank: skipped
        b"[1, 2]",                                         # 3 not an object
        b'{"subject": "x", "quantity": NaN, "occurredAt": "2026-01-01T00:00:00Z", "externalRef": "n"}',
        b"\xff\xfe",                                       # 5 not UTF-8
        json.dumps({**record(who, 1, ago(hours=2)), "quantity": "1"}).encode(),  # 6 a string
        json.dumps({**record(who, 1, ago(hours=2)), "quantity": True}).encode(),  # 7 a boolean
        json.dumps({**record(who, 1, ago(hours=2)), "occurredAt": "yesterday"}).encode(),  # 8
        json.dumps({k: v for k, v in record(who, 1, ago(hours=2)).items() if k != "subject"}).encode(),
        b"x" * (ingest.MAX_LINE + 10),                     # 10 too long
        json.dumps(record(who, 1, ago(hours=1))).encode(),  # 11, last line without a newline
    ]
    response = await stream(client, world, b"\n".join(lines))
    assert response.status_code == 200, response.text
    assert answers(response.json()) == (2, 0, [(i, "INVALID_INPUT") for i in (1, 3, 4, 5, 6, 7, 8, 9, 10)])


async def test_a_stream_stops_once_more_lines_were_rejected_than_an_answer_lists(client, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_LINES", 4)
    monkeypatch.setattr(ingest, "MAX_REJECTED", 5)
    world = await make_world(residents=1)
    good = [json.dumps(record(world.subjects[0], 1, ago(hours=2))).encode() for _ in range(3)]
    # A chunk of 3 accepted and 1 rejected, then chunks of junk: the third chunk brings the
    # rejections past 5, and the stream stops after it, never reading the fourth.
    body = b"\n".join([*good, b"x", *[b"x"] * 8, *[json.dumps(record(world.subjects[0], 1, ago(
        hours=1))).encode()] * 4])
    response = await stream(client, world, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "INVALID_INPUT" and "More than 5 lines were rejected" in answer["message"]
    assert (answer["accepted"], answer["duplicates"]) == (3, 0)
    assert await ScenarioRecord.filter(scenario_id=world.scenario_id).count() == 3


async def test_lines_no_date_time_or_database_can_hold_are_rejected_alone(client):
    world = await make_world(residents=1)
    who = world.subjects[0]

    def line(ref: str, **fields: Any) -> bytes:
        return json.dumps({**record(who, 1, ago(hours=2), ref), **fields}).encode()

    lines = [
        line("ok-1"),
        line("early", occurredAt="0001-01-01T00:00:00+14:00"),
        line("late", occurredAt="9999-12-31T23:59:59-14:00"),
        line("exact-late", quantity=1.0000000000000001, occurredAt="9999-12-31T23:59:59-14:00"),
        line("ok-2").replace(b'"ok-2"', b'"x-\\ud800"'),  # a lone surrogate
        line("ok-2").replace(b'"%s"' % who.encode(), b'"\\udfff"'),
        line("nul-\u0000"),  # a NUL character, which PostgreSQL cannot store
        line("ok-2").replace(b'"%s"' % who.encode(), b'"a\\u0000b"'),
        line("ok-2"),
    ]
    response = await stream(client, world, b"\n".join(lines))
    assert response.status_code == 200, response.text
    assert answers(response.json()) == (2, 0, [(i, "INVALID_INPUT") for i in (1, 2, 3, 4, 5, 6, 7)])
    messages = [r["message"] for r in response.json()["rejected"]]
    assert all("occurredAt" in m for m in messages[:3])
    assert [m.split()[0] for m in messages[3:]] == ["externalRef", "subject", "externalRef", "subject"]


async def test_a_line_too_long_is_refused_however_the_body_arrives(client):
    whole, piecewise = await _twin_worlds()

    def body(world: World) -> bytes:
        who = world.subjects[0]
        padded = {**record(who, 1, ago(hours=2), "long"), "pad": "x" * ingest.MAX_LINE}
        return ndjson([padded, record(who, 1, ago(hours=1), "short")])

    async def pieces(data: bytes):
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    at_once = await stream(client, whole, body(whole))
    headers = {"authorization": f"Bearer {piecewise.operator}", "content-type": "application/x-ndjson"}
    in_pieces = await client.post(f"/ingest/scenarios/{piecewise.code}/records",
                                  content=pieces(body(piecewise)), headers=headers)
    assert at_once.json() == in_pieces.json()
    assert answers(at_once.json()) == (1, 0, [(0, "INVALID_INPUT")])


async def test_an_empty_body_counts_nothing(client):
    world = await make_world(residents=1)
    response = await stream(client, world, b"")
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "duplicates": 0, "rejected": []}


async def test_ingest_answers_other_methods_and_encoded_bodies_with_coded_errors(client):
    world = await make_world(residents=1)
    url = f"/ingest/scenarios/{world.code}/records"
    auth = {"authorization": f"Bearer {world.operator}"}
    for method in ("GET", "PUT", "DELETE", "TRACE", "PROPFIND"):
        response = await client.request(method, url, headers=auth)
        assert response.status_code == 405, method
        assert response.headers["allow"] == "POST"
        assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    body = gzip.compress(ndjson([record(world.subjects[0], 1, ago(hours=1), "zipped")]))
    response = await client.post(url, content=body, headers={**auth, "content-encoding": "gzip"})
    assert response.status_code == 415
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert await _stored(world) == {}
    plain = await client.post(url, content=gzip.decompress(body),
                              headers={**auth, "content-encoding": "Identity"})
    assert answers(plain.json()) == (1, 0, [])


async def test_ingest_refuses_without_a_valid_token_role_or_ownership(client):
    world = await make_world(residents=1)
    body = ndjson([record(world.subjects[0], 1, ago(hours=1))])
    url = f"/ingest/scenarios/{world.code}/records"
    anonymous = await client.post(url, content=body)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "UNAUTHENTICATED")
    bad = await client.post(url, content=body, headers={"authorization": "Bearer nope"})
    assert (bad.status_code, bad.json()["code"]) == (401, "UNAUTHENTICATED")
    resident = await stream(client, world, body, auth=token(roles="resident"))
    assert (resident.status_code, resident.json()["code"]) == (403, "FORBIDDEN")
    other = token(unique("op"), "scenario_operator", org=credit_code())
    foreign = await stream(client, world, body, auth=other)
    missing = await stream(client, world, body, auth=other, code="NO-SUCH-SCENARIO")
    assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())
    assert foreign.status_code == 404 and foreign.json()["code"] == "NOT_FOUND"
    too_long = await stream(client, world, body, code="A" * 65)
    assert (too_long.status_code, too_long.json()["code"]) == (404, "NOT_FOUND")
    assert await ScenarioRecord.filter(scenario_id=world.scenario_id).count() == 0


async def test_ingest_refuses_a_scenario_that_is_not_published(client):
    from registry.models import Scenario

    world = await make_world(residents=1)
    await Scenario.filter(id=world.scenario_id).update(status="SUSPENDED")
    response = await stream(client, world, ndjson([record(world.subjects[0], 1, ago(hours=1))]))
    assert (response.status_code, response.json()["code"]) == (409, "INVALID_STATE")
    assert await ScenarioRecord.filter(scenario_id=world.scenario_id).count() == 0


async def test_concurrent_streams_never_exceed_the_daily_cap(client):
    world = await make_world(residents=1, grams_per_unit=100, cap=1000)
    who = world.subjects[0]
    noon = shanghai_noon(4)
    bodies = [ndjson([record(who, 3, noon + timedelta(seconds=i * 10 + j)) for j in range(3)])
              for i in range(4)]
    responses = await asyncio.gather(*(stream(client, world, b) for b in bodies))
    assert all(r.status_code == 200 for r in responses)
    assert sum(r.json()["accepted"] for r in responses) == 12
    assert (await issue(client, world.code, noon + timedelta(minutes=5)))["userErrors"] == []
    stored = await _stored(world)
    assert sum(e for _, e in stored.values()) == 1000
    assert await _earned_on(world, who, noon) == 1000


async def test_stored_records_hold_exactly_what_was_sent(client):
    world = await make_world(residents=1, grams_per_unit=47, cap=None)
    who = world.subjects[0]
    sent = [
        record(who, 2.35, shanghai_noon(2) + timedelta(microseconds=123457), "plain-ref"),
        record(who, 7, ago(days=1), "非ASCII-引用-é"),
        record(who, 0.1, shanghai_noon(1) + timedelta(hours=11, minutes=59), "late-evening"),
    ]
    sent[1]["occurredAt"] = (ago(days=1)).astimezone(timezone(timedelta(hours=-7, minutes=-30))).isoformat()
    response = await stream(client, world, ndjson(sent))
    assert answers(response.json()) == (3, 0, [])
    rows = await ScenarioRecord.filter(scenario_id=world.scenario_id).values(
        "external_ref", "participant_id", "quantity", "computed_grams", "earned_grams",
        "occurred_at", "day", "created_at",
    )
    stored = {r["external_ref"]: r for r in rows}
    assert set(stored) == {r["externalRef"] for r in sent}
    for line in sent:
        row = stored[line["externalRef"]]
        moment = datetime.fromisoformat(line["occurredAt"])
        assert row["occurred_at"] == moment
        assert row["day"] == shanghai_day(moment)
        assert row["quantity"] == line["quantity"]
        assert row["computed_grams"] == row["earned_grams"] == int(Decimal(repr(line["quantity"])) * 47)
        assert row["participant_id"] == world.residents[who]
        assert row["created_at"] is not None
