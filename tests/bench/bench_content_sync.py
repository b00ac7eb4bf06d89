"""Content sync on a 1M-row ``lessons`` table vs the naive way, on loopback
and through a 20 MB/s proxy (what a remote database looks like).

Rows, each with the naive baseline measured in the same run:

- compare, identical tables — ours (``safesync content compare``) vs
  streaming every content table out of both databases (``COPY TO STDOUT``,
  both at once). Targets: ≥ 10× faster over the capped link; on loopback no
  slower than the streaming alone.
- sync job, 1 % of lessons changed, once per ``presync_backup`` — the
  whole job as a user waits for it (compare, three-way classification
  against the ledger, undo log, stage, upsert, post-sync check, ledger
  update, protection proof, the presync backup it waits for, commit; the
  parts in ``note``) vs the naive sync: stream every content table into
  temp tables on the target and upsert every row. Targets: ``none`` and
  ``content`` ≤ 0.2× naive capped, ≤ 0.25× on loopback; ``full`` ≤ 1.1×
  a bare ``pg_dump -Fc`` of the target over the same link. ``content`` is
  also printed beside a bare ``pg_dump -Fc`` of the content tables and the
  ledger: the dump it waits for, by itself. Measured in the
  steady state: the ledger was seeded by a first sync, timed in its own row.
- undo of the ``content`` sync (``safesync content undo``) ≤ 0.2× the naive
  full copy.

Bytes are counted by the proxy (both directions, all connections) on the
capped runs; the same bytes cross loopback. Every compare and sync row also
reports what it costs the servers: temp file bytes written on source and
target (``pg_stat_database.temp_bytes`` before/after; the target is 0),
bytes on the wire per table row, and the ledger's size per content row and
against the table it tracks. Then the table grows to ``BENCH_CS_BIG_ROWS``
rows (default 3M; 0 skips) and compare runs again, identical and 1 %
changed: temp bytes, bytes per row and the peak memory of the compare (each
row's peak RSS is its own run's: the high-water mark is reset before it, and
``rss_growth_mb`` is how far it rose above where the run started) must not
grow with it.

data-diff (``data-diff``, or the path in ``BENCH_DATA_DIFF``) runs beside
each compare where it is installed — it cannot share this project's
environment (it pins pydantic 1 and dbt-core), so install it into a venv of
its own: ``pip install --no-deps data-diff==0.11.2`` plus its requirements
and ``psycopg2-binary``. ``BENCH_CS_ROWS`` shrinks the table for a quick
look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import psycopg
from psycopg import sql

from safesync.shared.embedded import EmbeddedPostgres
from tests.bench import Memory, embedded_server, memory_of_run
from tests.bench.throttle_proxy import ThrottleProxy
from tests.fixtures.lms import LMS_CONTENT, create_lms, lms_config_toml

ROWS = int(os.environ.get("BENCH_CS_ROWS", 1_000_000))
BIG_ROWS = int(os.environ.get("BENCH_CS_BIG_ROWS", 3_000_000))
RATE = 20e6  # bytes/s per direction
DATA_DIFF = os.environ.get("BENCH_DATA_DIFF") or shutil.which("data-diff")

BULK = """
insert into lessons (id, course_id, position, title, body, duration_minutes, video_url, quiz, updated_at)
select g, 1 + g % 5, g % 8, 'Lesson ' || g || ' — 日本語のレッスン',
       repeat('Lorem ipsum dolor sit amet, consectetur. ', 1 + g % 4), 5 + g % 40,
       case when g % 3 = 0 then null else 'https://video.example/' || g || '.mp4' end,
       case when g % 2 = 0 then null else jsonb_build_object('questions', jsonb_build_array(g, g + 1), 'pass', 0.8) end,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
