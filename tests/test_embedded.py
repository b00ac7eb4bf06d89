"""The embedded PostgreSQL on a brand-new machine: the OS user it needs is
created safely by racing processes, independent clusters never talk to each
other's servers, and it runs as an ordinary user too."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from safesync.shared import embedded
from safesync.shared.embedded import EmbeddedPostgres, ensure_system_user
from safesync.shared.locks import JobLock

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="creating OS users needs root (as non-root the whole suite runs its cluster as the current user)")


def _start_and_query(data_dir: str, os_user: str, barrier) -> tuple[str, str, int]:
    """In a fresh process: wait for the others, then start a cluster and use it."""
    barrier.wait()
    server = EmbeddedPostgres(Path(data_dir), os_user=os_user).start()
    try:
        with psycopg.connect(server.url(), connect_timeout=10) as conn:
            served = conn.execute("select setting from pg_settings where name = 'data_directory'").fetchone()[0]
        return served, str(server.home), server.port
    finally:
        server.destroy()


def _userdel(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


@ROOT_ONLY
def test_racing_processes_all_get_a_cluster_when_the_os_user_does_not_exist_yet(tmp_path: Path) -> None:
    name = f"sstest{uuid.uuid4().hex[:8]}"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    n = 4
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as separate pytest sessions or demos are
    barrier = ctx.Manager().Barrier(n)
    dirs = [str(Path(tempfile.mkdtemp(prefix="ss-race-")) / "data") for _ in range(n)]
    try:
        with ctx.Pool(n) as pool:
            results = pool.starmap(_start_and_query, [(d, name, barrier) for d in dirs])
        entry = pwd.getpwnam(name)
        assert all(Path(served).resolve() == Path(home) for served, home, _ in results)  # each reached its own server
        assert len({home for _, home, _ in results}) == n and len({port for *_, port in results}) == n
        assert ensure_system_user(name) == (entry.pw_uid, entry.pw_gid)  # stable, not recreated
        passwd = Path("/etc/passwd").read_text().splitlines()
        assert sum(line.startswith(f"{name}:") for line in passwd) == 1
    finally:
        _userdel(name)


def test_a_lost_port_is_retried_on_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process takes the port between free_port() and the postmaster's bind."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    ports = iter([busy])
    real = embedded.free_port
    monkeypatch.setattr(embedded, "free_port", lambda: next(ports, None) or real())
    server = EmbeddedPostgres(tmp_path / "data").start()
    try:
        assert server.port != busy
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        server.destroy()
        taken.close()


def test_a_port_we_were_given_is_never_swapped_silently(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        server = EmbeddedPostgres(tmp_path / "data", port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="could not bind"):
            server.start()
    finally:
        taken.close()


def test_a_server_that_is_not_ours_is_refused(pg_server, tmp_path: Path) -> None:
    """The identity check: whatever answers on our port must serve our data directory."""
    if pg_server.embedded is None:
        pytest.skip("TEST_DATABASE_URL names an external server: no embedded cluster to impersonate")
    impostor = EmbeddedPostgres(tmp_path / "other", port=pg_server.embedded.port)
    with pytest.raises(RuntimeError, match="served by another cluster"):
        impostor._check_identity()
    with psycopg.connect(pg_server.admin_url) as conn:  # and the real one was left running
        assert conn.execute("select 1").fetchone() == (1,)


def test_a_released_job_lock_is_free_at_once(make_db) -> None:
    """Closing a connection frees its advisory locks only when the backend has
    exited; the next run (the demo's next step) must never see it still held."""
    url = make_db()
    for _ in range(20):
        lock = JobLock(url, "content_sync", "prod").acquire()
        lock.release()
        with psycopg.connect(url) as conn:
            held = conn.execute("select count(*) from pg_locks where locktype = 'advisory' and granted").fetchone()[0]
        assert held == 0


def _as_user_start(uid: int, gid: int, data_dir: str, bin_dir: Path) -> None:
    """Child of a fork: drop to ``uid`` and start a cluster as that user."""
    code = 1
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        server = EmbeddedPostgres(Path(data_dir))
        assert server._owner is None  # not root: no service user, the cluster is ours
        server.start()
        try:
            with psycopg.connect(server.url(), connect_timeout=10) as conn:
                conn.execute("create table t (x int)")
                conn.execute("insert into t values (1)")
                assert conn.execute("select count(*) from t").fetchone() == (1,)
            pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
            owner = os.stat(f"/proc/{pid}").st_uid
            code = 0 if owner == uid else 3
        finally:
            server.destroy()
    except BaseException as exc:  # noqa: BLE001  (reported through the exit code and stderr)
        os.write(2, f"non-root start failed: {exc!r}\n".encode())
    os._exit(code)


@ROOT_ONLY
def test_the_cluster_runs_as_an_ordinary_user(tmp_path: Path) -> None:
    """As a non-root user the cluster is that user's. Run from root by dropping
    to a throwaway user in a forked child (the interpreter under /root may not
    be readable by other users, so a fresh `runuser python` could not start)."""
    name = f"ssuser{uuid.uuid4().hex[:8]}"
    uid, gid = ensure_system_user(name)
    data_parent = Path(tempfile.mkdtemp(prefix="ss-nonroot-"))
    os.chown(data_parent, uid, gid)
    bin_dir = embedded.bin_dir()
    embedded._open_path_for(bin_dir)  # what a normal user's own install would already allow
    try:
        pid = os.fork()
        if pid == 0:
            _as_user_start(uid, gid, str(data_parent / "data"), bin_dir)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        subprocess.run(["rm", "-rf", str(data_parent)])
        _userdel(name)



@ROOT_ONLY
def test_a_parent_made_private_does_not_lock_the_cluster_out(tmp_path: Path) -> None:
    """Every new pytest session resets /tmp/pytest-of-root to 0700 while other
    sessions' clusters run; a root-started cluster must not depend on its
    data_dir's parents being open to the service user."""
    parent = tmp_path / "private"
    server = EmbeddedPostgres(parent / "data").start()
    try:
        for folder in (parent, tmp_path, tmp_path.parent):
            folder.chmod(0o700)
        server.restart()
        with psycopg.connect(server.url(), connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        server.destroy()
    assert not server.home.exists() and not (parent / "data").exists()
