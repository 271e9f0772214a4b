"""The server's sockets: listening from the moment they are opened, on every address the host
names, and refused when the port is already served."""

from __future__ import annotations

import socket

import pytest

from app import listening


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_the_port_is_listened_on_at_once_so_a_second_server_is_refused_before_any_worker():
    first = listening.bind("127.0.0.1", 0, backlog=16)
    port = first[0].getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # waits in the shared queue until a worker accepts it
        with pytest.raises(OSError) as refused:
            listening.bind("127.0.0.1", port, backlog=16)
        assert "in use" in refused.value.strerror
    finally:
        _close(first)


def test_a_name_gets_a_socket_on_every_address_it_names(monkeypatch):
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    real = socket.getaddrinfo

    def both(host, port, *args, **kwargs):
        if host != "both.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", both)
    sockets = listening.bind("both.test", 0, backlog=16)
    try:
        assert [s.family for s in sockets] == [socket.AF_INET, socket.AF_INET6]
        port = sockets[0].getsockname()[1]
        assert sockets[1].getsockname()[1] == port  # one port for all
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, port), timeout=5):
                pass
    finally:
        _close(sockets)


def test_a_name_that_resolves_to_nothing_is_an_os_error():
    with pytest.raises(OSError):
        listening.bind("no-such-host.invalid", 0, backlog=16)


def test_urls_bracket_ipv6_addresses():
    assert listening.where("::", 8000) == "[::]:8000"
    assert listening.where("127.0.0.1", 8000) == "127.0.0.1:8000"
