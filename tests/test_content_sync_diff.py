"""Row hashing and the key-range descent, against a brute-force comparison."""

from __future__ import annotations

import random
import uuid

import psycopg
import pytest

from safesync.shared import rowdiff as diffmod
from safesync.shared.rowdiff import Sides, diff_table, tune
from safesync.functions.content_sync.plan import table_spec
from safesync.shared.db import TableRef, connect


def run_diff(src_url: str, tgt_url: str, table: str = "t", native_hash: bool = True, expect_changes: bool = False):
    with connect(src_url, application_name="test-src") as src, connect(tgt_url) as tgt:
        spec = table_spec(src, tgt, TableRef("public", table), "dev", "prod", native_hash=native_hash)
        sides = Sides(src, tgt)
        sides.both(tune)  # as content sync and validate open their transactions
        try:
            return spec, diff_table(sides, spec, expect_changes=expect_changes)
        finally:
            sides.close()


def brute_force(src_url: str, tgt_url: str, spec) -> tuple[set, set, set]:
    """new, changed, extra keys by fetching every row's text form."""
    cols = ", ".join(f'"{c}"::text' for c in spec.columns)
    keys = ", ".join(f'"{k}"::text' for k in spec.key)
    n = len(spec.key)
    rows = []
    for url in (src_url, tgt_url):
        with psycopg.connect(url) as conn:
            conn.execute("set timezone = 'UTC'; set extra_float_digits = 3")
            rows.append({tuple(r[:n]): r[n:] for r in conn.execute(f"select {keys}, {cols} from {spec.table.name}")})
    s, t = rows
    return {k for k in s if k not in t}, {k for k in s if k in t and s[k] != t[k]}, {k for k in t if k not in s}


def make_pair(make_db, ddl: str) -> tuple[str, str]:
    a, b = make_db(), make_db()
    for url in (a, b):
        with psycopg.connect(url) as conn:
            conn.execute(ddl)
    return a, b


@pytest.mark.parametrize("native_hash", [True, False], ids=["hash_record", "text-hash (PostgreSQL < 14)"])
def test_hash_tells_apart_what_text_tools_confuse(make_db, native_hash):
    src, tgt = make_pair(
        make_db,
        "create table t (id int primary key, txt text, j jsonb, js json, arr int[], ts timestamptz, num numeric, b bytea)",
    )
    # (source values, target values, should differ)
    cases = [
        (("NULL-vs-empty", None), ("NULL-vs-empty", ""), True),
        (("empty-vs-NULLtext", ""), ("empty-vs-NULLtext", "NULL"), True),
        (("NULLtext-vs-NULL", "NULL"), ("NULLtext-vs-NULL", None), True),
        (("nfc-vs-nfd", "caf\u00e9"), ("nfc-vs-nfd", "cafe\u0301"), True),
        (("same-unicode", "日本語 ✓ 🚀"), ("same-unicode", "日本語 ✓ 🚀"), False),
        (("quote-comma", 'a","b'), ("quote-comma", "a,b"), True),
    ]
    with psycopg.connect(src) as s, psycopg.connect(tgt) as t:
        for i, (a, b, _) in enumerate(cases):
            s.execute("insert into t (id, txt) values (%s, %s)", [i, a[1]])
            t.execute("insert into t (id, txt) values (%s, %s)", [i, b[1]])
        extra = [
            # id, source column = value, target column = value, differs
            (100, "j", '{"a": 1, "b": [1, 2]}', '{"b": [1, 2],   "a": 1}', False),  # jsonb: key order/spacing irrelevant
            (101, "js", '{"a": 1}', '{"a":1}', True),  # json keeps its text: a real difference
            (102, "arr", "{1,2}", "{2,1}", True),
            (103, "arr", "{}", None, True),
            (104, "num", "1.5", "1.50", True),  # same number, different stored text
            (105, "b", "\\x00", "\\x", True),
        ]
        for id_, col, a, b, _ in extra:
            s.execute(f"insert into t (id, {col}) values (%s, %s)", [id_, a])
            t.execute(f"insert into t (id, {col}) values (%s, %s)", [id_, b])
        # the same instant written under different session time zones: equal
        s.execute("set timezone = 'Asia/Tokyo'")
        s.execute("insert into t (id, ts) values (200, '2024-05-01 09:00:00')")
        t.execute("set timezone = 'America/Los_Angeles'")
        t.execute("insert into t (id, ts) values (200, '2024-04-30 17:00:00')")
        s.execute("insert into t (id, ts) values (201, '2024-05-01 09:00:00')")
        t.execute("insert into t (id, ts) values (201, '2024-05-01 09:00:00')")  # same wall clock, other instant
    spec, result = run_diff(src, tgt, native_hash=native_hash)
    expected = {(str(i),) for i, (_, _, d) in enumerate(cases) if d} | {(str(e[0]),) for e in extra if e[4]} | {("201",)}
    assert set(result.changed) == expected
    assert not result.new and not result.extra
    assert result.unchanged == result.source_rows - len(expected)


