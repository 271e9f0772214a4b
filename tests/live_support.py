"""A real `puhui serve` process on a free port and a graphql-transport-ws client for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
PUHUI = str(Path(sys.executable).with_name("puhui"))
WAIT = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def served(workers: int = 1) -> AsyncIterator[str]:
    """`puhui serve` on the test database (and Redis when configured); yields its base URL."""
    port = free_port()
    env = {**os.environ, "PUHUI_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        PUHUI, "serve", "--port", str(port), "--workers", str(workers),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(int(WAIT / 0.1)):
                if process.returncode is not None:
                    raise RuntimeError((await process.stderr.read()).decode()[-2000:])
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("puhui serve did not become healthy")
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


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
async def subscribed(base: str, jwt: str | None, query: str) -> AsyncIterator[Subscription]:
    """Connect, authenticate in connection_init, and start `query`."""
    url = base.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:
        init: dict[str, Any] = {"type": "connection_init"}
        if jwt is not None:
            init["payload"] = {"authorization": f"Bearer {jwt}"}
        await ws.send(json.dumps(init))
        sub = Subscription(ws)
        ack = await sub.message()
        assert ack["type"] == "connection_ack", ack
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        yield sub
