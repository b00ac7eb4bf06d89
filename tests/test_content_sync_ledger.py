"""Content sync with a ledger: conflicts, key collisions, first-run adoption
and natural-key matching, on the LMS fixture (real PostgreSQL)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from safesync.functions.content_sync import content_sync
from safesync.shared import db
from tests.fixtures.lms import LMS_CONTENT, LMS_PROTECTED


def fingerprints(url: str, tables=None) -> dict:
    with psycopg.connect(url) as conn:
        prints = db.database_fingerprint(conn)
    return {k: v for k, v in prints.items() if tables is None or k.split(".")[1] in tables}


def entry(url: str, table: str, key: str):
    """(state, row hash, declined hash) of an integer-keyed row's entry."""
    from safesync.functions.content_sync.ledger import KEY_BITS

    with psycopg.connect(url) as conn:
        table_id = conn.execute(
            "select -1 - entry from safesync.content_ledger where entry < 0 and summary->>'table' = %s", [f"public.{table}"]
        ).fetchone()[0]
        row = conn.execute(
            "select kept, row_hash, declined_hash from safesync.content_ledger where entry = %s", [(table_id << KEY_BITS) | int(key)]
        ).fetchone()
    return None if row is None else ("kept" if row[0] else "synced", row[1], row[2])


def table_entries(conn, table: str) -> int:
    """Entries (synced or kept) the ledger holds for ``table``."""
    from safesync.functions.content_sync.ledger import KEY_BITS

    table_id = conn.execute("select -1 - entry from safesync.content_ledger where entry < 0 and summary->>'table' = %s", [f"public.{table}"]).fetchone()[0]
    return conn.execute(
        "select count(*) from safesync.content_ledger where entry between %s and %s", [table_id << KEY_BITS, ((table_id + 1) << KEY_BITS) - 1]
    ).fetchone()[0]


def one(url: str, query: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url) as conn:
        for statement in statements:
            conn.execute(statement)


def totals(body: dict) -> dict[str, dict]:
    return {row["table"]: row for row in body["tables"]["tables"]}


def synced_once(make) -> None:
    """The first sync: dev's edits adopted, the ledger seeded."""
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert set(answer.body["details"]["ledger"]) == set(LMS_CONTENT)  # every table seeded
    assert all(v["reseeded"] > 0 for v in answer.body["details"]["ledger"].values())


def test_first_run_seeds_equal_rows_and_needs_adopt_for_differing_ones(lms):
    make, dev, prod = lms
    before = fingerprints(prod)
    compare = content_sync(make(), "compare").body
    assert compare["status"] == "problems" and "--adopt" in compare["summary"]
    assert totals(compare)["lessons"]["unconfirmed"] == totals(compare)["lessons"]["changed"] > 0
    listed = {(r["table"], r["key"]) for r in compare["tables"]["unconfirmed (no ledger history)"]}
    assert ("lessons", "5") in listed  # lesson 5 was edited in dev (id % 5 = 0)
    refused = content_sync(make(), "sync")
    assert refused.status == 422 and "no ledger history" in refused.body["summary"] and "--adopt" in refused.body["summary"]
    assert fingerprints(prod) == before
    with psycopg.connect(prod) as conn:  # neither a refused sync nor a dry-run leaves a ledger behind
        assert content_sync(make(), "dry-run", adopt=True).status == 200
        assert conn.execute("select to_regclass('safesync.content_ledger')").fetchone()[0] is None

    synced_once(make)
    # equal rows were seeded from the target, written rows recorded with the source's hash
    with psycopg.connect(prod) as conn:
        assert table_entries(conn, "lessons") == conn.execute("select count(*) from lessons").fetchone()[0]
    again = content_sync(make(), "sync")
    assert again.status == 200 and "already in sync" in again.body["summary"]
    assert again.body["details"]["ledger"] == {}  # steady state: the summary check passed, nothing recorded