@pytest.mark.parametrize("native_hash", [True, False], ids=["hash_record", "text-hash (PostgreSQL < 14)"])
def test_hash_tells_apart_swapped_and_null_columns(make_db, native_hash):
    """Values moved between columns of one type, a NULL moved, bool, date,
    uuid and timestamps (infinity too): what differs and what does not."""
    src, tgt = make_pair(make_db, "create table t (id int primary key, a int, b int, c text, d text, f boolean, g date, u uuid, ts timestamp, z timestamptz)")
    u1, u2 = str(uuid.uuid4()), str(uuid.uuid4())
    rows = [  # id, source (a, b, c, d, f, g, u, ts, z), target, differs
        (1, (1, 2, None, None, None, None, None, None, None), (2, 1, None, None, None, None, None, None, None), True),
        (2, (None, 1, None, None, None, None, None, None, None), (1, None, None, None, None, None, None, None, None), True),
        (3, (None, None, "x", "y", None, None, None, None, None), (None, None, "y", "x", None, None, None, None, None), True),
        (4, (None, None, "x", "x", None, None, None, None, None), (None, None, "x", "x", None, None, None, None, None), False),
        (5, (None, None, None, None, True, None, None, None, None), (None, None, None, None, False, None, None, None, None), True),
        (6, (None, None, None, None, False, None, None, None, None), (None, None, None, None, None, None, None, None, None), True),
        (7, (None, None, None, None, None, "infinity", None, None, None), (None, None, None, None, None, "infinity", None, None, None), False),
        (8, (None, None, None, None, None, "2024-01-01", None, None, None), (None, None, None, None, None, "2024-01-02", None, None, None), True),
        (9, (None, None, None, None, None, None, u1, None, None), (None, None, None, None, None, None, u2, None, None), True),
        (10, (None, None, None, None, None, None, u1, "2024-05-01 09:00", "infinity"), (None, None, None, None, None, None, u1, "2024-05-01 09:00", "infinity"), False),
        (11, (None, None, None, None, None, None, None, "2024-05-01 09:00", None), (None, None, None, None, None, None, None, "2024-05-01 09:00:00.000001", None), True),
        (12, (0, 0, "", "", None, None, None, None, None), (None, None, None, None, None, None, None, None, None), True),
    ]
    insert = "insert into t (id, a, b, c, d, f, g, u, ts, z) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    with psycopg.connect(src) as s, psycopg.connect(tgt) as t:
        for id_, a, b, _ in rows:
            s.execute(insert, [id_, *a])
            t.execute(insert, [id_, *b])
    _, result = run_diff(src, tgt, native_hash=native_hash)
    assert set(result.changed) == {(str(r[0]),) for r in rows if r[3]}


