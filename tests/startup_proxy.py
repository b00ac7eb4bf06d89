"""A loopback proxy in front of PostgreSQL that drops the ``options``
startup parameter, as PgBouncer does with ``ignore_startup_parameters =
options`` (https://github.com/pgbouncer/pgbouncer/pull/908: users list it
there so that clients sending it can connect at all): the connection works,
and none of the ``-c`` settings it carried reach the server.

    with OptionsDroppingProxy(upstream_port) as proxy:
        url = f"postgresql://user@127.0.0.1:{proxy.port}/db"

Protocol (PostgreSQL frontend/backend protocol, "Message Flow: Start-up"):
the client may first send an SSLRequest or GSSENCRequest (8 bytes), which
the proxy declines with ``N``; then the StartupMessage — int32 length,
int32 protocol version, NUL-terminated name/value pairs, a final NUL.
Everything after it is piped through unchanged.
"""

from __future__ import annotations

import socket
import struct
import threading

LOOPBACK = "127.0.0.1"
NEGOTIATION_CODES = {80877103, 80877104}  # SSLRequest, GSSENCRequest


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed during start-up")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> bytes:
    length = struct.unpack("!i", _read_exact(sock, 4))[0]
    return _read_exact(sock, length - 4)


def _without_options(body: bytes) -> bytes:
    """The StartupMessage body (version + pairs) less its ``options`` pair."""
    version, fields = body[:4], body[4:].split(b"\0")
    pairs = [(fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2) if fields[i]]
    kept = b"".join(k + b"\0" + v + b"\0" for k, v in pairs if k != b"options") + b"\0"
    return version + kept


class OptionsDroppingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="options-dropping-proxy", daemon=True)

    def __enter__(self) -> "OptionsDroppingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection((LOOPBACK, self.upstream_port)) as server:
            try:
                body = _read_message(client)
                while struct.unpack("!i", body[:4])[0] in NEGOTIATION_CODES:
                    client.sendall(b"N")
                    body = _read_message(client)
                body = _without_options(body)
                server.sendall(struct.pack("!i", len(body) + 4) + body)
            except ConnectionError:
                return
            pipe = threading.Thread(target=self._pipe, args=(server, client), daemon=True)
            pipe.start()
            self._pipe(client, server)
            pipe.join(5)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
