"""Workers that share one listening socket take its connections one at a time.

uvloop (libuv) accepts every connection waiting on a readable listening socket at once, so the
worker that wakes first takes a whole burst: two operators' streams sent together both landed
on one worker, which then parsed both on one core while the other worker stayed idle. Here a
worker accepts one connection, then leaves the listening socket to the others for
`AFTER_ACCEPT` (a burst is dealt out in turn, at up to 1,000 connections a second per worker;
a lone connection waits for nothing). A worker reading a stream (`busy()`) also steps aside
once for `STEP_ASIDE` before it accepts, so an idle worker takes the connection, and takes it
itself when no other did. The connections wait in the kernel's queue meanwhile, as before: a
worker that stops leaves them to the others.

`puhui serve --workers N` (N > 1) runs its workers on `spreading_loop`, uvloop's loop with this
for the servers uvicorn starts on the shared sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger(__name__)

STEP_ASIDE = 0.01  # seconds a busy worker leaves a waiting connection to the others
AFTER_ACCEPT = 0.001  # seconds a worker leaves the rest of a burst to the others
BACKOFF = 0.5  # seconds without accepting after the process ran out of file descriptors
_busy = 0  # streams this worker is reading now


def busy() -> bool:
    """True while this worker reads a stream."""
    return _busy > 0


class Busy:
    """Marks this worker busy for the `with` block (a stream being read)."""

    def __enter__(self) -> None:
        global _busy
        _busy += 1

    def __exit__(self, *exc: object) -> None:
        global _busy
        _busy -= 1


class OneAtATime:
    """A listening socket served one accepted connection per readiness (asyncio's Server
    methods that uvicorn uses: close and wait_closed)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
        sock: socket.socket, ssl: ssl_module.SSLContext | None,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self._sock = sock
        self._ssl = ssl
        self._fd = sock.fileno()
        self._stepped_aside_at = -STEP_ASIDE  # loop time this server last stepped aside
        self._closed = False
        self._connecting: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        loop.add_reader(self._fd, self._ready)

    def _ready(self) -> None:
        now = self._loop.time()
        if busy() and now - self._stepped_aside_at > 2 * STEP_ASIDE:  # once per connection
            self._stepped_aside_at = now
            self._pause(STEP_ASIDE)
            return
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up
        except OSError as exc:  # out of file descriptors or memory: pause, as asyncio does
            log.error("accepting a connection failed: %s; pausing %.1f s", exc, BACKOFF)
            self._pause(BACKOFF)
            return
        self._pause(AFTER_ACCEPT)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._loop.create_task(self._connect(conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except Exception:
            conn.close()
            log.exception("a connection could not be set up")

    def _pause(self, seconds: float) -> None:
        self._loop.remove_reader(self._fd)
        self._loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._fd, self._ready)

    def close(self) -> None:
        """Stop accepting (the socket itself stays open for the other workers)."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)

    async def wait_closed(self) -> None:
        """Connections already accepted are being set up no more."""
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)


class SpreadingLoop(uvloop.Loop):
    """uvloop's loop whose servers on a given socket accept one connection at a time."""

    async def create_server(self, protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        """`OneAtATime` for a listening socket handed over (`sock=`); uvloop's own otherwise."""
        sock = kwargs.get("sock")
        if sock is None or args:
            return await super().create_server(protocol_factory, *args, **kwargs)
        return OneAtATime(self, protocol_factory, sock, kwargs.get("ssl"))


def spreading_loop() -> asyncio.AbstractEventLoop:
    """A new `SpreadingLoop` (uvicorn's custom loop factory)."""
    return SpreadingLoop()


def loop_setting(workers: int) -> str:
    """uvicorn's `loop` for `workers` processes: `spreading_loop` when they share sockets."""
    return "app.accepting:spreading_loop" if workers > 1 else "uvloop"