def test_conflict_refused_by_default_then_source_wins(lms):
    make, dev, prod = lms
    synced_once(make)
    execute(prod, "update lessons set title = 'Prod hotfix: typo', updated_at = '2024-09-01 10:00:00+00' where id = 3")
    execute(dev, "update lessons set body = 'Rewritten in dev', duration_minutes = 42 where id = 3")
    execute(dev, "update lessons set title = 'Dev only change' where id = 4")  # a plain change beside it
    before = fingerprints(prod)

    compare = content_sync(make(), "compare").body
    assert compare["status"] == "problems" and "conflict" in compare["summary"]
    conflict = compare["details"]["conflicts"]["lessons"][0]
    assert conflict["key"] == ["3"] and conflict["resolution"] == "fail"
    assert conflict["what"] == "source edited, target edited since the last sync"
    columns = conflict["columns"]  # both versions of every differing column
    assert columns["title"]["target"] == "Prod hotfix: typo" and columns["title"]["source"].startswith("Lesson 1.3")
    assert columns["body"]["source"] == "Rewritten in dev" and columns["duration_minutes"] == {"source": "42", "target": "8"}
    assert {r["column"] for r in compare["tables"]["conflicts"]} == {"title", "body", "duration_minutes", "updated_at"}

    refused = content_sync(make(), "sync")
    assert refused.status == 422 and "lessons: 1 conflict(s) on id 3" in refused.body["summary"]
    assert fingerprints(prod) == before
    ledger_before = entry(prod, "lessons", "3")

    answer = content_sync(make(tail='[content_sync.options.lessons]\non_conflict = "source"\n'), "sync")
    assert answer.status == 200, answer.body
    assert totals(answer.body)["lessons"]["written"] == 2 and totals(answer.body)["lessons"]["conflicts"] == 1
    assert one(prod, "select title, body from lessons where id = 3") == one(dev, "select title, body from lessons where id = 3")
    after = entry(prod, "lessons", "3")
    assert after[0] == "synced" and after[1] != ledger_before[1]
    assert fingerprints(prod, LMS_CONTENT) == fingerprints(dev, LMS_CONTENT)
    assert content_sync(make(), "sync").body["summary"].startswith("already in sync")


def test_target_wins_keeps_prod_row_until_a_side_moves(lms):
    make, dev, prod = lms
    synced_once(make)
    execute(prod, "update courses set title = 'Prod title' where id = 2")
    execute(dev, "update courses set title = 'Dev title' where id = 2")
    keep = make(tail='[content_sync.options.courses]\non_conflict = "target"\n')
    answer = content_sync(keep, "sync")
    assert answer.status == 200, answer.body
    assert one(prod, "select title from courses where id = 2") == ("Prod title",)
    state, kept_hash, declined = entry(prod, "courses", "2")
    assert state == "kept" and kept_hash is not None and declined is not None
    assert "1 row(s) kept as production has them" in answer.body["summary"]

    # neither side moved: no conflict, even with the default policy
    quiet = content_sync(make(), "sync")
    assert quiet.status == 200 and totals(quiet.body)["courses"].get("conflicts") is None
    assert quiet.body["details"]["ledger_status"]["courses"]["kept"] == 1
    # dev edits again: a new conflict (prod's row is not what dev's edit was based on)
    execute(dev, "update courses set title = 'Dev title v2' where id = 2")
    again = content_sync(make(), "sync")
    assert again.status == 422 and "courses: 1 conflict(s) on id 2" in again.body["summary"]
    assert again.body["details"]["conflicts"]["courses"][0]["what"] == "source edited, target unchanged since the last sync"


def test_prod_change_equal_to_dev_is_confirmed_not_a_conflict(lms):
    make, dev, prod = lms
    synced_once(make)
    for url in (prod, dev):  # the same edit on both sides (e.g. a data migration)
        execute(url, "update events set location = 'Wien' where id = 2")
    answer = content_sync(make(), "sync")
    assert answer.status == 200 and answer.body["details"]["ledger"]["events"]["reseeded"] > 0
    assert not answer.body["tables"].get("conflicts")
    # confirmed: a later dev edit of that row is a plain change, not a conflict
    execute(dev, "update events set capacity = 99 where id = 2")
    later = content_sync(make(), "sync")
    assert later.status == 200, later.body
    assert one(prod, "select capacity, location from events where id = 2") == (99, "Wien")


