"""A real `puhui serve` process on a free port and a graphql-transport-ws client for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.serve_support import serving

WAIT = 20.0


@contextlib.asynccontextmanager
async def served(workers: int = 1) -> AsyncIterator[str]:
    """`puhui serve` on the test database (and Redis when configured); yields its base URL."""
    async with serving(workers=workers) as server:
        yield server.base


class Subscription:
    """One graphql-transport-ws connection carrying one subscription."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def message(self) -> dict[str, Any]:
        """The next protocol message (WAIT is a hang guard, not a latency assertion)."""
        async with asyncio.timeout(WAIT):
            return json.loads(await self.ws.recv())

    async def next_data(self) -> dict[str, Any]:
        """The data of the next `next` message; fails on anything else."""
        message = await self.message()
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message
        return message["payload"]["data"]


@contextlib.asynccontextmanager
async def acknowledged(
    base: str, jwt: str | None, protocol: str = "graphql-transport-ws"
) -> AsyncIterator[ClientConnection]:
    """A WebSocket of `protocol`, authenticated in connection_init and acknowledged."""
    url = base.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=[protocol]) as ws:
        init: dict[str, Any] = {"type": "connection_init"}
        if jwt is not None:
            init["payload"] = {"authorization": f"Bearer {jwt}"}
        await ws.send(json.dumps(init))
        async with asyncio.timeout(WAIT):
            ack = json.loads(await ws.recv())
        assert ack["type"] == "connection_ack", ack
        yield ws


async def close_code(ws: ClientConnection) -> int | None:
    """The code the server closes `ws` with (1006 when it sent no close frame), any messages
    before it skipped (a keep-alive)."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            async with asyncio.timeout(WAIT):
                await ws.recv()
    return ws.close_code


@contextlib.asynccontextmanager
async def subscribed(base: str, jwt: str | None, query: str) -> AsyncIterator[Subscription]:
    """Connect, authenticate in connection_init, and start `query`."""
    async with acknowledged(base, jwt) as ws:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        yield Subscription(ws)