def test_identical_tables_cost_one_pass_per_side(make_db):
    # autovacuum off: the row estimate is ours to set (an autoanalyze landing
    # at a random moment under load would change which plan is counted)
    src, tgt = make_pair(make_db, "create table t (id bigint primary key, body text) with (autovacuum_enabled = false)")
    for url in (src, tgt):
        with psycopg.connect(url) as conn:
            conn.execute("insert into t select g, repeat('x', g % 50) from generate_series(1, 20000) g")
    _, same = run_diff(src, tgt)
    # an integer key: the key span (two index lookups), then one aggregate pass
    assert same.queries == 2 and same.rows_fetched == 0 and same.unchanged == 20000
    with psycopg.connect(src) as conn:
        conn.execute("create table u with (autovacuum_enabled = false) as select id::text as id, body from t; alter table u add primary key (id)")
    with psycopg.connect(tgt) as conn:
        conn.execute("create table u with (autovacuum_enabled = false) as select id::text as id, body from t; alter table u add primary key (id)")
    _, same_text_key = run_diff(src, tgt, "u")
    assert same_text_key.queries == 1 and same_text_key.rows_fetched == 0

    with psycopg.connect(tgt) as conn:
        conn.execute("update t set body = 'changed' where id = 12345")
    _, one = run_diff(src, tgt)
    assert set(one.changed) == {("12345",)}
    assert one.rows_fetched <= 2 * diffmod.LEAF_ROWS  # rows never travel unless their range differs

    with psycopg.connect(src) as conn:  # changes everywhere: every coarse range differs
        conn.execute("update t set body = body || '!' where id % 50 = 3")
        conn.execute("delete from t where id % 700 = 1")
        conn.execute("insert into t select g, 'new' from generate_series(20001, 20100) g")
    _, unanalysed = run_diff(src, tgt)  # no row estimate: the coarse grid is sized again by the real count
    for url in (src, tgt):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("analyze t")
    _, dense = run_diff(src, tgt)
    for found in (unanalysed, dense):
        assert len(found.changed) == 400 + 1 and len(found.extra) == 29 and len(found.new) == 100  # + row 12345
        assert found.rows_fetched < 20000
    # key span, coarse grid, the small ranges' checksums, the differing small ranges' rows
    assert dense.queries == 4 and unanalysed.queries == 5
    # a sync's compare expects changes: a sample of ranges shows them scattered, so the coarse
    # grid carries fine checks pointing at the differing rows (and, where a check byte
    # collided, the rest of that range's rows are fetched): key span, sample, grid, rows
    _, expected = run_diff(src, tgt, expect_changes=True)
    assert (expected.new, expected.changed, expected.extra) == (dense.new, dense.changed, dense.extra)
    assert expected.queries in (4, 5)