def test_prod_hotfix_and_dev_row_with_the_same_id_collide(lms):
    make, dev, prod = lms
    synced_once(make)
    execute(prod, "insert into lessons (id, course_id, position, title, updated_at) values (5001, 1, 9, 'Prod hotfix lesson', now())")
    execute(dev, "insert into lessons (id, course_id, position, title, updated_at) values (5001, 2, 1, 'New dev lesson', now())")
    before = fingerprints(prod)
    answer = content_sync(make(tail='[content_sync.options.lessons]\non_conflict = "source"\n'), "sync")  # no policy overwrites a collision
    assert answer.status == 422
    summary = answer.body["summary"]
    assert "key collision on id 5001" in summary and "re-key the row" in summary and "match_on" in summary
    row = answer.body["tables"]["key collisions"][0]
    assert row["key"] == "5001" and "title" in row["differing columns"] and "Prod hotfix lesson" in row["target"]
    assert fingerprints(prod) == before
    assert one(prod, "select title from lessons where id = 5001") == ("Prod hotfix lesson",)


def test_delete_missing_never_deletes_rows_born_in_prod(lms):
    make, dev, prod = lms
    synced_once(make)
    execute(prod, "insert into promotions (code, region, discount_percent) values ('PRODONLY', 'EU', 5)")
    execute(dev, "delete from promotions where code = 'PROMO2'")  # synced before: dev deleted it
    answer = content_sync(make(delete_missing=True), "sync")
    assert answer.status == 200, answer.body
    assert totals(answer.body)["promotions"]["deleted"] == 2
    assert answer.body["details"]["ledger_status"]["promotions"]["target_only"] == 1
    assert one(prod, "select count(*) from promotions where code = 'PRODONLY'") == (1,)
    assert one(prod, "select count(*) from promotions where code = 'PROMO2'") == (0,)


def _renumber_prod_courses(prod: str) -> None:
    """Prod's courses got other ids than dev's (ids differ between
    environments); everything that references them follows."""
    execute(
        prod,
        "set session_replication_role = replica",  # FK triggers off while ids move together
        "update courses set id = id + 100",
        "update lessons set course_id = course_id + 100",
        "update enrollments set course_id = course_id + 100",
        "update course_progress set course_id = course_id + 100",
        "select setval('courses_id_seq', 500)",
        "set session_replication_role = origin",
    )


MATCH_COURSES = '[content_sync.options.courses]\nmatch_on = ["slug"]\n'


def test_match_on_slug_syncs_across_different_ids(lms):
    make, dev, prod = lms
    _renumber_prod_courses(prod)
    with psycopg.connect(prod) as conn:
        ids_before = dict(conn.execute("select slug, id from courses").fetchall())
    users_before = fingerprints(prod, LMS_PROTECTED)
    settings = make(tail=MATCH_COURSES)

    compare = content_sync(settings, "compare").body
    rows = totals(compare)
    # matched by slug: only dev's real edits differ (ids are neither compared nor written)
    assert rows["courses"]["new"] == 1 and rows["courses"]["extra"] == 0 and rows["courses"]["changed"] == 3
    assert rows["lessons"]["changed"] > 0 and rows["lessons"]["new"] == 3  # lessons.course_id compared by course slug
    assert compare["details"]["matching"] == {"courses": {"match_on": ["slug"], "translated": []}, "lessons": {"match_on": [], "translated": ["course_id"]}}

    answer = content_sync(settings, "sync", adopt=True)
    assert answer.status == 200, answer.body
    with psycopg.connect(prod) as conn:
        after = dict(conn.execute("select slug, id from courses").fetchall())
        # existing rows keep prod's ids; the new course's id comes from prod's sequence, not dev's (6)
        assert {s: after[s] for s in ids_before} == ids_before
        assert after["new-course-1"] == 501
        # the new lessons point at prod's id of their course
        assert conn.execute("select array_agg(distinct course_id) from lessons where id > 40").fetchone()[0] == [501]
        # user tables untouched and their references still valid
        broken = conn.execute(
            "select count(*) from enrollments e left join courses c on c.id = e.course_id where c.id is null"
        ).fetchone()[0]
        assert broken == 0
    assert fingerprints(prod, LMS_PROTECTED) == users_before
    assert content_sync(settings, "compare").body["summary"].endswith("content tables identical")
    assert content_sync(settings, "sync").body["summary"].startswith("already in sync")

    # a later dev edit of a course: matched by slug, prod's id kept, no conflict
    execute(dev, "update courses set title = 'Renamed in dev' where slug = 'course-3'")
    later = content_sync(settings, "sync")
    assert later.status == 200, later.body
    assert one(prod, "select id, title from courses where slug = 'course-3'") == (103, "Renamed in dev")


