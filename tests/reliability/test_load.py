"""Load: ``safesync serve``'s WSGI app under gunicorn (a production server)
on loopback, 50 concurrent clients hammering ``status`` and the calendar
``events`` read (POST body and GET query forms) for ``RELIABILITY_LOAD_S``
seconds (2 smoke / 5 standard / 30 full): no errors; p50/p99 reported.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

from safesync.shared.embedded import free_port

from .conftest import BEARER, subprocess_env
from .scale import pick

AREA = "load"
CLIENTS = int(os.environ.get("RELIABILITY_LOAD_CLIENTS", "50"))
SECONDS = float(os.environ.get("RELIABILITY_LOAD_S", pick(2, 5, 30)))


def start_gunicorn(port: int) -> subprocess.Popen:
    """gunicorn serving every function; its log goes to a file (a pipe nobody
    reads while the clients run would fill with the workers' JSON log lines
    and block them mid-request)."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread", "--threads", "16",
         "--log-level", "warning", "safesync.functions.serve:create_app()"],
        stdout=subprocess.DEVNULL, stderr=log, env=subprocess_env(), start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/status")
            conn.getresponse().read()
            return proc
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"gunicorn exited: {log.read().decode()[-2000:]}")
            time.sleep(0.05)
    raise AssertionError("gunicorn never answered")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # gunicorn and the workers it started (its own session)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_fifty_clients_on_status_and_calendar_events(world, tally) -> None:
    from tests.fake_calendar.helpers import app_insert

    t = tally(AREA)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(20):
        app_insert(world.settings, title=f"Load {i}", start=now + timedelta(hours=3 * i), status="local_only")
    window = {"action": "events", "from": now.date().isoformat(), "to": (now + timedelta(days=7)).date().isoformat()}
    requests = [
        ("GET", "/status", None),
        ("POST", "/calendar_sync", json.dumps(window).encode()),
        ("GET", "/calendar_sync?" + urlencode(window), None),
    ]
    port = free_port()
    server = start_gunicorn(port)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad, i = [], [], n
        while time.monotonic() < stop_at:
            method, path, body = requests[i % len(requests)]
            i += 1
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers={**BEARER, "Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200 or not json.loads(payload):
                    bad.append(f"{method} {path} → {response.status} {payload[:120]!r}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                bad.append(f"{method} {path} → {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)
            failures.extend(bad)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(SECONDS + 60)
    finally:
        stop(server)
    latencies.sort()
    total = len(latencies)
    for failure in failures:
        t.check(False, failure, strict=False)
    t.tried += total - len(failures)
    t.expected += total - len(failures)
    assert total, "no request completed"
    t.figure("clients", CLIENTS)
    t.figure("s", SECONDS)
    t.figure("req/s", round(total / SECONDS))
    t.figure("p50 ms", round(1000 * latencies[total // 2], 1))
    t.figure("p99 ms", round(1000 * latencies[min(total - 1, int(total * 0.99))], 1))
    t.figure("errors", len(failures))
    assert not failures, f"{len(failures)} of {total} requests failed: {failures[:5]}"
