"""The server's socket: several workers each get their own on one port, and the kernel spreads
connections over them; a port already served is refused, even to a server of the same user."""

from __future__ import annotations

import pickle
import socket

import pytest

from app import listening

pytestmark = pytest.mark.skipif(not listening.spreads_connections(),
                                reason="SO_REUSEPORT balances connections on Linux only")

CLIENTS = 32


def _as_sent_to_a_worker(sock: socket.socket) -> socket.socket:
    """What a worker receives: uvicorn pickles the supervisor's sockets into each worker."""
    return pickle.loads(pickle.dumps(sock))


def _accepted(sock: socket.socket) -> int:
    sock.setblocking(False)
    taken = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return taken
        conn.close()
        taken += 1


def test_two_workers_each_listen_and_both_get_connections():
    shared = listening.bind("127.0.0.1", 0, workers=2)
    assert isinstance(shared, listening.SharedPort)
    port = shared.getsockname()[1]
    workers = [_as_sent_to_a_worker(shared) for _ in range(2)]
    clients = []
    try:
        for worker in workers:
            assert worker.getsockname() == ("127.0.0.1", port)
            assert worker.fileno() != shared.fileno()
            worker.listen(CLIENTS)
        for _ in range(CLIENTS):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        taken = [_accepted(worker) for worker in workers]
    finally:
        for s in [*clients, *workers, shared]:
            s.close()
    assert sum(taken) == CLIENTS
    assert min(taken) > 0, taken  # all on one worker: 2 chances in 2**32


def test_a_port_already_served_is_refused_even_to_the_same_user():
    first = listening.bind("127.0.0.1", 0, workers=2)
    port = first.getsockname()[1]
    worker = _as_sent_to_a_worker(first)
    worker.listen(8)
    try:
        for workers in (1, 2):
            with pytest.raises(OSError) as refused:
                listening.bind("127.0.0.1", port, workers=workers)
            assert "in use" in refused.value.strerror
    finally:
        worker.close()
        first.close()


def test_the_supervisor_never_takes_a_connection():
    shared = listening.bind("127.0.0.1", 0, workers=2)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(shared.getsockname(), timeout=5)
    finally:
        shared.close()