from generate_series(41, {rows}) g
"""


def _temp_bytes(pg: EmbeddedPostgres) -> dict[str, int]:
    """Temp file bytes each database wrote so far, once the backends of
    the last run have gone (a backend flushes its statistics as it exits)."""
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        for _ in range(200):
            if not conn.execute("select count(*) from pg_stat_activity where datname in ('src', 'tgt')").fetchone()[0]:
                break
            time.sleep(0.05)
        conn.execute("select pg_stat_clear_snapshot()")
        return dict(conn.execute("select datname, temp_bytes from pg_stat_database where datname in ('src', 'tgt')").fetchall())


def _temp_delta(before: dict[str, int], after: dict[str, int]) -> str:
    return f"src {after['src'] - before['src']:,} B, tgt {after['tgt'] - before['tgt']:,} B"


def _data_diff(src: str, tgt: str) -> float | None:
    """data-diff on lessons (every column), or None where it is not installed."""
    if not DATA_DIFF:
        return None
    urls = [url.replace("postgres@", "postgres:unused@") for url in (src, tgt)]  # it insists on a password; trust auth ignores it
    start = time.perf_counter()
    subprocess.run([DATA_DIFF, urls[0], "lessons", urls[1], "lessons", "-k", "id", "-c", "%"], check=True, capture_output=True, timeout=3600)
    return round(time.perf_counter() - start, 3)


def _ledger_size(tgt: str) -> dict:
    with psycopg.connect(tgt) as conn:
        ledger, table, rows = conn.execute(
            "select pg_total_relation_size('safesync.content_ledger'), pg_total_relation_size('lessons'), (select count(*) from lessons)"
        ).fetchone()
    return {"ledger_bytes": ledger, "ledger_bytes_per_row": round(ledger / rows, 1), "ledger_vs_table": round(ledger / table, 3)}


_last_memory = Memory()  # of the last ``_timed`` run


def _build(pg: EmbeddedPostgres) -> tuple[str, str]:
    urls = []
    for name in ("src", "tgt"):
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        url = pg.url(name)
        create_lms(url, variant="prod")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BULK.format(rows=ROWS))
            conn.execute("select setval('lessons_id_seq', max(id)) from lessons")
            conn.execute("vacuum analyze")
        urls.append(url)
    return urls[0], urls[1]


def _via(url: str, port: int) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"postgresql://{info['user']}@127.0.0.1:{port}/{info['dbname']}"


def _stream_both(src: str, tgt: str) -> None:
    """Naive compare: every content table out of both databases, at once."""

    def drain(url: str) -> None:
        with psycopg.connect(url) as conn:
            for table in LMS_CONTENT:
                with conn.cursor().copy(sql.SQL("copy {} to stdout").format(sql.Identifier(table))) as copy:
                    for _ in copy:
                        pass

    other = threading.Thread(target=drain, args=(tgt,))
    other.start()
    drain(src)
    other.join()


def _naive_sync(src: str, tgt: str) -> None:
    """Naive sync: stream every content table into the target and upsert
    every row (in one transaction, rolled back so the real sync that follows
    finds the same target)."""
    from safesync.functions.content_sync.plan import build_plan
    from safesync.shared.config import ContentSyncSection
    from safesync.shared.db import connect

    section = ContentSyncSection(tables=LMS_CONTENT, source="dev", target="prod")
    with connect(src, application_name="bench-naive-src") as s, connect(tgt) as t:
        plan = build_plan(section, s, t)
        for i, spec in enumerate(plan.tables):
            cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
            temp = sql.Identifier(f"naive_{i}")
            t.execute(sql.SQL("create temp table {} on commit drop as select {} from {} with no data").format(temp, cols, spec.table.ident))
            with s.cursor().copy(sql.SQL("copy {} ({}) to stdout").format(spec.table.ident, cols)) as out, t.cursor().copy(
                sql.SQL("copy {} ({}) from stdin").format(temp, cols)
            ) as inp:
                for data in out:
                    inp.write(data)
            sets = sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in spec.update_columns)
            overriding = sql.SQL(" overriding system value") if spec.identity_always else sql.SQL("")
            t.execute(
                sql.SQL("insert into {} ({}){} select {} from {} on conflict ({}) do update set {}").format(
                    spec.table.ident, cols, overriding, cols, temp, sql.SQL(", ").join(map(sql.Identifier, spec.primary_key)), sets
                )
            )
        t.rollback()


def _settings(tmp: Path, src: str, tgt: str, presync: str = "none"):
    from safesync.shared.config import load_settings

    os.environ["BENCH_DEV_URL"], os.environ["BENCH_PROD_URL"] = src, tgt
    path = tmp / "safesync.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [databases]
            dev = "BENCH_DEV_URL"
            prod = "BENCH_PROD_URL"
            [storage]
            url = "file://{tmp / 'store'}"
            """
        )
        + lms_config_toml(extra=f'presync_backup = "{presync}"')
    )
    return load_settings(path)


