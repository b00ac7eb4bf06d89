"""Backup figures on a generated database of at least 1 GB on disk.

- ``safesync backup create`` (a subprocess: CLI → pg_dump → SHA-256 →
  local storage, row counts in the same snapshot) vs bare
  ``pg_dump -Fc --compress=N -f FILE`` with the same compression level.
  Target: ≤ 1.15× the wall time, peak RSS ≤ 150 MB (the whole process tree:
  Python and pg_dump).
- ``safesync backup restore`` (checksummed stream from storage, single
  transaction, --clean) vs bare ``pg_restore`` of the file with the same
  options, each into a fresh empty database.

Each dump is measured ``BENCH_BACKUP_ROUNDS`` (2) times, alternating with
the bare one, and the fastest run of each is compared. CPU time of the
process tree is reported too: on a shared machine wall time swings with
other load, CPU time much less. The server is the
embedded PostgreSQL 16 in a temp dir; its own memory is not counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from safesync.shared.embedded import EmbeddedPostgres

ROWS = int(os.environ.get("BENCH_BACKUP_ROWS", "6500000"))
ROUNDS = int(os.environ.get("BENCH_BACKUP_ROUNDS", "2"))
MIN_DB_BYTES = 1 << 30
LEVEL = 6
WALL_TARGET, RSS_TARGET_MB = 1.15, 150

SCHEMA = """
create table events_log (
    id bigint not null,
    user_id bigint not null,
    kind text not null,
    payload text not null,
    created_at timestamptz not null
)
"""
FILL = """
insert into events_log
select g, g %% 100000, 'kind_' || (g %% 17),
       md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text),
       timestamptz '2024-01-01' + g * interval '1 second'
from generate_series(%s::bigint, %s::bigint) g
"""


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s of the process tree, peak RSS of the tree in MB, stdout).

    CPU comes from wait4's rusage (the child plus the children it waited
    for, e.g. pg_dump), so it is not inflated by other load on the machine
    the way wall time is."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        root = psutil.Process(proc.pid)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({proc.returncode}): {stderr[-2000:]} {stdout[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak / (1 << 20), stdout


def _generate(admin_url: str, url: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("create database bench")
    step = 1_000_000
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        for start in range(1, ROWS + 1, step):
            conn.execute(FILL, [start, min(start + step - 1, ROWS)])
        conn.execute("alter table events_log add primary key (id)")
        conn.execute("create table users as select u as id, 'user' || u || '@example.com' as email from generate_series(1, 100000) u")
        conn.execute("alter table users add primary key (id)")
        conn.execute("vacuum analyze")
        return conn.execute("select pg_database_size('bench')").fetchone()[0]


def _best(runs: list[tuple[float, float, float, str]]) -> tuple[float, float, float]:
    """Fastest wall and least CPU over the rounds (the runs least disturbed
    by other load), and the highest peak RSS."""
    return min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)


def _runs(runs: list[tuple[float, float, float, str]]) -> str:
    return "runs: " + ", ".join(f"{r[0]:.1f}s/{r[1]:.1f}cpu" for r in runs)


def run() -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        pg = EmbeddedPostgres(work / "pg").start()
        try:
            bin_dir = str(pg.bin)
            url = pg.url("bench")
            t = time.perf_counter()
            size = _generate(pg.url(), url)
            rows.append({"name": f"generated database ({ROWS:,} + 100,000 rows)", "bytes": size,
                         "wall_s": round(time.perf_counter() - t, 1), "target": "≥ 1 GiB", "met": size >= MIN_DB_BYTES})
            config = work / "safesync.toml"
            config.write_text(
                '[databases]\nbench = "BENCH_DATABASE_URL"\nrestore_a = "RESTORE_A_DATABASE_URL"\n'
                f'[storage]\nurl = "file://{work / "store"}"\n'
                f'[backup]\ndatabases = ["bench"]\ncompress_level = {LEVEL}\n'
            )
            env = {**os.environ, "PG_BIN": bin_dir, "SAFESYNC_CONFIG": str(config), "BENCH_DATABASE_URL": url,
                   "RESTORE_A_DATABASE_URL": pg.url("restore_a"), "SAFESYNC_LOG_LEVEL": "WARNING"}
            bare_file = work / "bare.dump"
            bare_argv = [f"{bin_dir}/pg_dump", "-Fc", f"--compress={LEVEL}", "-f", str(bare_file), "--dbname", url]
            ours_argv = [sys.executable, "-m", "safesync.functions.cli", "backup", "create", "--db", "bench", "--json"]
            bare_runs, our_runs = [], []
            for _ in range(ROUNDS):
                bare_runs.append(measure(bare_argv, env))
                our_runs.append(measure(ours_argv, env))
            backup_id = json.loads(our_runs[-1][3])["details"]["backup"]["id"]
            dump_bytes = json.loads(our_runs[-1][3])["details"]["backup"]["size"]
            bare, ours = _best(bare_runs), _best(our_runs)
            ratio, cpu_ratio = ours[0] / bare[0], ours[1] / bare[1]
            rows.append({"name": f"bare pg_dump -Fc --compress={LEVEL} -f FILE", "wall_s": round(bare[0], 2),
                         "cpu_s": round(bare[1], 2), "peak_rss_mb": round(bare[2], 1),
                         "bytes": bare_file.stat().st_size, "note": _runs(bare_runs)})
            rows.append({"name": "safesync backup create (CLI subprocess tree)", "wall_s": round(ours[0], 2),
                         "cpu_s": round(ours[1], 2), "peak_rss_mb": round(ours[2], 1), "bytes": dump_bytes,
                         "ratio": f"{ratio:.3f} wall / {cpu_ratio:.3f} cpu",
                         "target": f"≤ {WALL_TARGET}× wall, ≤ {RSS_TARGET_MB} MB",
                         "met": ratio <= WALL_TARGET and ours[2] <= RSS_TARGET_MB, "note": _runs(our_runs)})

            with psycopg.connect(pg.url(), autocommit=True) as conn:
                conn.execute("create database restore_a")
                conn.execute("create database restore_b")
            restore_argv = [sys.executable, "-m", "safesync.functions.cli", "backup", "restore", backup_id,
                            "--to", "restore_a", "--json"]
            bare_restore = [f"{bin_dir}/pg_restore", "--clean", "--if-exists", "--single-transaction",
                            "--exit-on-error", "--no-owner", "--dbname", pg.url("restore_b"), str(bare_file)]
            b_wall, b_cpu, b_rss, _ = measure(bare_restore, env)
            o_wall, o_cpu, o_rss, out = measure(restore_argv, env)
            restored = json.loads(out)["details"]["restore"]
            rows.append({"name": "bare pg_restore (same options) of FILE", "wall_s": round(b_wall, 2),
                         "cpu_s": round(b_cpu, 2), "peak_rss_mb": round(b_rss, 1)})
            rows.append({"name": "safesync backup restore (incl. safety backup of the empty target)",
                         "wall_s": round(o_wall, 2), "cpu_s": round(o_cpu, 2), "peak_rss_mb": round(o_rss, 1),
                         "ratio": f"{o_wall / b_wall:.3f} wall",
                         "note": f"{restored['rows']:,} rows, pg_restore part {restored['restore_s']:.1f}s"})
        finally:
            pg.destroy()
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
