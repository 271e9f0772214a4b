"""A request's execution state is freed when it ends, not left for the cyclic collector.

Cyclic garbage made by every request is what the collector has to trace and free in one go:
with many requests a second, that stalled a worker's event loop for tens of milliseconds
every few hundred requests (the MyAccount latency tail)."""

from __future__ import annotations

import gc
import types
from collections.abc import Iterator
from contextlib import contextmanager

from graphql.execution import Executor

from tests.helpers import data, error_codes, gql, op, token
from tests.mall_support import approved_merchant, listed_right, redeem, resident


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """The objects only the cyclic collector could free, made inside the block."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_queries_and_refused_mutations_leave_no_execution_cycles(client):
    merchant = await approved_merchant(client)
    right_id = await listed_right(client, merchant, pointsPrice="10", stock=1)
    buyer = await resident(points=100)
    assert (await redeem(client, buyer, right_id))["userErrors"] == []
    late = await resident(points=100)
    await redeem(client, late, right_id)  # warm: connections and caches made before the count
    with cyclic_garbage() as garbage:
        for _ in range(3):
            assert data(await op(client, "MyAccount", {}, buyer.auth))["me"]["account"]
            assert (await redeem(client, late, right_id))["userErrors"][0]["code"] == "OUT_OF_STOCK"
    assert [o for o in garbage if isinstance(o, Executor)] == []


async def test_refused_requests_leave_no_frames_behind(client):
    """An error raised in a resolver kept, through its traceback, the frames that held it: a
    cycle of about a hundred objects per refused request, which under a load of refusals piled
    up into collections of a million objects, stalling the worker for seconds."""
    entries = "query($n: Int!) { me { account { entries(first: $n) { pageInfo { hasNextPage } } } } }"
    refused = [("{ me { id } }", None, token(roles="center"), "FORBIDDEN"),
               ("{ me { id } }", None, None, "UNAUTHENTICATED"),
               (entries, {"n": "x"}, token(), "BAD_USER_INPUT")]
    for query, variables, auth, code in refused:  # warm
        assert error_codes(await gql(client, query, variables, auth)) == [code]
    with cyclic_garbage() as garbage:
        for _ in range(3):
            for query, variables, auth, code in refused:
                assert error_codes(await gql(client, query, variables, auth)) == [code]
    kept = [o for o in garbage
            if isinstance(o, types.FrameType | types.TracebackType | BaseException)]
    assert kept == []
