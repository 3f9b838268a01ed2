"""The suite itself refuses to reach beyond loopback."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.netguard import NetworkAccessError


def test_connect_to_public_address_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(NetworkAccessError):
        s.connect(("203.0.113.7", 443))


def test_resolving_a_public_name_is_refused() -> None:
    with pytest.raises(NetworkAccessError):
        socket.create_connection(("paper-api.alpaca.markets", 443), timeout=1)


def test_loopback_is_allowed() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        accepted.append(conn.recv(5))
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(("localhost", port), timeout=5) as c:
        c.sendall(b"hello")
    t.join(5)
    server.close()
    assert accepted == [b"hello"]