def test_runs_get_a_fine_grid_and_isolated_ranges_are_batched(make_db, monkeypatch):
    """Dense changes in the first half (runs of differing ranges: a fine
    grid over their span), sparse ones in the second (isolated ranges,
    descended through the index a batch at a time): together they find
    every row."""
    monkeypatch.setattr(diffmod, "BATCH", 16)
    src, tgt = make_pair(make_db, "create table t (id int primary key, body text)")
    for url in (src, tgt):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into t select g, md5(g::text) from generate_series(1, 60000) g")
    with psycopg.connect(tgt, autocommit=True) as conn:
        conn.execute("update t set body = 'x' where (id <= 30000 and id % 97 = 0) or id % 1280 = 640")
        conn.execute("delete from t where id % 1013 = 5 and id <= 30000")
        conn.execute("analyze t")
    spec, result = run_diff(src, tgt)
    assert (set(result.new), set(result.changed), set(result.extra)) == brute_force(src, tgt, spec)
    isolated = 30000 // 1280
    # key span + coarse grid, at least one fine grid, then each batch of isolated ranges: checksums, rows
    assert result.queries >= 2 + 1 + 2 * (isolated // 16)


@pytest.mark.parametrize("key", ["int", "uuid"])
def test_fine_checks_that_collide_still_find_every_row(make_db, monkeypatch, key):
    """A fine check byte only says which fine ranges to fetch. With every
    check forced equal (as if all collided), no differing range points at
    any of its fine ranges, the fetched rows (none) do not balance the
    range's difference, and its other fine ranges are fetched: every
    difference is still found, deletions and insertions included."""
    ident = "n" if key == "int" else "md5(n::text)::uuid"
    src, tgt = make_pair(make_db, f"create table t (id {key} primary key, n int, body text)")
    for url in (src, tgt):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"insert into t select {ident}, n, md5(n::text) from generate_series(1, 30000) n")
    with psycopg.connect(tgt, autocommit=True) as conn:
        conn.execute("update t set body = 'x' where n % 97 = 0")
        conn.execute("delete from t where n % 1013 = 5")
        conn.execute(f"insert into t select {ident}, n, 'only in prod' from generate_series(30001, 30002) n")
        conn.execute("analyze t")
    spec, honest = run_diff(src, tgt, expect_changes=True)
    monkeypatch.setattr(diffmod, "_fine_check", lambda total, rows: psycopg.sql.SQL("1"))
    _, collided = run_diff(src, tgt, expect_changes=True)
    expected = brute_force(src, tgt, spec)
    for result in (honest, collided):
        assert (set(result.new), set(result.changed), set(result.extra)) == expected
    # the collided run fetched every differing range whole
    assert collided.rows_fetched > 2 * honest.rows_fetched


def test_fine_checks_only_where_a_sample_shows_scattered_changes(make_db, monkeypatch):
    """Fine checks make the first pass dearer; a sync's compare pays for
    them only when a sample of coarse ranges shows many differing (changes
    scattered over the table). Identical tables and one clustered edit keep
    the plain grid. Every mode finds exactly the differing rows."""
    resolved = []
    real = diffmod._resolve_checked
    monkeypatch.setattr(diffmod, "_resolve_checked", lambda *a: resolved.append(len(a[2])) or real(*a))
    src, tgt = make_pair(make_db, "create table t (id bigint primary key, body text)")
    for url in (src, tgt):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into t select g, md5(g::text) from generate_series(1, 40000) g")
            conn.execute("analyze t")
    found = {}
    for name, edit in (("identical", None), ("clustered", "id between 20000 and 20300"), ("scattered", "id % 40 = 9")):
        if edit:
            with psycopg.connect(tgt, autocommit=True) as conn:
                conn.execute("update t set body = md5(body) where " + edit)
        resolved.clear()
        spec, result = run_diff(src, tgt, expect_changes=True)
        assert (set(result.new), set(result.changed), set(result.extra)) == brute_force(src, tgt, spec)
        found[name] = (len(result.changed), sum(resolved))
    assert found["identical"] == (0, 0)
    assert found["clustered"] == (301, 0)  # the plain grid and fine grids through the index
    changed, ranges = found["scattered"]
    assert changed == 301 + 1000 - 8 and ranges > 500  # resolved from the first pass's fine checks


def test_columns_are_matched_by_name_not_position(make_db):
    a, b = make_db(), make_db()
    with psycopg.connect(a) as conn:
        conn.execute("create table t (id int primary key, x text, y text); insert into t values (1, 'p', 'q')")
    with psycopg.connect(b) as conn:
        conn.execute("create table t (y text, id int primary key, x text); insert into t values ('q', 1, 'p')")
    spec, result = run_diff(a, b)
    assert not spec.drift.any and not result.differs


