"""The server's listening socket, bound before the server starts, one per worker on Linux.

uvicorn's workers otherwise share one listening socket, and the first worker to wake accepts
every connection waiting: two long ingest streams arriving together both land on one worker
while the other idles. On Linux each worker listens on a socket of its own on the same port
(SO_REUSEPORT), and the kernel spreads new connections over them by their addresses.

The supervisor binds the port before anything starts, so a port in use stops `puhui serve`
with one line; it first binds it without SO_REUSEPORT, so that another server - even one of
the same user - already on the port is refused rather than joined. It never listens itself.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

STARTUP_FAILURE = 3  # uvicorn's exit code when the server did not start
log = logging.getLogger("uvicorn.error")  # where uvicorn says where it serves


def _bound(family: int, address: Any, shared: bool) -> socket.socket:
    sock = socket.socket(family=family, type=socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def worker_socket(family: int, address: Any) -> socket.socket:
    """A new socket bound to `address` beside the others: made in each worker as it starts."""
    return _bound(family, address, shared=True)


class SharedPort(socket.socket):
    """The supervisor's socket on the port: bound, never listening. Handed to a worker (which
    uvicorn does by pickling), it arrives as a new socket of the worker's own on the same port."""

    def __reduce__(self) -> tuple[Any, tuple[int, Any]]:
        return worker_socket, (int(self.family), self.getsockname())


def spreads_connections() -> bool:
    """Whether the kernel balances connections over sockets sharing a port (Linux only)."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def bind(host: str, port: int, workers: int) -> socket.socket:
    """The server's socket on `host:port`, bound and not listening; OSError if the port is
    taken. A SharedPort when several workers are to spread connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sole = _bound(family, (host, port), shared=False)
    if workers == 1 or not spreads_connections():
        sole.set_inheritable(True)
        return sole
    address = sole.getsockname()
    sole.close()
    shared = _bound(family, address, shared=True)
    return SharedPort(family=family, type=socket.SOCK_STREAM, fileno=shared.detach())


def serve(config: uvicorn.Config, sock: socket.socket) -> int:
    """Serve `config` on `sock` (bound by `bind`) until stopped; the process's exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    host, port = sock.getsockname()[:2]
    log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
             f"[{host}]" if ":" in host else host, port)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
            return 0
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        return 0 if server.started else STARTUP_FAILURE
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
