"""Staging clone of a ≥ 1 GB dev database vs a bare ``pg_dump -Fc |
pg_restore`` into an empty database, on the same throwaway server.

Rows: the baseline; the swap alone (``clone_database`` without comparing);
the swap plus the full schema + data comparison (target ≤ 1.5×); and the
whole ``safesync staging clone`` job against an out-of-date staging (safety
backup of staging + swap + comparison + run report).
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from safesync.shared.embedded import EmbeddedPostgres
from tests.fixtures.supabase import create_supabase_dev, create_supabase_staging

TARGET_BYTES = int(float(os.environ.get("BENCH_CLONE_BYTES", 1.05e9)))
BATCH = 500_000

BULK = """
insert into public.chat_messages (conversation_id, tenant_id, role, content, created_at)
select c.id, c.tenant_id, (array['user', 'assistant', 'system'])[1 + g %% 3],
       'message ' || g || ': ' || repeat(md5(g::text), 4),
       '2024-03-01 00:00:00+00'::timestamptz + g * interval '1 second'
from generate_series(%(start)s, %(stop)s) g
join (select id, tenant_id, row_number() over (order by id) - 1 as n from public.chat_conversations) c on c.n = g %% 20
"""


def _build_dev(url: str) -> int:
    create_supabase_dev(url, scale=50)
    with psycopg.connect(url, autocommit=True) as conn:
        start = 1
        while conn.execute("select pg_database_size(current_database())").fetchone()[0] < TARGET_BYTES:
            conn.execute(BULK, {"start": start, "stop": start + BATCH - 1})
            start += BATCH
        conn.execute("vacuum (analyze, freeze)")
        return conn.execute("select pg_database_size(current_database())").fetchone()[0]


def _create(pg: EmbeddedPostgres, name: str) -> str:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return pg.url(name)


def _baseline(pg: EmbeddedPostgres, dev: str, empty: str) -> float:
    dump = subprocess.Popen([str(pg.bin / "pg_dump"), "-Fc", "--dbname", dev], stdout=subprocess.PIPE)
    started = time.perf_counter()
    restore = subprocess.run([str(pg.bin / "pg_restore"), "--dbname", empty, "--no-owner"], stdin=dump.stdout, capture_output=True)
    dump.stdout.close()
    assert dump.wait() == 0 and restore.returncode == 0, restore.stderr[-2000:]
    return time.perf_counter() - started


def run() -> list[dict]:
    os.environ.setdefault("PG_BIN", "")
    with tempfile.TemporaryDirectory(prefix="bench-clone-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "data").start()
        os.environ["PG_BIN"] = str(pg.bin)
        try:
            return _measure(pg, Path(tmp))
        finally:
            pg.destroy()


def _measure(pg: EmbeddedPostgres, tmp: Path) -> list[dict]:
    from safesync.functions.staging_clone import clone, clone_database, options_from_config
    from safesync.shared.config import load_settings

    dev = _create(pg, "dev")
    size = _build_dev(dev)
    gb = round(size / 1e9, 2)
    base = _baseline(pg, dev, _create(pg, "empty"))
    rows = [{"name": f"baseline pg_dump -Fc | pg_restore ({gb} GB)", "wall_s": round(base, 1), "bytes": size}]

    staging = _create(pg, "staging")
    create_supabase_staging(staging)
    (tmp / "safesync.toml").write_text(
        '[databases]\ndev = "DEV_DATABASE_URL"\nstaging = "STAGING_DATABASE_URL"\nprod = "DEV_DATABASE_URL"\n'
        f'[storage]\nurl = "file://{tmp}/backups"\n[staging_clone]\nschemas = ["public", "hotels"]\n'
    )
    os.environ.update({"DEV_DATABASE_URL": dev, "STAGING_DATABASE_URL": staging})
    settings = load_settings(tmp / "safesync.toml")
    options = options_from_config(settings)

    started = time.perf_counter()
    clone_database(dev, staging, options, compare_after=False)
    swap = time.perf_counter() - started
    rows.append(_row("clone: swap only (one transaction)", swap, base, 1.2, size))

    started = time.perf_counter()
    result = clone_database(dev, staging, options)
    full = time.perf_counter() - started
    assert result.identical
    rows.append(_row("clone: swap + schema/data comparison", full, base, 1.5, size, identical=result.identical))

    with psycopg.connect(staging, autocommit=True) as conn:  # back to an out-of-date staging
        conn.execute("drop schema public cascade; drop schema hotels cascade; create schema public")
    create_supabase_staging(staging)
    started = time.perf_counter()
    answer = clone(settings)
    job = time.perf_counter() - started
    assert answer.exit_code == 0, answer.body
    rows.append(
        _row("job: safety backup (stale staging) + swap + comparison", job, base, 1.5, size, identical=answer.body["details"]["identical"])
    )
    return rows


def _row(name: str, wall: float, base: float, target: float, size: int, **extra) -> dict:
    ratio = wall / base
    return {
        "name": name,
        "wall_s": round(wall, 1),
        "ratio": round(ratio, 2),
        "target": f"≤ {target}×",
        "met": ratio <= target,
        "bytes": size,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **extra,
    }