def _random_key(kind: str, rnd: random.Random):
    if kind == "int":
        return (rnd.choice([rnd.randint(-10**6, 10**6), rnd.randint(-(2**63), 2**63 - 1), rnd.randint(0, 3000)]),)
    if kind == "int-span":  # a span within bigint: the grid carries fine checks; dense and sparse ranges
        return (rnd.choice([rnd.randint(-10**6, 10**6), rnd.randint(0, 3000), rnd.randint(0, 3000)]),)
    if kind == "uuid":
        return (uuid.UUID(int=rnd.getrandbits(128)),)
    if kind == "text":
        return ("".join(rnd.choice(["a", "B", "b", "ä", "Z", " ", "-", "日", "😀", "'", '"']) for _ in range(rnd.randint(1, 6))),)
    return (rnd.choice(["EU", "eu", "US", "Ü", ""]) + str(rnd.randint(0, 40)), rnd.randint(-5, 400))


@pytest.mark.parametrize(
    "kind, ddl",
    [
        ("int", "create table t (id bigint primary key, v text)"),
        ("int-span", "create table t (id bigint primary key, v text)"),
        ("uuid", "create table t (id uuid primary key, v text)"),
        ("text", "create table t (id text primary key, v text)"),
        ("composite", "create table t (region text, n int, v text, primary key (region, n))"),
    ],
)
@pytest.mark.parametrize("expect_changes", [False, True], ids=["proof", "sync"])
def test_descent_matches_brute_force_for_every_key_kind(make_db, monkeypatch, kind, ddl, expect_changes):
    # tiny leaves and branches so a few thousand rows need several levels
    monkeypatch.setattr(diffmod, "LEAF_ROWS", 4)
    monkeypatch.setattr(diffmod, "FIRST_BRANCH", 4)
    monkeypatch.setattr(diffmod, "MIN_CHILD_ROWS", 2)
    rnd = random.Random(f"content-sync-{kind}")
    keys = list({_random_key(kind, rnd) for _ in range(3000)})
    src, tgt = make_pair(make_db, ddl)
    cols = "id" if kind != "composite" else "region, n"
    marks = ", ".join(["%s"] * (len(keys[0]) + 1))
    source_rows, target_rows = [], []
    for i, key in enumerate(keys):
        roll = rnd.random()
        if roll < 0.05:
            source_rows.append((*key, f"only-src-{i}"))
        elif roll < 0.10:
            target_rows.append((*key, f"only-tgt-{i}"))
        elif roll < 0.15:
            source_rows.append((*key, f"v{i}"))
            target_rows.append((*key, None if i % 2 else f"v{i}!"))
        else:
            source_rows.append((*key, f"v{i}"))
            target_rows.append((*key, f"v{i}"))
    for url, rows in ((src, source_rows), (tgt, target_rows)):
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.executemany(f"insert into t ({cols}, v) values ({marks})", rows)
    spec, result = run_diff(src, tgt, expect_changes=expect_changes)
    new, changed, extra = brute_force(src, tgt, spec)
    assert (set(result.new), set(result.changed), set(result.extra)) == (new, changed, extra)
    assert new and changed and extra
    assert result.queries > 2  # it really descended
    assert result.rows_fetched < len(source_rows) + len(target_rows)


def _temp_bytes(urls: list[str]) -> list[int]:
    """Temp file bytes each database has written, once the backends of the
    compare have gone (a backend flushes its statistics when it exits)."""
    import time

    out = []
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(100):
                if not conn.execute("select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()").fetchone()[0]:
                    break
                time.sleep(0.05)
            conn.execute("select pg_stat_clear_snapshot()")
            out.append(conn.execute("select temp_bytes from pg_stat_database where datname = current_database()").fetchone()[0])
    return out


