"""Workers that share one listening socket take its connections in turn.

uvloop (libuv) accepts every connection waiting on a readable listening socket at once, so the
worker that wakes first takes a whole burst: two operators' streams sent together both landed
on one worker, which then parsed both on one core while the other worker stayed idle. Here a
worker accepts one connection each time the socket is readable, and two rules deal a burst out:

- after a quiet spell (`QUIET` without an accept), a worker pauses `AFTER_ACCEPT` after each
  of its first `PACED` accepts, in which the other workers take the next connections. A lone
  connection is served at once (a pause only holds back one that comes right after it), and a
  burst or a steady flow costs at most `PACED` short pauses per worker;
- a worker reading an ingest stream (`busy()`) steps aside for `STEP_ASIDE` before it accepts,
  so an idle worker takes the connection; the busy one takes it when it looks again (after
  `STEP_ASIDE`, later when its loop is busy) if no other did.

The connections wait in the kernel's queue meanwhile, as before: a worker that stops leaves them
to the others. `puhui serve --workers N` (N > 1) runs its workers on `spreading_loop`, uvloop's
loop with this for the TCP servers uvicorn starts on the shared sockets.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger(__name__)

QUIET = 0.05  # seconds without an accept after which a worker's next accepts start a burst
PACED = 4  # accepts at the start of a burst after which a worker leaves the next to the others
AFTER_ACCEPT = 0.001  # seconds it leaves the next one to the others
STEP_ASIDE = 0.01  # seconds a worker reading a stream leaves a waiting connection to the others
BACKOFF = 0.5  # seconds without accepting once the process ran out of descriptors or memory
# accept(2): errors of the one connection being accepted, to be passed over
_CONNECTION_ERRORS = {
    errno.ENETDOWN, errno.EPROTO, errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET,
    errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH, errno.ECONNRESET,
}
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
    """A listening socket served one accepted connection at a time (what uvicorn uses of an
    asyncio Server: sockets, close and wait_closed)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
        sock: socket.socket, ssl: ssl_module.SSLContext | None,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self._sock = sock
        self._ssl = ssl
        self._fd = sock.fileno()
        self._last_accept = -QUIET  # loop time of this worker's last accept
        self._paced_left = 0  # accepts of the current burst still to be followed by a pause
        self._looked_again = -STEP_ASIDE  # loop time it came back from stepping aside
        self._closed = False
        self._connecting: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        loop.add_reader(self._fd, self._ready)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening socket."""
        return (self._sock,)

    def _ready(self) -> None:
        now = self._loop.time()
        if busy() and now - self._looked_again > STEP_ASIDE:  # just back from it: take it
            self._pause(STEP_ASIDE, looking_again=True)
            return
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up
        except OSError as exc:
            if exc.errno in _CONNECTION_ERRORS:  # that connection's own: the next one is taken
                log.warning("accepting a connection failed: %s", exc)
            else:  # out of descriptors or memory, or the socket itself: pause, as asyncio does
                log.error("accepting a connection failed: %s; pausing %.1f s", exc, BACKOFF)
                self._pause(BACKOFF)
            return
        if now - self._last_accept >= QUIET:
            self._paced_left = PACED
        self._last_accept = now
        if self._paced_left:
            self._paced_left -= 1
            self._pause(AFTER_ACCEPT)  # the others take the next ones of the burst
        conn.setblocking(False)
        task = self._loop.create_task(self._connect(conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except Exception:
            conn.close()
            log.exception("a connection could not be set up")

    def _pause(self, seconds: float, looking_again: bool = False) -> None:
        self._loop.remove_reader(self._fd)
        self._loop.call_later(seconds, self._resume, looking_again)

    def _resume(self, looking_again: bool) -> None:
        if looking_again:
            self._looked_again = self._loop.time()
        if not self._closed:
            self._loop.add_reader(self._fd, self._ready)

    def close(self) -> None:
        """Stop accepting (the socket itself stays open for the other workers)."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)

    async def wait_closed(self) -> None:
        """Connections already accepted are being set up no more (uvicorn itself waits for
        the connections to finish)."""
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)


class SpreadingLoop(uvloop.Loop):
    """uvloop's loop whose servers on a given TCP socket accept one connection at a time."""

    async def create_server(self, protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        """`OneAtATime` for a TCP listening socket handed over (`sock=`); uvloop's own otherwise."""
        sock = kwargs.get("sock")
        if sock is None or args or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return await super().create_server(protocol_factory, *args, **kwargs)
        return OneAtATime(self, protocol_factory, sock, kwargs.get("ssl"))


def spreading_loop() -> asyncio.AbstractEventLoop:
    """A new `SpreadingLoop` (uvicorn's custom loop factory)."""
    return SpreadingLoop()


def loop_setting(workers: int) -> str:
    """uvicorn's `loop` for `workers` processes: `spreading_loop` when they share sockets."""
    return "app.accepting:spreading_loop" if workers > 1 else "uvloop"