def _timed(fn) -> float:
    """Wall seconds of ``fn()``; its memory is kept in ``_last_memory``."""
    global _last_memory
    with memory_of_run() as _last_memory:
        start = time.perf_counter()
        fn()
        wall = round(time.perf_counter() - start, 3)
    return wall


def _vacuum(pg: EmbeddedPostgres) -> None:
    for name in ("src", "tgt"):
        with psycopg.connect(pg.url(name), autocommit=True) as conn:
            conn.execute("vacuum analyze lessons")


def _change_one_percent(src: str, round_: int) -> int:
    with psycopg.connect(src) as conn:
        return conn.execute(
            "update lessons set title = title || %s, updated_at = updated_at + interval '1 day' where id %% 100 = 7",
            [f" (rev {round_})"],
        ).rowcount


def _first_sync(tmp: Path, src: str, tgt: str, staged: bool) -> dict:
    """A first sync (no ledger yet) and its wall time; ``staged`` False
    hashes the target twice, as safesync did before ``seed.stage`` (the
    ledger is dropped afterwards, so the next run is a first sync too)."""
    from safesync.functions.content_sync import seed

    first: dict = {}
    with mock.patch.object(seed, "stage", seed.stage if staged else lambda conn, spec, index: None):
        wall = _timed(lambda: first.update(_ours(_settings(tmp, src, tgt), "sync")))
    first["ledger_size"] = _ledger_size(tgt)
    if not staged:
        with psycopg.connect(tgt, autocommit=True) as conn:
            conn.execute("drop schema safesync cascade")
    return {**first, "wall_s": wall}


def _ours(settings, mode: str, adopt: bool = False) -> dict:
    from safesync.functions.content_sync import content_sync

    answer = content_sync(settings, mode, adopt=adopt)
    body = answer.body.get("report", answer.body)
    assert answer.status == 200, body
    return body


def _undo(settings, run_id: str) -> dict:
    from safesync.functions.content_sync import content_undo

    answer = content_undo(settings, run_id)
    body = answer.body.get("report", answer.body)
    assert answer.status == 200, body
    return body


def _bare_dump(url: str, tables: tuple[str, ...] = ()) -> None:
    """``pg_dump -Fc`` of the target (or of ``tables`` only) to nowhere,
    with the compression our backups use."""
    from safesync.functions.backup.compression import choose
    from safesync.shared.db import server_version
    from safesync.shared.pgtools import libpq_target

    with psycopg.connect(url) as conn:
        choice = choose("auto", server_version(conn))
    conninfo, env = libpq_target(url)
    only = [f"--table={t}" for t in tables]
    subprocess.run([str(choice.pg_dump.path), "--format=custom", choice.argument, *only, "--dbname", conninfo], check=True, stdout=subprocess.DEVNULL, env={**os.environ, **env})


def run() -> list[dict]:
    # pg_dump found as a user gets it (zstd where it has it), for the presync backups and the bare dump alike
    with embedded_server("bench-content-sync-", tools="discovered") as (pg, tmp):
        return _measure(pg, tmp)


