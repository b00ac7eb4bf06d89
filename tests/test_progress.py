"""Progress on long CLI work: staging clone and content sync draw phases,
tables, rows and bytes on a terminal (a real pseudo-terminal here), and
print nothing of it with --json or without a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

import psycopg
import pytest

from safesync.functions.staging_clone.database import _Streamed

TOML = """
[staging_clone]
source = "dev"
target = "staging"
schemas = ["public"]

[content_sync]
source = "dev"
target = "prod"
tables = ["courses"]

[backup]
databases = ["prod"]
compress_level = 1
"""


@pytest.fixture
def setup(make_db, write_settings):
    dev, staging, prod = make_db(), make_db(), make_db()
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("create table courses (id int primary key, title text)")
        conn.execute("insert into courses select g, repeat('x', 200) from generate_series(1, 20000) g")
        conn.execute("create table lessons (id int primary key)")
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create table courses (id int primary key, title text)")
    return write_settings({"dev": dev, "staging": staging, "prod": prod}, TOML)


def _run(args: list[str], *, tty: bool) -> tuple[int, str]:
    """The CLI with stdout and stderr on a pseudo-terminal, or on pipes."""
    argv = [sys.executable, "-m", "safesync.functions.cli", *args]
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    if not tty:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        return done.returncode, done.stdout + done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = bytearray()
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(leader)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_a_terminal_sees_clone_and_sync_progress(setup) -> None:
    code, screen = _run(["staging", "clone"], tty=True)
    assert code == 0, screen[-2000:]
    for seen in ("staging clone: planning", "staging clone: safety backup of staging", "staging clone: copying", "2/2 tables", "comparing"):
        assert seen in screen, seen
    code, screen = _run(["content", "sync", "--adopt"], tty=True)
    assert code == 0, screen[-2000:]
    for seen in ("content sync: comparing courses", "content sync: waiting for the presync backup", "content sync: writing courses", "1/1 tables", "20,000 rows"):
        assert seen in screen, seen


@pytest.mark.parametrize("tty", [True, False], ids=["json-on-a-terminal", "no-terminal"])
def test_scripts_get_only_the_report(setup, tty: bool) -> None:
    args = ["staging", "clone"] + (["--json"] if tty else [])
    code, out = _run(args, tty=tty)
    assert code == 0, out[-2000:]
    meter_words = ("staging clone: planning", "staging clone: copying", "content sync: comparing", "content sync: writing")
    assert not any(w in out for w in meter_words) and not re.search(r"\d+/\d+ tables", out)
    code, out = _run(["content", "sync", "--adopt", "--json"], tty=True)
    assert code == 0 and not any(w in out for w in meter_words) and not re.search(r"\d+/\d+ tables", out)


def test_tables_are_counted_across_chunk_boundaries() -> None:
    stream = b"SET x;\nCOPY a (id) FROM stdin;\n1\n2\n\\.\n\nCOPY b (id) FROM stdin;\n\\.\n\nCOPY c FROM stdin;\n3\n\\.\nALTER ...;\n"
    for cut in range(1, len(stream)):
        for second in range(cut + 1, len(stream) + 1, 7):
            seen: list[tuple[int, int]] = []
            meter = _Streamed(3, lambda *, tables=None, bytes=None, **_: seen.append(tables))
            total = 0
            for chunk in (stream[:cut], stream[cut:second], stream[second:]):
                total += len(chunk)
                meter(chunk, total)
            assert seen[-1] == (3, 3), (cut, second)
