"""A pg tool never outlives the job that started it: every pg_dump,
pg_restore and psql goes through ``shared.pgtools.spawn_client``, which asks
the kernel to kill it with its parent. Shown on a backup whose pg_dump waits
on a lock — a dump blocked there writes nothing, so no broken pipe would
ever stop it — when the CLI running it is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for_lock_wait(url: str, deadline: float) -> None:
    """Until pg_dump has imported its snapshot and queues for the lock (before
    that, the killed parent's snapshot going away would stop it anyway)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "select count(*) from pg_stat_activity where backend_type = 'client backend'"
                " and wait_event_type = 'Lock' and query ilike 'lock table%'"
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("pg_dump never waited for the lock")


def test_pg_dump_dies_with_a_killed_backup(make_db, write_settings, tmp_path) -> None:
    url = make_db()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table lessons (id int primary key, title text)")
    write_settings({"prod": url}, storage_url=f"file://{tmp_path}/storage")
    with psycopg.connect(url) as holder:
        holder.execute("lock table lessons in access exclusive mode")  # pg_dump's ACCESS SHARE waits
        cli = subprocess.Popen(
            [sys.executable, "-m", "safesync.functions.cli", "backup", "create", "--db", "prod", "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            _wait_for_lock_wait(url, deadline)
            # the dump itself (probes such as ``pg_dump --version`` ran and exited before)
            dumps = [p for p in _children(cli.pid) if os.path.basename(_command(p)) == "pg_dump" and _alive(p)]
            assert dumps, f"no pg_dump running (CLI exit {cli.poll()})"
            os.kill(cli.pid, signal.SIGKILL)
            cli.wait()
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in dumps) and time.monotonic() < deadline:
                time.sleep(0.05)
            survivors = [p for p in dumps if _alive(p)]
        finally:
            if cli.poll() is None:
                cli.kill()
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert not survivors, f"pg_dump {survivors} outlived the killed backup"