def _measure(pg: EmbeddedPostgres, tmp: Path) -> list[dict]:
    src, tgt = _build(pg)
    rows: list[dict] = []
    # the first sync with the ledger seeds it from the (equal) target rows: once per target. Beside it, the
    # same first sync hashing the target twice (compare, then seed: nothing staged), as before #22's fix
    for staged in (False, True):
        first = _first_sync(tmp, src, tgt, staged)
        t = first["timings"]
        rows.append(
            {
                "name": f"first sync: ledger seeded ({first['details']['ledger']['lessons']['reseeded']:,} lessons), "
                + ("target hashed once (staged)" if staged else "target hashed twice (nothing staged)") + ", loopback",
                "wall_s": first["wall_s"],
                **asdict(_last_memory),
                "seeding_s": t.get("ledger_s"),
                "stage_s": t.get("stage_s", 0.0),
                "compare_s": t.get("compare_s"),
                "target": "ledger ≤ 0.25× the table, seeding ≤ 2 s" if staged else None,
                "met": t.get("ledger_s", 0) <= 2.0 if staged else None,
                **first["ledger_size"],
                "note": "; ".join(f"{k}={v}" for k, v in t.items()),
            }
        )
    proxy = ThrottleProxy(pg.port, RATE).start()
    try:
        for link in ("loopback", "capped 20 MB/s"):
            capped = link != "loopback"
            s, t = (_via(src, proxy.port), _via(tgt, proxy.port)) if capped else (src, tgt)
            settings = _settings(tmp, s, t)

            # compare, identical
            _vacuum(pg)
            proxy.reset_counters()
            naive_s = _timed(lambda: _stream_both(s, t))
            naive_bytes = proxy.bytes_total
            proxy.reset_counters()
            temp_before = _temp_bytes(pg)
            ours_s = _timed(lambda: _ours(settings, "compare"))
            ours_bytes = proxy.bytes_total
            temp = _temp_delta(temp_before, _temp_bytes(pg))
            data_diff_s = _data_diff(s, t)
            speedup = round(naive_s / ours_s, 1)
            target = "≥ 10× faster" if capped else "≤ streaming both (≥ 1×)"
            rows.append(
                {
                    "name": f"compare identical, {ROWS:,} lessons, {link}",
                    "wall_s": ours_s,
                    "naive_s": naive_s,
                    "bytes": ours_bytes if capped else None,
                    "naive_bytes": naive_bytes if capped else None,
                    "ratio": f"{speedup}× faster",
                    "target": target,
                    "met": speedup >= (10 if capped else 1),
                    **asdict(_last_memory),
                    "temp_bytes": temp,
                    "wire_bytes_per_row": round(ours_bytes / ROWS, 3) if capped else None,
                    "data_diff_s": data_diff_s,
                }
            )

            # sync, 1 % changed: the whole job as a user waits for it, per presync_backup, beside its parts
            naive_s = naive_bytes = None
            for presync in ("none", "content", "full"):
                changed = _change_one_percent(src, len(rows))
                _vacuum(pg)
                if naive_s is None:  # the same 1 % for every variant: measured once per link
                    proxy.reset_counters()
                    naive_s = _timed(lambda: _naive_sync(s, t))
                    naive_bytes = proxy.bytes_total
                    _vacuum(pg)
                    proxy.reset_counters()
                    compared = {}
                    temp_before = _temp_bytes(pg)
                    compare_s = _timed(lambda: compared.update(_ours(settings, "compare")))
                    temp = _temp_delta(temp_before, _temp_bytes(pg))
                    data_diff_s = _data_diff(s, t)
                result = {}
                proxy.reset_counters()
                ours_s = _timed(lambda: result.update(_ours(_settings(tmp, s, t, presync), "sync")))
                ours_bytes = proxy.bytes_total
                written = sum(r.get("written", 0) for r in result["tables"]["tables"])
                assert written == changed, (written, changed)
                share = round(ours_s / naive_s, 3)
                row = {
                    "name": f"sync job 1% changed ({changed:,} rows), presync_backup={presync}, {link}",
                    "wall_s": ours_s,
                    "naive_s": naive_s,
                    "bytes": ours_bytes if capped else None,
                    "naive_bytes": naive_bytes if capped else None,
                    "ratio": f"{share}× naive",
                    "target": f"≤ {0.2 if capped else 0.25}× naive",
                    "met": share <= (0.2 if capped else 0.25),
                    **asdict(_last_memory),
                    "compare_only_s": compare_s,
                    "compare_temp_bytes": temp,
                    "data_diff_s": data_diff_s,
                    "undo_log_bytes": result["details"]["undo_log"]["bytes"],
                    **_ledger_size(tgt),
                    "note": "; ".join(f"{k}={v}" for k, v in result["timings"].items()),
                }
                if presync == "full":
                    proxy.reset_counters()
                    dump_s = _timed(lambda: _bare_dump(t))
                    row.update(ratio=f"{round(ours_s / dump_s, 3)}× bare pg_dump -Fc ({share}× naive)", target="≤ 1.1× bare pg_dump -Fc", met=ours_s <= 1.1 * dump_s, bare_dump_s=dump_s)
                if presync == "content":  # beside it, what the dump it waits for costs by itself: no client-side dump is faster
                    content_dump_s = _timed(lambda: _bare_dump(t, (*(f"public.{name}" for name in LMS_CONTENT), "safesync.content_ledger")))
                    row.update(bare_content_dump_s=content_dump_s, vs_bare_content_dump=f"{round(ours_s / content_dump_s, 3)}×")
                rows.append(row)
                if presync == "content":  # undo that sync: the same rows go back
                    undone = {}
                    undo_s = _timed(lambda: undone.update(_undo(_settings(tmp, s, t, presync), result["run_id"])))
                    rows.append(
                        {
                            "name": f"undo of that sync ({changed:,} rows), {link}",
                            "wall_s": undo_s,
                            "naive_s": naive_s,
                            "ratio": f"{round(undo_s / naive_s, 3)}× naive full copy",
                            "target": "≤ 0.2× naive full copy",
                            "met": undo_s <= 0.2 * naive_s,
                            "note": "; ".join(f"{k}={v}" for k, v in undone["timings"].items()),
                        }
                    )
                    assert _ours(_settings(tmp, s, t, presync), "sync")["status"] == "ok"  # back in sync for the next variant
    finally:
        proxy.stop()
    if BIG_ROWS > ROWS:
        rows += _grown(pg, tmp, src, tgt)

    return rows


