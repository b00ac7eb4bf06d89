"""A loopback TCP proxy with a bandwidth cap and byte counters: what a
remote database looks like, on one machine.

Every connection to ``127.0.0.1:<port>`` is forwarded to the upstream port.
Each direction is one shared "link" of ``rate`` bytes/s (a token schedule:
every chunk books its transmission time after the previous one), so
concurrent connections share the cap like they would share a real link.
Memory is bounded: at most ``max_connections`` connections, chunks of
``CHUNK`` bytes, and a chunk is read only after the previous one was
written and drained. Loopback only, by construction.

    with ThrottleProxy(upstream_port=5432, rate=20e6) as proxy:
        url = f"postgresql://user@127.0.0.1:{proxy.port}/db"
        ...
        proxy.bytes_total
"""

from __future__ import annotations

import asyncio
import threading

CHUNK = 32 * 1024
LOOPBACK = "127.0.0.1"


class _Link:
    """One direction of the link: chunks are sent one after another at
    ``rate`` bytes/s (None: unlimited); counts what went through."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.bytes = 0
        self._next_free = 0.0

    async def send(self, n: int) -> None:
        self.bytes += n
        if not self.rate:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_free)
        self._next_free = start + n / self.rate
        delay = self._next_free - now
        if delay > 0:
            await asyncio.sleep(delay)


class ThrottleProxy:
    def __init__(self, upstream_port: int, rate: float | None = None, *, max_connections: int = 64) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.max_connections = max_connections
        self.port = 0
        self.up = _Link(rate)  # client -> server
        self.down = _Link(rate)  # server -> client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._slots: asyncio.Semaphore | None = None

    @property
    def bytes_total(self) -> int:
        return self.up.bytes + self.down.bytes

    def reset_counters(self) -> None:
        self.up.bytes = self.down.bytes = 0

    def start(self) -> "ThrottleProxy":
        self._thread = threading.Thread(target=self._serve, name="throttle-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("throttle proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "ThrottleProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._slots = asyncio.Semaphore(self.max_connections)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, LOOPBACK, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._slots is not None
        async with self._slots:
            try:
                up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(self._pipe(reader, up_writer, self.up), self._pipe(up_reader, writer, self.down))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await reader.read(CHUNK):
                await link.send(len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:  # loop closing
                pass
