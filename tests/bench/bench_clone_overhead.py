"""Fixed cost of a staging clone on small databases: ``clone_database``
(plan, swap in one transaction, schema + data proof) against a bare
``pg_dump -Fc | pg_restore`` of the same schemas into an empty database,
measured side by side on the same server, best of ``ROUNDS``.

Databases: the Supabase platform database as its non-superuser ``postgres``
(public + auth + storage, ~35 tables; ``tests/fixtures/supabase_platform``)
and pagila (``tests/fixtures/pagila``). Target: at most 0.5 s over the
baseline (``BENCH_OVERHEAD_ROUNDS`` sets the rounds). Large databases are
``bench_clone``'s (ratio target there).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

ROUNDS = int(os.environ.get("BENCH_OVERHEAD_ROUNDS", 3))
TARGET_S = 0.5


def _baseline(bin_dir: Path, source: str, empty_admin: str, schemas: list[str]) -> float:
    argv = [str(bin_dir / "pg_dump"), "-Fc", "--dbname", source] + [f"--schema={s}" for s in schemas]
    started = time.perf_counter()
    dump = subprocess.Popen(argv, stdout=subprocess.PIPE)
    restore = subprocess.run([str(bin_dir / "pg_restore"), "--no-owner", "--dbname", empty_admin], stdin=dump.stdout, capture_output=True)
    dump.stdout.close()
    assert dump.wait() == 0 and restore.returncode == 0, restore.stderr[-2000:]
    return time.perf_counter() - started


def _clone(source: str, target: str, schemas: list[str]) -> tuple[float, dict]:
    from safesync.functions.staging_clone import CloneOptions, clone_database
    from safesync.shared.report import Report

    report = Report("staging_clone", "clone")
    started = time.perf_counter()
    result = clone_database(source, target, CloneOptions(schemas=tuple(schemas)), report=report)
    wall = time.perf_counter() - started
    assert result.identical, result.comparison.summary("a", "b")
    return wall, dict(report.timings)


def _measure(name: str, bin_dir: Path, source: str, target: str, fresh_empty, schemas: list[str]) -> dict:
    base = min(_baseline(bin_dir, source, fresh_empty(), schemas) for _ in range(ROUNDS))
    runs = [_clone(source, target, schemas) for _ in range(ROUNDS)]
    wall, timings = min(runs, key=lambda r: r[0])
    with psycopg.connect(source) as conn:
        size = conn.execute("select pg_database_size(current_database())").fetchone()[0]
    overhead = wall - base
    return {
        "name": f"clone overhead: {name} ({size / 1e6:.0f} MB) vs pg_dump -Fc | pg_restore",
        "wall_s": round(wall, 3),
        "baseline_s": round(base, 3),
        "overhead_s": round(overhead, 3),
        "ratio": round(wall / base, 2),
        "target": f"≤ +{TARGET_S} s",
        "met": overhead <= TARGET_S,
        **{k: v for k, v in timings.items() if k.endswith("_s")},
    }


def run() -> list[dict]:
    from tests.fixtures.supabase_platform import supabase_fixture

    rows = []
    session = supabase_fixture()
    cluster = next(session)
    try:
        os.environ["PG_BIN"] = str(cluster.server.bin)
        source, target = cluster.create_database("bench_dev"), cluster.create_database("bench_staging")
        counter = iter(range(1000))

        def empty() -> str:
            name = f"bench_empty_{next(counter)}"
            with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
                conn.execute(f'create database "{name}" template supabase_platform_template')
            # the baseline restores (as supabase_admin) into the platform without these schemas
            url = cluster.server.url(name)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("drop schema public cascade; drop schema auth cascade; drop schema storage cascade")
            return url

        rows.append(_measure("Supabase platform as postgres", cluster.server.bin, source, target, empty, ["public", "auth", "storage"]))
    finally:
        session.close()  # stops the cluster and removes its folder
    rows.append(_pagila())
    return rows


def _pagila() -> dict:
    from safesync.shared.embedded import EmbeddedPostgres
    from tests.fixtures.pagila import build

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "data").start()
        os.environ["PG_BIN"] = str(pg.bin)
        try:
            with psycopg.connect(pg.url(), autocommit=True) as conn:
                for name in ("dev", "staging"):
                    conn.execute(f'create database "{name}"')
            build(pg.url("dev"))
            build(pg.url("staging"))
            counter = iter(range(1000))

            def empty() -> str:
                name = f"empty_{next(counter)}"
                with psycopg.connect(pg.url(), autocommit=True) as conn:
                    conn.execute(f'create database "{name}"')
                with psycopg.connect(pg.url(name), autocommit=True) as conn:
                    conn.execute("drop schema public cascade")
                return pg.url(name)

            return _measure("pagila", pg.bin, pg.url("dev"), pg.url("staging"), empty, ["public"])
        finally:
            pg.destroy()
