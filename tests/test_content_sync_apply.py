"""The write path: upsert shapes, sequences, constraint failures."""

from __future__ import annotations

import psycopg

from safesync.functions.content_sync import content_sync
from safesync.shared import db
from tests.fixtures.lms import lms_config_toml, lms_database


def _fingerprint(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return db.database_fingerprint(conn)


def test_sequences_only_move_forward(pg_server, make_db, write_settings):
    dev = lms_database(pg_server, make_db, variant="dev")
    prod = lms_database(pg_server, make_db, variant="prod")
    with psycopg.connect(prod) as conn:
        conn.execute("select setval('lessons_id_seq', 10000)")
    answer = content_sync(write_settings({"dev": dev, "prod": prod}, lms_config_toml()), "sync", adopt=True)
    assert answer.status == 200
    moved = {m["table"]: m for m in answer.body["details"]["sequences"]}
    assert "lessons" not in moved and moved["courses"]["set_to"] == 6
    with psycopg.connect(prod) as conn:
        assert conn.execute("select last_value from lessons_id_seq").fetchone()[0] == 10000
        assert conn.execute("select last_value from courses_id_seq").fetchone()[0] == 6


def test_key_only_tables_and_always_identity_columns(make_db, write_settings):
    dev, prod = make_db(), make_db()
    ddl = """
        create table tags (name text primary key);
        create table lesson_tags (lesson_id int, tag text references tags(name), primary key (lesson_id, tag));
        create table badges (code text primary key, seq int generated always as identity, label text);
    """
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute(ddl)
    with psycopg.connect(dev) as conn:
        conn.execute("insert into tags values ('a'), ('b'), ('ü')")
        conn.execute("insert into lesson_tags values (1, 'a'), (1, 'ü'), (2, 'b')")
        conn.execute("insert into badges (code, seq, label) overriding system value values ('gold', 7, 'Gold'), ('new', 9, 'New')")
    with psycopg.connect(prod) as conn:
        conn.execute("insert into tags values ('a')")
        conn.execute("insert into badges (code, seq, label) overriding system value values ('gold', 7, 'Gold (old)')")
    config = '[content_sync]\ntables = ["lesson_tags", "tags", "badges"]\n'
    answer = content_sync(write_settings({"dev": dev, "prod": prod}, config), "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert answer.body["details"]["fk_order"].index("tags") < answer.body["details"]["fk_order"].index("lesson_tags")
    prints = _fingerprint(prod)
    assert prints == _fingerprint(dev)
    assert prints["public.badges"][0] == 2


def test_a_constraint_failure_rolls_everything_back(pg_server, make_db, write_settings):
    dev = lms_database(pg_server, make_db, variant="dev")
    prod = lms_database(pg_server, make_db, variant="prod")
    with psycopg.connect(prod) as conn:  # a prod-only course holds the slug dev's new course uses
        conn.execute("insert into courses (id, slug, title) values (500, 'new-course-1', 'Hotfix')")
    before = _fingerprint(prod)
    answer = content_sync(write_settings({"dev": dev, "prod": prod}, lms_config_toml()), "sync", adopt=True)
    assert answer.status == 422
    assert "rolled back, target unchanged" in answer.body["error"] and "courses_slug_key" in answer.body["error"]
    assert _fingerprint(prod) == before


def test_a_dry_run_that_draws_ids_says_so(make_db, write_settings):
    """A table matched on a natural key gets new rows' ids from the target's
    sequence: the dry-run's INSERT draws them, and ROLLBACK does not give
    them back. The summary said "rolled back" as if prod were untouched."""
    dev, prod = make_db(), make_db()
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute("create table courses (id serial primary key, slug text not null unique, title text)")
            conn.execute("insert into courses (slug, title) values ('a', 'A')")
    with psycopg.connect(dev) as conn:
        conn.execute("insert into courses (slug, title) values ('b', 'B')")
    config = '[content_sync]\ntables = ["courses"]\n[content_sync.options.courses]\nmatch_on = ["slug"]\n'
    settings = write_settings({"dev": dev, "prod": prod}, config)
    answer = content_sync(settings, "dry-run", adopt=True)
    assert answer.status == 200, answer.body
    with psycopg.connect(prod) as conn:
        assert conn.execute("select last_value from courses_id_seq").fetchone()[0] == 2  # drawn, not given back
    assert "except sequence values drawn from public.courses_id_seq" in answer.body["summary"]
    assert answer.body["details"]["sequences_drawn"] == ["public.courses_id_seq"]


def test_a_descending_sequence_moves_down_past_the_synced_ids(make_db, write_settings):
    """A sequence with a negative increment hands out ever smaller ids: the
    sync moved it "forward" to the largest id (from -3 back to -1), so the
    application's next insert drew -2, a synced row's id."""
    dev, prod = make_db(), make_db()
    ddl = "create sequence s increment -1 start -1 maxvalue -1; create table t (id int primary key default nextval('s'), v text)"
    for url, rows in ((dev, 5), (prod, 3)):
        with psycopg.connect(url) as conn:
            conn.execute(ddl)
            conn.execute("insert into t (v) select 'x' from generate_series(1, %s)", [rows])
    answer = content_sync(write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["t"]\n'), "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert answer.body["details"]["sequences"][0]["set_to"] == -5
    with psycopg.connect(prod) as conn:
        assert conn.execute("insert into t (v) values ('app') returning id").fetchone()[0] == -6


def test_a_write_the_server_rejects_names_the_table(make_db, write_settings):
    """PostgreSQL's own message for an upsert into a table with an INSERT or
    UPDATE rule, or with a deferrable primary key, names no table: the
    refusal said only "sync rolled back, target unchanged: INSERT with ON
    CONFLICT clause cannot be used with table that has INSERT or UPDATE rules"."""
    dev, prod = make_db(), make_db()
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute("create table plain (id int primary key, v text); create table ruled (id int primary key, v text)")
    with psycopg.connect(dev) as conn:
        conn.execute("insert into plain values (1, 'a'); insert into ruled values (1, 'a')")
    with psycopg.connect(prod) as conn:
        conn.execute("create rule quiet as on update to ruled do instead nothing")
    settings = write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["plain", "ruled"]\n')
    answer = content_sync(settings, "sync", adopt=True)
    assert answer.status == 422, answer.body
    assert answer.body["error"].startswith("sync (writing ruled) rolled back, target unchanged: INSERT with ON CONFLICT"), answer.body["error"]
    assert "writing" not in answer.body["report"]["details"]


def test_a_sequence_that_cannot_reach_the_synced_ids_is_refused_before_anything_moves(make_db, write_settings):
    """prod's b_seq stops at 100 and dev's b has id 200: the dry-run said ok,
    and the sync's setval failed after the proof — when a_seq had already
    moved — and reported "target unchanged: current transaction is aborted"."""
    dev, prod = make_db(), make_db()
    tables = "create table a (id int primary key default nextval('a_seq'), v text); create table b (id int primary key default nextval('b_seq'), v text);"
    with psycopg.connect(dev) as conn:
        conn.execute("create sequence a_seq; create sequence b_seq;" + tables + "insert into a values (50, 'x'); insert into b values (200, 'y')")
    with psycopg.connect(prod) as conn:
        conn.execute("create sequence a_seq; create sequence b_seq maxvalue 100;" + tables)
    settings = write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["a", "b"]\n')
    for mode in ("dry-run", "sync"):
        answer = content_sync(settings, mode, adopt=True)
        assert answer.status == 422, answer.body
        assert "b.id holds 200, past sequence public.b_seq's maxvalue 100" in answer.body["summary"], answer.body
        assert answer.body["summary"].startswith("rolled back, nothing changed")
    with psycopg.connect(prod) as conn:
        assert conn.execute("select last_value, is_called from a_seq").fetchone() == (1, False)
        assert conn.execute("select count(*) from a").fetchone()[0] == 0


def test_a_sequence_the_role_may_not_set_is_refused_before_anything_moves(pg_server, make_db, write_settings):
    """The role may write both tables but lacks UPDATE on b_seq: setval
    failed after the proof, once a_seq had moved, and the error that said
    why was hidden by "current transaction is aborted"."""
    import uuid

    dev, prod = make_db(), make_db()
    tables = "create sequence a_seq; create sequence b_seq; create table a (id int primary key default nextval('a_seq'), v text); create table b (id int primary key default nextval('b_seq'), v text);"
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute(tables)
    with psycopg.connect(dev) as conn:
        conn.execute("insert into a values (50, 'x'); insert into b values (70, 'y')")
    role = f"seq_{uuid.uuid4().hex[:8]}"
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            f"""create role {role} login; grant connect on database "{dbname}" to {role}; grant usage on schema public to {role};
            grant select, insert, update on a, b to {role}; grant select, usage on a_seq, b_seq to {role}; grant update on a_seq to {role};
            create schema safesync; grant usage, create on schema safesync to {role};"""
        )
    url = pg_server.url(dbname, user=role, password=None)
    answer = content_sync(write_settings({"dev": dev, "prod": url}, '[content_sync]\ntables = ["a", "b"]\npresync_backup = "none"\n'), "sync", adopt=True)
    assert answer.status == 422, answer.body
    assert "b.id holds 70, but the role lacks UPDATE on sequence public.b_seq" in answer.body["summary"], answer.body
    with psycopg.connect(prod) as conn:
        assert conn.execute("select last_value, is_called from a_seq").fetchone() == (1, False)
        assert conn.execute("select count(*) from a").fetchone()[0] == 0


def test_rows_a_rule_kept_from_being_deleted_are_named(lms):
    """A prod rule turned the sync's DELETE into nothing: the check after
    writing refuses, and names the rows still there (it printed "0 written
    row(s) differ from the source, e.g. ; …")."""
    make, dev, prod = lms
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("delete from promotions where code = (select min(code) from promotions)")
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create rule keep as on delete to promotions do instead nothing")
    before = _fingerprint(prod)
    answer = content_sync(make(delete_missing=True), "sync", adopt=True)
    assert answer.status == 422, answer.body
    assert "promotions (2 deleted row(s) still there, e.g. (PROMO1, EU), (PROMO1, US))" in answer.body["summary"], answer.body["summary"]
    assert "e.g. ;" not in answer.body["summary"] and _fingerprint(prod) == before


def test_a_text_column_drawing_from_a_sequence_in_an_expression_syncs_and_is_named(make_db, write_settings):
    """``sku text default ('SKU-' || nextval('sku_seq'))``: the sequence move
    read ``max(sku)::bigint`` and every dry-run and sync failed with "invalid
    input syntax for type bigint: "SKU-2"" — the table could never be synced.
    The numeric ids' sequences still move (a legacy ``numeric(12)`` id
    too); the SKU's is named, not moved."""
    dev, prod = make_db(), make_db()
    ddl = (
        "create sequence sku_seq; create sequence legacy_seq;"
        "create table products (id serial primary key, sku text not null unique default ('SKU-' || nextval('sku_seq')), title text);"
        "create table invoices (id numeric(12) primary key default nextval('legacy_seq'), title text);"
    )
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute(ddl)
    with psycopg.connect(dev) as conn:
        conn.execute("insert into products (title) values ('A'), ('B'); insert into invoices (title) values ('I')")
    settings = write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["products", "invoices"]\n')
    answer = content_sync(settings, "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert sorted(m["sequence"] for m in answer.body["details"]["sequences"]) == ["public.legacy_seq", "public.products_id_seq"]
    assert any("products.sku (public.sku_seq)" in w for w in answer.body["warnings"]), answer.body["warnings"]
    assert _fingerprint(prod) == _fingerprint(dev)
    with psycopg.connect(prod) as conn:
        assert conn.execute("select last_value from products_id_seq").fetchone()[0] == 2
        assert conn.execute("select last_value, is_called from sku_seq").fetchone() == (1, False)


def test_writes_a_before_trigger_skipped_are_not_blamed_on_a_column(make_db, write_settings):
    """A prod BEFORE trigger returns NULL: the insert of 3 and the update of
    1 never happen. The refusal said "2 written row(s) differ from the
    source … column title differs … set ignore_columns = ["title"]" — a row
    that does not exist reported as differing, and advice that cannot help.
    Now the skipped writes are named as such, with the table's triggers."""
    dev, prod = make_db(), make_db()
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute("create table courses (id int primary key, title text)")
    with psycopg.connect(dev) as conn:
        conn.execute("insert into courses values (1, 'A'), (3, 'C')")
    with psycopg.connect(prod) as conn:
        conn.execute("insert into courses values (1, 'A old')")
        conn.execute("create function skip() returns trigger language plpgsql as $$ begin return null; end $$")
        conn.execute("create trigger guard before insert or update on courses for each row execute function skip()")
    before = _fingerprint(prod)
    settings = write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["courses"]\nacknowledge_side_channels = ["courses"]\n')
    answer = content_sync(settings, "sync", adopt=True)
    summary = answer.body["summary"]
    assert answer.status == 422, answer.body
    assert "courses (1 row(s) to write not in the target after the write, e.g. 3; 1 updated row(s) still as the target had them, e.g. 1)" in summary, summary
    assert "the target skipped writes (BEFORE INSERT/UPDATE row triggers on the table: guard; or a rule)" in summary, summary
    assert "ignore_columns" not in summary and "differ from the source" not in summary
    assert _fingerprint(prod) == before


def test_a_written_reference_into_a_protected_table_is_a_warning(make_db, write_settings):
    """dev's course author 3 is a tester; prod's user 3 is a customer. The
    dry-run said "would write 3 row(s); protection proof ok" and nothing
    more, and the sync would credit the customer with the course: a dev id
    naming another row in prod. Now every written row that points into a
    protected table where it did not before is named (an unchanged
    reference and a NULL are not)."""
    dev, prod = make_db(), make_db()
    ddl = "create table users (id int primary key, name text); create table courses (id int primary key, title text, author_id int references users(id));"
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute(ddl)
    with psycopg.connect(dev) as conn:
        conn.execute("insert into users values (3, 'Dev Tester'); insert into courses values (1, 'A', 3), (2, 'B', null), (5, 'E', 3)")
    with psycopg.connect(prod) as conn:
        conn.execute("insert into users values (3, 'A Customer'); insert into courses values (5, 'E old', 3)")
    settings = write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["courses"]\n')
    answer = content_sync(settings, "dry-run", adopt=True)
    assert answer.status == 200, answer.body
    assert answer.body["tables"]["references into protected tables"] == [
        {"table": "courses", "columns": "author_id", "references": "users", "constraint": "courses_author_id_fkey", "rows": 1, "keys": ["1"]}
    ]
    assert any(w.startswith("courses: 1 written row(s) point author_id at users rows they did not point at before (e.g. 1;") for w in answer.body["warnings"])
