"""accountChanged over graphql-transport-ws against a real `puhui serve` process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import contract_operations, credit_code, data, token, unique
from tests.live_support import acknowledged, close_code, served, subscribed
from tests.points_support import behavior_scenario, consent, event, resident, set_rate
from tests.serve_support import serving

log = logging.getLogger(__name__)
ACCOUNT_CHANGED = contract_operations()["AccountChanged"]
CONVERT = contract_operations()["ConvertReductions"]
ACCOUNT_QUERY = "{ me { account { points } } }"


async def _convert_over_http(base: str, auth: str, grams: int) -> dict:
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/graphql",
            json={"query": CONVERT,
                  "variables": {"input": {"grams": str(grams), "idempotencyKey": unique("k")}}},
            headers={"authorization": f"Bearer {auth}"},
        )
    payload = data(response.json())["convertReductions"]
    assert payload["userErrors"] == [], payload
    return payload


def _account(grams: int, points: int, experience: int = 0, level: str = "L1") -> dict:
    return {"accountChanged": {"reductionGrams": str(grams), "points": str(points),
                               "experience": experience, "level": {"code": level}}}


async def test_a_resident_receives_only_their_own_account_changes(client):
    await set_rate(client, 10)
    _, alice, _ = await resident(1_000)
    _, bob, _ = await resident(500)
    async with served() as base, \
            subscribed(base, alice, ACCOUNT_CHANGED) as a, \
            subscribed(base, bob, ACCOUNT_CHANGED) as b:
        assert await a.next_data() == _account(1_000, 0)
        assert await b.next_data() == _account(500, 0)
        started = time.monotonic()
        await _convert_over_http(base, alice, 100)
        assert await a.next_data() == _account(900, 10)
        log.info("accountChanged delivered %.3f s after the mutation began",
                 time.monotonic() - started)
        await _convert_over_http(base, bob, 50)
        assert await b.next_data() == _account(450, 5)
        await _convert_over_http(base, alice, 200)
        assert await a.next_data() == _account(700, 30)


async def test_experience_and_level_changes_are_pushed(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 120, 1000)])
    subject, auth, pid = await resident()
    await consent(pid, code)
    async with served() as base, subscribed(base, auth, ACCOUNT_CHANGED) as sub:
        assert await sub.next_data() == _account(0, 0)
        async with httpx.AsyncClient(base_url=base) as http:
            response = await http.post("/graphql", json={
                "query": contract_operations()["RecordBehaviors"],
                "variables": {"input": {"scenarioCode": code,
                                        "events": [event(subject, "recycle")]}},
            }, headers={"authorization": f"Bearer {operator}"})
        assert data(response.json())["recordBehaviors"]["accepted"] == 1
        assert await sub.next_data() == _account(0, 0, experience=120, level="L2")


async def test_a_connection_without_a_valid_token_is_refused(database):
    async with served() as base:
        for jwt in (None, "not-a-token"):
            with pytest.raises(ConnectionClosed) as closed:
                async with subscribed(base, jwt, ACCOUNT_CHANGED) as sub:
                    await sub.message()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        url = base.replace("http://", "ws://") + "/graphql"
        for payload in ({}, {"authorization": "Bearer not-a-token"}):  # the legacy protocol
            async with connect(url, subprotocols=["graphql-ws"]) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
                refused = json.loads(await asyncio.wait_for(ws.recv(), 20))
                assert refused["type"] == "connection_error", refused
                assert refused["payload"]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_connection_stops_acting_for_its_caller_when_the_token_expires(client):
    await set_rate(client, 10)
    subject, _, _ = await resident(1_000)
    short = token(subject, ttl_seconds=3)
    async with served() as base:
        async with subscribed(base, short, ACCOUNT_CHANGED) as sub:
            assert await sub.next_data() == _account(1_000, 0)
            await asyncio.sleep(3.5)
            ended = await sub.message()  # the open subscription ends at the token's exp
            assert ended["type"] in ("next", "error"), ended
            errors = ended["payload"].get("errors", []) if ended["type"] == "next" else ended["payload"]
            assert [e["extensions"]["code"] for e in errors] == ["UNAUTHENTICATED"]
            convert = {"query": CONVERT,
                       "variables": {"input": {"grams": "100", "idempotencyKey": unique("k")}}}
            await sub.ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": convert}))
            answer = await sub.message()
            while answer.get("id") != "2":
                answer = await sub.message()
            assert answer["type"] in ("next", "error"), answer
            errors = answer["payload"].get("errors", []) if answer["type"] == "next" else answer["payload"]
            assert [e["extensions"]["code"] for e in errors] == ["UNAUTHENTICATED"]
        async with httpx.AsyncClient(base_url=base) as http:
            response = await http.post("/graphql", json={"query": ACCOUNT_QUERY},
                                       headers={"authorization": f"Bearer {token(subject)}"})
        assert data(response.json())["me"]["account"]["points"] == "0"  # nothing was converted


async def test_a_message_that_cannot_be_read_closes_the_connection_with_4400(database):
    subject, _, _ = await resident()
    async with serving() as server:
        for protocol, start, stop in (("graphql-transport-ws", "subscribe", "complete"),
                                      ("graphql-ws", "start", "stop")):
            for junk in ("[1, 2]", "[]", '"x"', "1", "null", '{"id": "1"}',
                         json.dumps({"type": start}), json.dumps({"type": stop}),
                         json.dumps({"type": start, "id": "1"}),
                         json.dumps({"type": start, "id": "1", "payload": []}),
                         json.dumps({"type": start, "id": 1, "payload": {"query": "{ __typename }"}}),
                         json.dumps({"type": start, "id": "1", "payload": {"query": 1}}),
                         json.dumps({"type": start, "id": "1",
                                     "payload": {"query": ACCOUNT_CHANGED, "variables": []}})):
                async with acknowledged(server.base, token(subject), protocol) as ws:
                    await ws.send(junk)
                    assert await close_code(ws) == 4400, (protocol, junk)
    assert "Traceback" not in server.log()


async def test_closes_whose_reasons_quote_the_client_fit_a_close_frame(database):
    subject, _, _ = await resident()
    async with serving() as server:
        subscribe = {"id": "订" * 60, "type": "subscribe", "payload": {"query": ACCOUNT_CHANGED}}
        for messages, code in (([{"type": "类" * 100}], 4400),   # "Unknown message type: ..."
                               ([subscribe, subscribe], 4409)):  # "Subscriber for ... already exists"
            async with acknowledged(server.base, token(subject)) as ws:
                for message in messages:
                    await ws.send(json.dumps(message))
                assert await close_code(ws) == code, messages[0]["type"][:10]
    assert "Traceback" not in server.log()


async def test_an_unknown_operation_name_of_a_subscription_is_a_bad_request(database):
    subject, _, _ = await resident()
    async with serving() as server:
        unknown = ACCOUNT_CHANGED.replace("subscription AccountChanged", "subscription Mine")
        async with subscribed(server.base, token(subject), unknown) as sub:
            await sub.ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {
                "query": unknown, "operationName": "Nope"}}))
            message = await sub.message()
            while message.get("id") != "2":
                message = await sub.message()
        assert message["type"] == "error", message
        assert [e["extensions"]["code"] for e in message["payload"]] == ["BAD_REQUEST"]
        assert "Nope" in message["payload"][0]["message"]
    assert "Traceback" not in server.log()


async def test_a_subscription_too_intricate_to_check_is_refused_with_a_code(database):
    subject, _, _ = await resident()
    chain = " ".join(f"fragment F{i} on Subscription {{ ...F{i + 1} }}" for i in range(400))
    query = ("subscription { ...F0 } " + chain
             + " fragment F400 on Subscription { accountChanged { points } }")
    async with serving() as server:
        async with subscribed(server.base, token(subject), query) as sub:
            message = await sub.message()
        assert message["type"] == "error", message
        assert [e["extensions"]["code"] for e in message["payload"]] == ["BAD_REQUEST"]
    assert "Traceback" not in server.log() and "RecursionError" not in server.log()


async def test_other_roles_cannot_subscribe_to_an_account(database):
    async with served() as base:
        merchant = token(roles="merchant", org=credit_code())
        async with subscribed(base, merchant, ACCOUNT_CHANGED) as sub:
            message = await sub.message()
        assert message["type"] in ("next", "error"), message
        payload = message["payload"]
        errors = payload.get("errors", []) if isinstance(payload, dict) else payload
        assert [e.get("extensions", {}).get("code") for e in errors] == ["FORBIDDEN"]


if os.environ.get("PUHUI_REDIS_URL"):
    # Delivery across processes needs Redis: the in-process stand-in reaches one process only.

    async def test_changes_in_another_process_arrive_through_redis(client):
        await set_rate(client, 10)
        _, auth, _ = await resident(1_000)
        async with served(workers=2) as base, subscribed(base, auth, ACCOUNT_CHANGED) as sub:
            assert await sub.next_data() == _account(1_000, 0)
            # made in this test process, pushed by a server worker
            body = await client.post("/graphql", json={
                "query": CONVERT,
                "variables": {"input": {"grams": "300", "idempotencyKey": unique("k")}},
            }, headers={"authorization": f"Bearer {auth}"})
            assert data(body.json())["convertReductions"]["userErrors"] == []
            assert await sub.next_data() == _account(700, 30)
            # made on whichever of the two workers answers
            for step in range(1, 5):
                await _convert_over_http(base, auth, 100)
                assert await sub.next_data() == _account(700 - 100 * step, 30 + 10 * step)
