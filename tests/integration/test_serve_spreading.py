"""With `--workers 2` the workers share the connections: a burst opened at once is dealt out to
both, and a worker reading a stream leaves a new connection to the idle one. (uvloop alone let
the first worker to wake take a whole burst: two streams sent together were parsed on one core.)
Which worker holds a connection is read from /proc, as an operator would with `ss -p`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import pytest

from tests.records_support import ago, make_world, record
from tests.serve_support import Server, cli_env, on_postgres, serving

pytestmark = [
    pytest.mark.usefixtures("database"),
    pytest.mark.skipif(not on_postgres(), reason="SQLite serves with one worker"),
]

ESTABLISHED = "01"


def _held(pid: int, port: int) -> int:
    """How many established connections to `port` the process `pid` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == ESTABLISHED and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    held += 1
    return held


async def _holding(server: Server, total: int) -> list[int]:
    """The connections each worker holds, once `total` of them are accepted (5 s at most)."""
    port = int(server.base.rsplit(":", 1)[1])
    for _ in range(100):
        counts = [_held(pid, port) for pid in server.worker_pids()]
        if sum(counts) >= total:
            return counts
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {counts} of {total} connections accepted")


async def _open(server: Server, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    return await asyncio.gather(*[asyncio.open_connection(host, int(port)) for _ in range(n)])


async def _close(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*[w.wait_closed() for _, w in connections], return_exceptions=True)


async def _two_workers() -> AsyncIterator[Server]:
    """`puhui serve --workers 2`, once both workers serve (the first answers /healthz alone)."""
    async with serving(env=cli_env(PUHUI_LOG_LEVEL="INFO"), workers=2) as server:
        assert len(server.worker_pids()) == 2
        for _ in range(100):
            if server.log().count("Application startup complete") == 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the second worker did not start")
        yield server


async def test_connections_opened_at_once_are_dealt_out_to_both_workers():
    async for server in _two_workers():
        connections = await _open(server, 8)
        try:
            counts = await _holding(server, 8)
            assert min(counts) >= 2, counts  # in turn; one worker took all eight before
        finally:
            await _close(connections)


async def test_a_worker_reading_a_stream_leaves_new_connections_to_the_idle_one():
    world = await make_world(residents=1)
    line = json.dumps(record(world.subjects[0], 1, ago(hours=1))).encode() + b"\n"
    async for server in _two_workers():
        reader, writer = (await _open(server, 1))[0]
        # A stream under way: its headers and a first line sent, the rest still to come.
        writer.write(
            f"POST /ingest/scenarios/{world.code}/records HTTP/1.1\r\nhost: puhui\r\n"
            f"authorization: Bearer {world.operator}\r\ncontent-type: application/x-ndjson\r\n"
            "transfer-encoding: chunked\r\n\r\n".encode() + b"%x\r\n%s\r\n" % (len(line), line))
        await writer.drain()
        assert sum(await _holding(server, 1)) == 1
        await asyncio.sleep(0.2)  # the worker has read the line and waits for more
        later = await _open(server, 1)
        try:
            assert await _holding(server, 2) == [1, 1]
        finally:
            await _close([(reader, writer), *later])