def test_match_on_refuses_unmappable_references(lms):
    make, dev, prod = lms
    settings = make(tail=MATCH_COURSES + '[content_sync.options.lessons]\non_conflict = "source"\n')
    assert content_sync(settings, "sync", adopt=True).status == 200
    # prod removes the new course (and its lessons); dev edits one of those lessons
    execute(prod, "delete from resources where lesson_id > 40", "delete from lessons where id > 40", "delete from courses where slug = 'new-course-1'")
    execute(dev, "update lessons set title = 'Still here in dev' where id = 41")
    before = fingerprints(prod)
    keep_course = make(
        tail=MATCH_COURSES
        + 'on_conflict = "target"\n[content_sync.options.lessons]\non_conflict = "source"\n'
        + '[content_sync.options.resources]\non_conflict = "source"\n'
    )
    answer = content_sync(keep_course, "sync")
    assert answer.status == 422, answer.body
    assert "parents the target does not have" in answer.body["summary"]
    assert "lessons 41: course_id → courses (slug) = new-course-1" in answer.body["summary"]
    assert fingerprints(prod) == before


@pytest.mark.parametrize(
    "setup, options, message",
    [
        (None, 'match_on = ["title"]', "is not unique"),
        ("alter table courses alter column slug drop not null", 'match_on = ["slug"]', "must be NOT NULL"),
        (None, 'match_on = ["nope"]', "column 'nope' does not exist"),
        (None, 'match_on = ["slug"]\non_conflict = "sometimes"', "on_conflict"),
    ],
)
def test_match_on_config_errors(lms, setup, options, message):
    make, dev, prod = lms
    if setup:
        execute(prod, setup)
    before = fingerprints(prod)
    try:
        answer = content_sync(make(tail=f"[content_sync.options.courses]\n{options}\n"), "sync", adopt=True)
    except Exception as exc:  # invalid TOML values fail while loading the settings
        assert message in str(exc)
        return
    assert answer.status == 400 and message in answer.body["error"]
    assert fingerprints(prod) == before


def test_ledger_is_rolled_back_with_a_refused_sync(lms):
    make, dev, prod = lms
    synced_once(make)
    with psycopg.connect(prod) as conn:
        ledger_before = conn.execute("select * from safesync.content_ledger order by entry").fetchall()
        conn.execute(
            """
            create function award_points() returns trigger language plpgsql as $$
            begin
              insert into user_points_history (user_id, points, reason, lesson_id, created_at)
              select user_id, 1, 'lesson edited', new.id, now() from lesson_progress where lesson_id = new.id;
              return new;
            end $$;
            create trigger lessons_award after update on lessons for each row execute function award_points();
            """
        )
    execute(dev, "update lessons set title = 'edited' where id between 1 and 3")
    answer = content_sync(make(), "sync")
    assert answer.status == 422 and "user_points_history" in answer.body["summary"]
    with psycopg.connect(prod) as conn:
        assert conn.execute("select * from safesync.content_ledger order by entry").fetchall() == ledger_before


def test_a_trigger_that_rewrites_other_content_rows_is_caught(lms):
    make, dev, prod = lms
    synced_once(make)
    execute(
        prod,
        """
        create function touch_course() returns trigger language plpgsql as $$
        begin
          update courses set description = 'touched by a trigger' where id = new.course_id;
          return new;
        end $$;
        create trigger lessons_touch after update on lessons for each row execute function touch_course();
        """,
    )
    execute(dev, "update lessons set title = 'edited' where id = 9")
    before = fingerprints(prod)
    answer = content_sync(make(), "sync")
    assert answer.status == 422 and answer.permanent and "courses" in answer.body["summary"] and "trigger or cascade" in answer.body["summary"]
    assert fingerprints(prod) == before