def _grown(pg: EmbeddedPostgres, tmp: Path, src: str, tgt: str) -> list[dict]:
    """Compare costs at BIG_ROWS rows (loopback, through an uncapped proxy
    that counts bytes): identical, then 1 % changed."""
    for url in (src, tgt):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BULK.replace("generate_series(41, {rows})", "generate_series({start}, {rows})").format(start=ROWS + 1, rows=BIG_ROWS))
            conn.execute("vacuum analyze lessons")
    out = []
    proxy = ThrottleProxy(pg.port, None).start()
    try:
        settings = _settings(tmp, _via(src, proxy.port), _via(tgt, proxy.port))
        for label in ("identical", "1% changed"):
            if label != "identical":
                with psycopg.connect(src) as conn:
                    conn.execute("update lessons set title = title || ' (big)' where id % 100 = 9")
                _vacuum(pg)
            proxy.reset_counters()
            temp_before = _temp_bytes(pg)
            wall = _timed(lambda: _ours(settings, "compare"))
            out.append(
                {
                    "name": f"compare {label}, {BIG_ROWS:,} lessons, loopback",
                    "wall_s": wall,
                    **asdict(_last_memory),
                    "temp_bytes": _temp_delta(temp_before, _temp_bytes(pg)),
                    "wire_bytes_per_row": round(proxy.bytes_total / BIG_ROWS, 3),
                    "target": "no temp files; identical ≤ 1 byte/row",
                }
            )
    finally:
        proxy.stop()
    return out
