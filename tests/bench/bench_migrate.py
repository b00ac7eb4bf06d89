"""Migrations on a ~300 MB target (``BENCH_MIGRATE_BYTES``), on a throwaway
server: what the safety costs next to running the SQL bare.

Rows: the migration run bare (psycopg, one transaction: the baseline); the
rehearsal (clone into scratch + migrate + validate + target-vs-rehearsal
diff); apply of the same migration (premigrate backup + migrate +
validation); a failing per-file migration rolled back by restoring the
backup (drop what it created + pg_restore); and how fast a file blocked by
an app's lock gives up (``lock_timeout`` = 1s).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import psycopg

from safesync.shared.embedded import EmbeddedPostgres
from tests.bench import embedded_server

TARGET_BYTES = int(float(os.environ.get("BENCH_MIGRATE_BYTES", 3e8)))

SCHEMA = """
create table users (id bigint primary key, email text not null, name text, created_at timestamptz not null default now());
create table events (id bigint generated always as identity primary key, user_id bigint not null references users,
                     kind text not null, payload text not null);
create index events_user on events (user_id);
insert into users (id, email, name) select g, 'u' || g || '@example.test', 'user ' || g from generate_series(1, 100000) g;
"""
BULK = """
insert into events (user_id, kind, payload)
select 1 + (g %% 100000), (array['view', 'click', 'buy'])[1 + g %% 3], repeat(md5(g::text), 3)
from generate_series(%(start)s, %(stop)s) g
"""
MIGRATION = {
    "0001_status.sql": "alter table users add column status text not null default 'active';\n",
    "0002_kinds.sql": "create table event_kinds (kind text primary key);\ninsert into event_kinds select distinct kind from events;\n"
    "alter table events add constraint events_kind_fk foreign key (kind) references event_kinds;\n",
    "0003_index.sql": "create index users_status on users (status);\n",
}
FAILING = {"0004_ok.sql": "alter table users add column plan text;\nupdate users set plan = 'free';\n", "0005_bad.sql": "select no_such_thing;\n"}


def _create(pg: EmbeddedPostgres, name: str) -> str:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return pg.url(name)


def _build(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        start, batch = 1, 500_000
        while conn.execute("select pg_database_size(current_database())").fetchone()[0] < TARGET_BYTES:
            conn.execute(BULK, {"start": start, "stop": start + batch - 1})
            start += batch
        conn.execute("vacuum (analyze, freeze)")
        return conn.execute("select pg_database_size(current_database())").fetchone()[0]


def run() -> list[dict]:
    with embedded_server("bench-migrate-") as (pg, tmp):
        return _measure(pg, tmp)


def _row(name: str, wall: float, size: int, **extra) -> dict:
    rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"name": name, "wall_s": round(wall, 2), "bytes": size, "peak_rss_mb": rss, **extra}


def _measure(pg: EmbeddedPostgres, tmp: Path) -> list[dict]:
    from safesync.functions import migrate
    from safesync.shared.config import load_settings

    bare_db, prod, scratch = _create(pg, "bare"), _create(pg, "prod"), _create(pg, "scratch")
    size = _build(prod)
    _build(bare_db)
    started = time.perf_counter()
    with psycopg.connect(bare_db) as conn:
        for name in sorted(MIGRATION):
            conn.execute(MIGRATION[name])
    bare = time.perf_counter() - started
    mb = round(size / 1e6)
    rows = [_row(f"baseline: the migration run bare ({mb} MB target)", bare, size)]

    (tmp / "migrations").mkdir()
    for name, text in MIGRATION.items():
        (tmp / "migrations" / name).write_text(text)
    (tmp / "safesync.toml").write_text(
        '[databases]\nprod = "BENCH_PROD_URL"\nscratch = "BENCH_SCRATCH_URL"\n'
        f'[storage]\nurl = "file://{tmp}/backups"\n[backup]\ndatabases = ["prod"]\n'
        '[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\nlock_timeout = "1s"\n'
    )
    os.environ.update({"BENCH_PROD_URL": prod, "BENCH_SCRATCH_URL": scratch})
    settings = load_settings(tmp / "safesync.toml")

    started = time.perf_counter()
    rehearsal = migrate.rehearse(settings)
    wall = time.perf_counter() - started
    assert rehearsal.exit_code == 0, rehearsal.body
    t = rehearsal.body["timings"]
    rows.append(_row("rehearse: clone + migrate + validate + diff", wall, size,
                     clone_s=t.get("clone_s"), migration_s=t.get("migration_s"), compare_s=t.get("compare_s")))  # fmt: skip

    started = time.perf_counter()
    applied = migrate.apply(settings)
    wall = time.perf_counter() - started
    assert applied.exit_code == 0, applied.body
    t = applied.body["timings"]
    rows.append(_row("apply: premigrate backup + migrate + validate", wall, size,
                     backup_s=t.get("backup_s"), migration_s=t.get("migration_s")))  # fmt: skip

    for name, text in FAILING.items():
        (tmp / "migrations" / name).write_text(text)
    started = time.perf_counter()
    failed = migrate.apply(settings, skip_rehearsal=True)
    wall = time.perf_counter() - started
    body = failed.body
    assert body["status"] == "failed" and body["details"]["rollback"]["objects_left_over"] == [], body["summary"]
    rows.append(_row("failing apply rolled back by restore (backup + migrate + restore)", wall, size,
                     rollback_s=body["timings"].get("rollback_s"), exact=not body["details"]["rollback"]["objects_missing"]))  # fmt: skip
    for name in FAILING:
        (tmp / "migrations" / name).unlink()

    (tmp / "migrations" / "0006_lock.sql").write_text("alter table users add column locked text;\n")
    holder = psycopg.connect(prod)
    holder.execute("lock table users in access share mode")
    try:
        result: dict = {}
        runner = threading.Thread(target=lambda: result.setdefault("answer", migrate.apply(settings, skip_rehearsal=True)))
        started = time.perf_counter()
        runner.start()
        runner.join()
        wall = time.perf_counter() - started
    finally:
        holder.rollback()
        holder.close()
    answer = result["answer"].body
    assert "lock timeout" in answer["details"]["error"], answer["summary"]
    rows.append(_row("blocked by an app lock: gives up (lock_timeout 1s), incl. backup", wall, size,
                     migration_s=answer["timings"].get("migration_s"), target="migration ≈ 1s",
                     met=answer["timings"].get("migration_s", 99) < 2))  # fmt: skip
    return rows