def test_a_role_without_create_privilege_syncs_once_the_ledger_exists(lms, pg_server):
    """The ledger is created only when missing: afterwards the sync role
    needs no CREATE on the database nor on schema safesync."""
    make, dev, prod = lms
    synced_once(make)  # as the owner: the ledger exists now
    role = f"cs_ledger_{uuid.uuid4().hex[:8]}"
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    content = ", ".join(LMS_CONTENT)
    execute(
        prod,
        f"create role {role} login",
        f"grant connect on database {dbname} to {role}",
        f"grant pg_read_all_data to {role}",
        f"grant usage on schema public, safesync to {role}",
        f"grant insert, update on {content} to {role}",
        f"grant usage, select, update on all sequences in schema public to {role}",
        f"grant select, insert, update, delete on safesync.content_ledger to {role}",
    )
    try:
        with psycopg.connect(prod) as conn:
            can = conn.execute(
                "select has_database_privilege(%s, current_database(), 'CREATE'), has_schema_privilege(%s, 'safesync', 'CREATE')", [role, role]
            ).fetchone()
        assert can == (False, False)
        execute(dev, "update lessons set title = 'Edited after the first sync' where id = 12")
        limited = make(urls={"dev": dev, "prod": pg_server.url(dbname, user=role, password=None)})
        answer = content_sync(limited, "sync")
        assert answer.status == 200, answer.body
        assert one(prod, "select title from lessons where id = 12") == ("Edited after the first sync",)
        assert entry(prod, "lessons", "12")[0] == "synced"
    finally:
        execute(prod, f"drop owned by {role}")
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(f"drop role {role}")


FIRST_FORMAT = """
create table safesync.content_ledger_v1 (
    table_name    text not null,
    row_key       text[] not null,
    state         text not null check (state in ('synced', 'kept', 'summary')),
    row_hash      bigint,
    declined_hash bigint,
    rows          bigint,
    hash_sum      numeric,
    signature     text,
    updated_at    timestamptz not null default now(),
    primary key (table_name, row_key)
);
insert into safesync.content_ledger_v1 (table_name, row_key, state, rows, hash_sum, signature)
select summary->>'table', '{}', 'summary', (summary->>'rows')::bigint, (summary->>'hash_sum')::numeric, summary->>'signature'
from safesync.content_ledger where entry between -512 and -1;  -- summaries (the first release had no run records)
insert into safesync.content_ledger_v1 (table_name, row_key, state, row_hash, declined_hash)
select s.summary->>'table', array[(l.entry & ((1::bigint << 54) - 1))::text], case when l.kept then 'kept' else 'synced' end, l.row_hash, l.declined_hash
from safesync.content_ledger as l join safesync.content_ledger as s on s.entry = -1 - (l.entry >> 54) where l.entry >= 0;
drop table safesync.content_ledger;
alter table safesync.content_ledger_v1 rename to content_ledger;
"""


def test_a_ledger_of_the_first_format_is_read_then_migrated_in_place_keeping_its_history(lms):
    """A ledger written by the first release (keys as text[], a row per
    entry with state and timestamp): compare reads it, and the next sync
    migrates it inside its own transaction — the same table, every entry
    and summary kept, so a production edit made before the migration is
    still a conflict."""
    make, dev, prod = lms
    synced_once(make)
    execute(prod, "update courses set title = 'Prod keeps this' where id = 2")
    execute(dev, "update courses set title = 'Dev wanted this' where id = 2")
    kept = make(tail='[content_sync.options.courses]\non_conflict = "target"\n')
    assert content_sync(kept, "sync").status == 200  # a kept entry in the ledger
    execute(prod, FIRST_FORMAT)
    with psycopg.connect(prod) as conn:
        oid = conn.execute("select 'safesync.content_ledger'::regclass::oid").fetchone()[0]
        first_rows = conn.execute("select count(*) from safesync.content_ledger").fetchone()[0]
    compare = content_sync(kept, "compare").body
    assert compare["status"] == "ok" and all(v["status"] == "ok" and v["current"] for v in compare["details"]["ledger_status"].values())
    execute(prod, "update lessons set title = 'Prod hotfix' where id = 3")  # edited in prod before the migration
    execute(dev, "update lessons set body = 'Dev edit' where id = 3", "update lessons set title = 'Dev edit' where id = 4")
    refused = content_sync(kept, "sync")  # the conflict on lesson 3 is seen: history survived (rolled back, still first format)
    assert refused.status == 422 and "conflict" in refused.body["summary"] and "3" in refused.body["summary"]
    with psycopg.connect(prod) as conn:
        assert conn.execute("select count(*) from safesync.content_ledger where row_key is not null").fetchone()[0] == first_rows
    answer = content_sync(make(tail='[content_sync.options.courses]\non_conflict = "target"\n[content_sync.options.lessons]\non_conflict = "target"\n'), "sync")
    assert answer.status == 200, answer.body
    assert answer.body["details"]["ledger"] and not any(v["reseeded"] for v in answer.body["details"]["ledger"].values())
    with psycopg.connect(prod) as conn:
        assert conn.execute("select 'safesync.content_ledger'::regclass::oid").fetchone()[0] == oid
        columns = [r[0] for r in conn.execute(
            "select attname from pg_attribute where attrelid = 'safesync.content_ledger'::regclass and attnum > 0 and not attisdropped order by attnum"
        )]
        assert columns == ["row_hash", "declined_hash", "entry", "kept", "summary"]
        assert table_entries(conn, "lessons") == conn.execute("select count(*) from lessons").fetchone()[0]
    assert entry(prod, "courses", "2")[0] == "kept" and entry(prod, "lessons", "3")[0] == "kept" and entry(prod, "lessons", "4")[0] == "synced"
    again = content_sync(kept, "sync").body
    assert "already in sync" in again["summary"] and again["details"]["ledger"] == {}


