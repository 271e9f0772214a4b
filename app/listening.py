"""The server's listening sockets, opened by `puhui serve` before the server starts.

Every address the host names gets one socket, bound and listening at once, before any worker
starts: a port in use stops `puhui serve` with one line instead of uvicorn's log lines, and no
second server can bind the port while the workers start (a bound socket that does not listen
yet lets another bind beside it). The supervisor keeps the sockets for its whole life and
uvicorn hands them to each worker, so the workers share one accept queue: a worker that stops
or restarts leaves the connections waiting for the others, and a replacement worker never has
to bind the port again.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

STARTUP_FAILURE = 3  # uvicorn's exit code when the server did not start
log = logging.getLogger("uvicorn.error")  # where uvicorn says where it serves


def where(host: str, port: int) -> str:
    """`host:port` as written in a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _addresses(host: str, port: int) -> list[tuple[int, Any]]:
    """(family, address) of every address `host` names, each once, IPv4 first."""
    found: list[tuple[int, Any]] = []
    for family, _, _, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if (family, address) not in found:
            found.append((family, address))
    return sorted(found, key=lambda f: f[0] != socket.AF_INET)


def bind(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Sockets listening on `port` of every address `host` names; OSError (socket.gaierror for
    a name that resolves to nothing) when one cannot be opened, and then none is left open."""
    addresses = _addresses(host, port)
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and len(addresses) > 1:
                # beside an IPv4 socket on the same port: IPv6 only, or the two collide
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # one port for all the addresses
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def serve(config: uvicorn.Config, sockets: list[socket.socket]) -> int:
    """Serve `config` on `sockets` (from `bind`) until stopped; the process's exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    for sock in sockets:
        host, port = sock.getsockname()[:2]
        log.info("Uvicorn running on http://%s (Press CTRL+C to quit)", where(host, port))
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=sockets).run()
            return 0
        server = uvicorn.Server(config)
        server.run(sockets=sockets)
        return 0 if server.started else STARTUP_FAILURE
    except KeyboardInterrupt:
        return 0
    finally:
        for sock in sockets:
            sock.close()
