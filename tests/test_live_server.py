"""The test servers' own harness: a port taken by another process between
``free_port()`` and the child's bind must not send a test to that stranger
(seen under a parallel suite: a fake Google took a calendar service's port, and
the test's requests got the fake's 401 "Invalid Credentials")."""

from __future__ import annotations

import socket
import threading

import tests.live_server as live_server
from tests.live_server import LiveServer


def test_a_port_stolen_before_the_server_binds_it_is_given_up_for_a_new_one(monkeypatch):
    stranger = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    stranger.bind(("127.0.0.1", 0))
    stranger.listen()
    stolen = stranger.getsockname()[1]
    accepted: list[int] = []

    def answer_everything():  # a stranger that answers anything, as the fake Google does
        while True:
            try:
                conn, _ = stranger.accept()
            except OSError:
                return
            accepted.append(1)
            conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()

    threading.Thread(target=answer_everything, daemon=True).start()
    ports = iter([stolen])
    real_free_port = live_server.free_port
    monkeypatch.setattr(live_server, "free_port", lambda: next(ports, None) or real_free_port())
    try:
        with LiveServer() as server:
            assert server.port != stolen
            reply = server.request("OPTIONS", server.path("status"))
            assert reply.status != 401 and not accepted
    finally:
        stranger.close()