def test_keys_sharing_an_entry_cost_a_reseed_never_a_silent_overwrite(lms, monkeypatch):
    """With 4-bit key values nearly every key shares its entry with others
    (with 54 bits, about one table in 36,000 at a million hashed keys): the
    seed keeps one entry per value, the summary never matches so every sync
    re-seeds, and a row judged against another's ancestor is a (needless)
    conflict — never a production edit overwritten."""
    from safesync.functions.content_sync import ledger as ledgermod

    monkeypatch.setattr(ledgermod, "KEY_BITS", 4)
    monkeypatch.setattr(ledgermod, "MASK", 15)
    make, dev, prod = lms
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 200, answer.body
    with psycopg.connect(prod) as conn:
        assert table_entries(conn, "lessons") <= 16 < conn.execute("select count(*) from lessons").fetchone()[0]
    execute(prod, "update lessons set title = 'Prod hotfix' where id = 21")
    execute(dev, "update lessons set body = 'Dev edit' where id = 21", "update lessons set title = 'Dev edit' where id = 20")
    before = fingerprints(prod)
    refused = content_sync(make(), "sync")
    assert refused.status == 422 and "conflict" in refused.body["summary"] and "21" in refused.body["summary"]
    assert fingerprints(prod) == before
    source_wins = make(tail='[content_sync.options.lessons]\non_conflict = "source"\n')
    again = content_sync(source_wins, "sync")
    assert again.status == 200, again.body["summary"]
    assert again.body["details"]["ledger"]["lessons"]["reseeded"] > 0
    assert one(prod, "select title from lessons where id = 20") == ("Dev edit",)


def test_a_production_delete_committed_during_the_sync_is_never_resurrected(make_db, write_settings, monkeypatch):
    """Rows deleted in production after the sync's snapshot but before its
    upsert: ON CONFLICT found no live row, so the INSERT brought all 100
    back with dev's content and the run said "synced 100 row(s); protection
    proof ok" — a production delete silently overwritten. The rows are now
    locked first, and the run fails as a concurrent change, rolled back."""
    from safesync.functions.content_sync import apply, content_sync

    dev, prod = make_db(), make_db()
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            conn.execute("create table t (id int primary key, v text); insert into t select g, 'a' from generate_series(1, 200) g")
    settings = write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["t"]\npresync_backup = "none"\n')
    assert content_sync(settings, "sync", adopt=True).status == 200  # seeds the ledger
    with psycopg.connect(dev) as conn:
        conn.execute("update t set v = 'dev' where id <= 100")
    upsert = apply.upsert

    def racing(tgt, spec, temp, keys):
        with psycopg.connect(prod, autocommit=True) as other:  # the application, committing mid-sync
            other.execute("delete from t where id <= 100")
        return upsert(tgt, spec, temp, keys)

    monkeypatch.setattr(apply, "upsert", racing)
    answer = content_sync(settings, "sync")
    assert answer.status == 503, answer.body
    assert "could not serialize access" in answer.body["error"]
    with psycopg.connect(prod) as conn:
        assert conn.execute("select count(*), count(*) filter (where v = 'dev') from t").fetchone() == (100, 0)