@pytest.mark.parametrize("expect_changes", [False, True], ids=["proof", "sync"])
def test_compare_writes_no_temp_files(make_db, expect_changes):
    """A wide table far larger than work_mem, identical and then 1% changed:
    neither server spills the compare to disk (the grid groups a bounded
    number of ranges in a hash table; it never sorts the rows)."""
    src, tgt = make_pair(make_db, "create table t (id bigint primary key, title text, body text, n numeric, j jsonb)")
    fill = (
        "insert into t select g, 'Lesson ' || g, repeat(md5(g::text), 14), g / 7.0, jsonb_build_object('g', g, 'tags', array[g, g + 1]) "
        "from generate_series(1, 200000) g"
    )
    for url in (src, tgt):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(fill)
            conn.execute("vacuum analyze t")
            assert conn.execute("select pg_table_size('t') > 8 * pg_size_bytes(current_setting('work_mem'))").fetchone()[0]
    before = _temp_bytes([src, tgt])
    _, same = run_diff(src, tgt, expect_changes=expect_changes)
    assert not same.differs and same.queries == 2 + expect_changes  # a sync's compare samples first
    with psycopg.connect(tgt, autocommit=True) as conn:
        conn.execute("update t set title = title || '!' where id % 100 = 7")
    _, changed = run_diff(src, tgt, expect_changes=expect_changes)
    assert len(changed.changed) == 2000 and changed.rows_fetched < 2000 * 2 * 2 * diffmod.MIN_CHILD_ROWS
    assert _temp_bytes([src, tgt]) == before


@pytest.mark.parametrize("rows", [40, 5000], ids=["one range", "many ranges"])
@pytest.mark.parametrize("span", [2**127 + 2**60, 3 * 2**125 + 12345], ids=["2^127+2^60", "3*2^125+12345"])
@pytest.mark.parametrize("change", ["updated", "deleted", "inserted"])
@pytest.mark.parametrize("expect_changes", [False, True], ids=["proof", "sync"])
def test_a_difference_in_the_largest_uuid_key_is_found(make_db, rows, span, change, expect_changes):
    """A uuid key span is about 2^128 and its ranges were sized through a
    float: they could end short of the span, and the row with the largest
    key was never looked at — an update of it compared "identical"."""
    lo = 0x0492_1DA3_DF19_467C_93DD_7AA6_3293_D79A
    keys = [uuid.UUID(int=lo + i * (span // rows)) for i in range(rows - 1)] + [uuid.UUID(int=lo + span)]
    src, tgt = make_pair(make_db, "create table t (id uuid primary key, v text)")
    for url in (src, tgt):
        with psycopg.connect(url) as conn, conn.cursor().copy("copy t (id, v) from stdin") as copy:
            for key in keys[:-1]:
                copy.write_row((key, "same"))
            if change != "inserted" or url == src:
                copy.write_row((keys[-1], "new" if change == "updated" and url == src else "same"))
    if change == "deleted":
        with psycopg.connect(src) as conn:
            conn.execute("delete from t where id = %s", [keys[-1]])
    _, result = run_diff(src, tgt, expect_changes=expect_changes)
    last = (str(keys[-1]),)
    found = {"updated": result.changed, "deleted": result.extra, "inserted": result.new}[change]
    assert set(found) == {last} and result.differs and result.complete


def test_a_generated_column_with_another_expression_is_drift(make_db, write_settings):
    """Generated columns are neither compared nor written — each side computes
    its own — so a different expression left dev's g = 10 and prod's g = 15
    under "all 1 content tables identical"."""
    from safesync.functions.content_sync import content_sync

    dev, prod = make_db(), make_db()
    for url, factor in ((dev, 2), (prod, 3)):
        with psycopg.connect(url) as conn:
            conn.execute(f"create table t (id int primary key, a int, g int generated always as (a * {factor}) stored)")
            conn.execute("insert into t (id, a) values (1, 5)")
    settings = write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["t"]\n')
    answer = content_sync(settings, "compare")
    assert answer.body["ok"] is False, answer.body
    assert "g: generated always as ((a * 2)) -> generated always as ((a * 3))" in answer.body["summary"], answer.body["summary"]
    assert content_sync(settings, "sync", adopt=True).status == 422
