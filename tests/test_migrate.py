"""Safe migrations on real PostgreSQL: rehearse on a clone, refuse stale
rehearsals, back up, apply, validate, roll back — and prove the target ends
exactly as before (schema diff + data fingerprints) whenever it fails."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time

import psycopg
import pytest

from safesync.functions import migrate
from safesync.functions.backup import list_backups
from safesync.functions.validate import compare
from safesync.shared.db import connect, database_fingerprint
from tests import sentinels

SCHEMA = """
create table users (id serial primary key, email text not null unique, name text);
create table posts (id serial primary key, user_id int not null references users on delete cascade, title text not null);
insert into users (email, name) select 'u' || g || '@example.test', 'user ' || g from generate_series(1, 40) g;
insert into posts (user_id, title) select 1 + g % 40, 'post ' || g from generate_series(1, 120) g;
"""

GOOD = {
    "0001_add_bio.sql": "alter table users add column bio text;\nupdate users set bio = 'hello' where id <= 5;\n",
    "0002_comments.sql": textwrap.dedent(
        """
        -- comments on posts
        create table comments (id serial primary key, post_id int not null references posts on delete cascade, body text not null);
        create index comments_post on comments (post_id);
        insert into comments (post_id, body) select id, 'first!' from posts where id <= 10;
        """
    ),
}

RULE = """
[[migrate.rules]]
name = "every user has a name"
sql = "select id from users where name is null"
"""


def _name(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


@pytest.fixture
def dbs(make_db, pg_server):
    prod = make_db()
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return {"prod": prod, "scratch": make_db()}


@pytest.fixture
def setup(write_settings, dbs, tmp_path):
    """Settings factory: migration files + extra [migrate] keys."""
    (tmp_path / "migrations").mkdir()

    def factory(files: dict[str, str] | None = None, migrate_extra: str = "", extra: str = ""):
        for name, text in (files or {}).items():
            (tmp_path / "migrations" / name).write_text(text)
        source = migrate_extra if "command" in migrate_extra else 'sql_dir = "migrations"\n' + migrate_extra
        return write_settings(
            dbs,
            f'[backup]\ndatabases = ["prod"]\n\n[migrate]\ndatabase = "prod"\nrehearse_on = "scratch"\n{source}\n{extra}',
        )

    return factory


@pytest.fixture
def before(dbs, pg_server):
    """A byte-exact copy of prod made now (template clone), to diff against later."""
    copy = pg_server.create_database(template=_name(dbs["prod"]))
    yield copy
    pg_server.drop_database(_name(copy))


def assert_same(prod: str, copy: str) -> None:
    """Schema diff empty and every table's fingerprint equal (the
    bookkeeping schema included: no record of a rolled-back file)."""
    with connect(prod) as a, connect(copy) as b:
        comparison = compare(a, b, ["public"])
        assert comparison.schema.identical, comparison.schema.rows("prod", "before")
        assert database_fingerprint(a) == database_fingerprint(b)
        assert _records(a) == _records(b)


def _records(conn) -> list:
    if not conn.execute("select to_regclass('safesync.migrations')").fetchone()[0]:
        return []
    return conn.execute("select name, checksum from safesync.migrations order by name").fetchall()


def _fingerprint(url: str) -> dict:
    with connect(url) as conn:
        return database_fingerprint(conn)


def test_good_migration_rehearsed_applied_then_no_op(setup, dbs):
    settings = setup(GOOD, extra=RULE)
    untouched = _fingerprint(dbs["prod"])

    planned = migrate.plan(settings)
    assert planned.exit_code == 0
    assert [r["file"] for r in planned.body["tables"]["plan"]] == ["0001_add_bio.sql", "0002_comments.sql"]

    refused = migrate.apply(settings)
    assert refused.status == 422 and refused.exit_code == 1
    assert "no passing rehearsal" in refused.body["summary"]
    assert not list_backups(settings, "prod")  # refused before the backup

    rehearsal = migrate.rehearse(settings)
    assert rehearsal.exit_code == 0, rehearsal.body["summary"]
    body = rehearsal.body
    assert body["details"]["passed"] is True
    diff = {(r["kind"], r["object"], r["change"]) for r in body["tables"]["schema differences"]}
    assert ("columns", "public.users.bio", "only in rehearsal") in diff
    assert ("tables", "public.comments", "only in rehearsal") in diff
    assert ("indexes", "public.comments_post", "only in rehearsal") in diff
    data = {r["table"]: r for r in body["tables"]["data differences"]}
    assert "public.comments" in data
    assert body["timings"]["migration_s"] >= 0 and body["timings"]["clone_s"] > 0
    assert _fingerprint(dbs["prod"]) == untouched  # rehearsal never touches the target

    applied = migrate.apply(settings)
    assert applied.exit_code == 0, applied.body["summary"]
    assert applied.body["details"]["rehearsal"]["run_id"] == rehearsal.body["run_id"]
    backup = applied.body["details"]["backup"]["id"]
    assert [b.id for b in list_backups(settings, "prod")] == [backup]
    assert [s["status"] for s in applied.body["tables"]["steps"]] == ["applied", "applied"]
    with connect(dbs["prod"]) as conn:
        assert conn.execute("select count(*) from comments").fetchone()[0] == 10
        assert conn.execute("select count(*) from users where bio = 'hello'").fetchone()[0] == 5
        assert [r[0] for r in _records(conn)] == ["0001_add_bio.sql", "0002_comments.sql"]
    after = _fingerprint(dbs["prod"])

    again = migrate.apply(settings)
    assert again.exit_code == 0 and "nothing to apply" in again.body["summary"]
    assert _fingerprint(dbs["prod"]) == after
    assert len(list_backups(settings, "prod")) == 1  # a no-op takes no backup

    # an applied file edited afterwards: refused, nothing runs
    (settings.base_dir / "migrations" / "0001_add_bio.sql").write_text("alter table users add column bio2 text;\n")
    changed = migrate.plan(settings)
    assert changed.status == 422 and "0001_add_bio.sql" in changed.body["error"]


BAD_THREE = {
    "0001_tags.sql": "create table tags (id int primary key, label text);\ninsert into tags values (1, 'a'), (2, 'b');\nupdate users set name = upper(name);\n",
    "0002_broken.sql": "alter table posts add column score int;\n\nupdate posts set score = nosuchcolumn;\n",
    "0003_more.sql": "alter table tags add column color text;\n",
}


def test_failing_second_of_three_leaves_target_exactly_as_before(setup, dbs, before):
    settings = setup(BAD_THREE)

    rehearsal = migrate.rehearse(settings)
    assert rehearsal.exit_code == 1 and rehearsal.body["status"] == "problems"
    assert rehearsal.body["details"]["failed_file"] == "0002_broken.sql"
    assert_same(dbs["prod"], before)

    answer = migrate.apply(settings, skip_rehearsal=True)
    body = answer.body
    assert answer.exit_code == 1 and body["status"] == "failed"
    assert body["details"]["rehearsal"] == {"skipped": True}
    assert any("rehearsal skipped" in w for w in body["warnings"])
    assert body["details"]["failed_file"] == "0002_broken.sql"
    assert "0002_broken.sql line 3" in body["details"]["error"] and "nosuchcolumn" in body["details"]["error"]
    assert [s["status"] for s in body["tables"]["steps"]] == ["applied", "failed (rolled back)", "not run"]
    backup = body["details"]["backup"]["id"]
    assert backup in body["summary"] and "premigrate" in backup
    rollback = body["details"]["rollback"]
    assert rollback["backup"] == backup and not rollback["objects_left_over"] and not rollback["objects_missing"]
    assert "table public.tags" in rollback["objects_dropped_first"]
    assert_same(dbs["prod"], before)


@pytest.mark.parametrize("single", [True, False], ids=["single-transaction", "per-file"])
def test_migration_breaking_a_validation_rule_is_rolled_back(setup, dbs, before, single):
    files = {
        "0001_ok.sql": "create table badges (id int primary key);\n",
        "0002_wipe_names.sql": "update users set name = null where id % 7 = 0;\n",
    }
    settings = setup(files, migrate_extra=f"single_transaction = {str(single).lower()}\n", extra=RULE)
    answer = migrate.apply(settings, skip_rehearsal=True)
    body = answer.body
    assert answer.exit_code == 1 and body["status"] == "failed"
    assert [f["object"] for f in body["tables"]["validation failures"]] == ["every user has a name"]
    method = body["details"]["rollback"]["method"]
    assert method.startswith("ROLLBACK") if single else method.startswith("restore")
    assert_same(dbs["prod"], before)


COMMAND_SCRIPT = """
import os, sys
import psycopg

url = os.environ["DATABASE_URL"]
print("connecting to", url)
print("others visible:", sorted(k for k in os.environ if k.endswith("_DATABASE_URL") or k.startswith("SAFESYNC_")))
with psycopg.connect(url, autocommit=True) as conn:
    print("timeouts:", conn.execute("show lock_timeout").fetchone()[0], conn.execute("show statement_timeout").fetchone()[0])
    conn.execute("create type mood as enum ('ok', 'meh')")
    conn.execute("alter table users add column mood mood")
    conn.execute("update users set name = 'changed', mood = 'meh'")
    conn.execute("create table orders (id serial primary key, user_id int references users)")
    conn.execute("insert into orders (user_id) select id from users")
    conn.execute("alter table posts rename to articles")
    conn.execute("create view user_orders as select u.email, o.id from users u join orders o on o.user_id = u.id")
    conn.execute("create function answer() returns int language sql as 'select 42'")
    conn.execute("delete from articles where id > 100")
print("now failing on purpose", file=sys.stderr)
sys.exit(3)
"""


OUTSIDE_THE_DUMP = """
create collation ci from "C";
create text search dictionary my_dict (template = simple);
create text search configuration my_fts (copy = pg_catalog.english);
create operator ~~~ (leftarg = int, rightarg = int, function = int4pl);
create publication pub_all for all tables;
create function evt() returns event_trigger language plpgsql as $$ begin end $$;
create event trigger my_evt on ddl_command_end execute function evt();
create table audit (id int);
"""


def test_a_restore_also_undoes_what_pg_restore_clean_never_drops(setup, dbs, before):
    """Collations, text search objects, operators (over an existing
    function), publications and event triggers are not in the premigrate
    dump, so ``pg_restore --clean`` leaves them: the rollback drops them
    first, and its object check knows them (no "exactly as before" while a
    migration's collation is still there, making its re-run fail)."""
    settings = setup({"0001_objects.sql": OUTSIDE_THE_DUMP, "0002_fail.sql": "select 1/0;\n"})
    body = migrate.apply(settings, skip_rehearsal=True).body
    assert body["status"] == "failed" and "restoring premigrate backup" in body["summary"]
    dropped = set(body["details"]["rollback"]["objects_dropped_first"])
    assert {"collation public.ci", "text search configuration public.my_fts", "text search dictionary public.my_dict",
            "operator public.~~~(integer, integer)", "publication pub_all", "event trigger my_evt"} <= dropped  # fmt: skip
    with connect(dbs["prod"]) as conn:
        left = conn.execute(
            "select (select count(*) from pg_collation where collname = 'ci') + (select count(*) from pg_ts_dict where dictname = 'my_dict')"
            " + (select count(*) from pg_ts_config where cfgname = 'my_fts') + (select count(*) from pg_operator where oprname = '~~~')"
            " + (select count(*) from pg_publication) + (select count(*) from pg_event_trigger)"
        ).fetchone()[0]
    assert left == 0
    assert_same(dbs["prod"], before)


def test_a_restore_that_leaves_grants_and_default_privileges_is_not_called_exact(setup, dbs):
    """``pg_restore --clean`` recreates the dumped tables but leaves a grant on
    schema public, default privileges (which the recreated tables then get)
    and a schema's comment as the migration made them: the rollback must
    say the target differs from before, not that it was rolled back."""
    files = {
        "0001_grants.sql": "grant create on schema public to public;\nalter default privileges grant select on tables to public;\n"
        "comment on schema public is 'changed';\n",
        "0002_fail.sql": "select 1/0;\n",
    }
    body = migrate.apply(setup(files), skip_rehearsal=True).body
    assert body["status"] == "failed" and "objects differ from before" in body["summary"]
    differing = body["details"]["rollback"]["definitions_differing"]
    assert "schemas public: grants differs" in differing and "comments schema public: value differs" in differing
    assert "tables public.users: grants differs" in differing  # the default privileges reached the restored table
    assert any(d.startswith("default_privileges") for d in differing)


def test_a_rollback_stopped_by_the_database_says_the_target_is_half_migrated(setup, dbs):
    """The application holds a lock on the table the first file created while
    the second fails: dropping it before the restore times out. The report
    must say the restore failed and how to restore — not only the lock error."""
    files = {"0001_new.sql": "create table newt (id int primary key);\n", "0002_fail.sql": "select pg_sleep(1.5);\nselect 1/0;\n"}
    settings = setup(files, migrate_extra='lock_timeout = "1s"\n')
    stop = threading.Event()

    def application() -> None:
        with psycopg.connect(dbs["prod"]) as conn:
            while not stop.is_set():
                if conn.execute("select to_regclass('public.newt')").fetchone()[0]:
                    conn.execute("select * from newt")  # held, in an open transaction
                    stop.wait(30)
                    return
                conn.rollback()
                time.sleep(0.05)

    holder = threading.Thread(target=application)
    holder.start()
    try:
        answer = migrate.apply(settings, skip_rehearsal=True)
    finally:
        stop.set()
        holder.join()
    body = answer.body.get("report", answer.body)
    assert answer.exit_code == 1 and body["status"] == "failed"
    backup = body["details"]["backup"]["id"]
    assert "automatic restore FAILED" in body["summary"] and "lock timeout" in body["summary"]
    assert "0002_fail.sql" in body["summary"] and f"safesync backup restore {backup} --to prod --confirm prod" in body["summary"]
    assert "lock timeout" in body["details"]["rollback"]["error"]


def test_command_migration_failing_after_changes_is_restored_from_backup(setup, dbs, before, tmp_path):
    script = tmp_path / "migrate_script.py"
    script.write_text(COMMAND_SCRIPT)
    settings = setup(migrate_extra=f'command = "{sys.executable} {script}"\nlock_timeout = "3s"\n')

    planned = migrate.plan(settings)
    assert planned.body["details"]["plan"]["kind"] == "command"

    answer = migrate.apply(settings, skip_rehearsal=True)
    body = answer.body
    assert answer.exit_code == 1 and body["status"] == "failed", body["summary"]
    assert "exited with code 3" in body["summary"]
    command = body["details"]["command"]
    assert command["exit_code"] == 3
    output = command["output_tail"]
    assert "now failing on purpose" in output and "timeouts: 3s 15min" in output
    assert "others visible: []" in output  # no other database URL, no safesync secret
    assert sentinels.DB_PASSWORD not in json.dumps(body)
    rollback = body["details"]["rollback"]
    assert rollback["method"] == "restore from the premigrate backup"
    assert {"table public.orders", "view public.user_orders", "table public.articles", "type public.mood", "function public.answer()"} <= set(
        rollback["objects_dropped_first"]
    )
    assert not rollback["objects_left_over"] and not rollback["objects_missing"]
    assert_same(dbs["prod"], before)


def test_command_rehearsal_runs_on_the_clone_only(setup, dbs, tmp_path):
    script = tmp_path / "ok_script.py"
    script.write_text(
        "import os, psycopg\n"
        "with psycopg.connect(os.environ['DATABASE_URL'], autocommit=True) as c:\n"
        "    c.execute('alter table users add column plan text')\n"
    )
    settings = setup(migrate_extra=f'command = "{sys.executable} {script}"\n')
    untouched = _fingerprint(dbs["prod"])
    rehearsal = migrate.rehearse(settings)
    assert rehearsal.exit_code == 0, rehearsal.body["summary"]
    diff = {(r["kind"], r["object"]) for r in rehearsal.body["tables"]["schema differences"]}
    assert ("columns", "public.users.plan") in diff
    assert _fingerprint(dbs["prod"]) == untouched
    applied = migrate.apply(settings)
    assert applied.exit_code == 0, applied.body["summary"]
    with connect(dbs["prod"]) as conn:
        assert conn.execute("select count(*) from information_schema.columns where column_name = 'plan'").fetchone()[0] == 1


def test_stale_or_different_rehearsal_is_refused(setup, dbs):
    settings = setup({"0001_a.sql": "create table a (id int primary key);\n"})
    assert migrate.rehearse(settings).exit_code == 0
    # the plan changes after the rehearsal: that rehearsal does not count
    (settings.base_dir / "migrations" / "0002_b.sql").write_text("create table b (id int primary key);\n")
    refused = migrate.apply(settings)
    assert refused.status == 422 and "no passing rehearsal" in refused.body["summary"]
    os.remove(settings.base_dir / "migrations" / "0002_b.sql")
    # the same plan, but the rehearsal is older than rehearsal_max_age_minutes
    # (run names sort by second: the rehearsal and the refused apply may share one)
    runs = (settings.base_dir / "backups" / "runs" / "migrate").glob("*.json")
    rehearsal = next(p for p in runs if json.loads(p.read_text())["action"] == "rehearse")
    stored = json.loads(rehearsal.read_text())
    assert stored["status"] == "ok"
    stored["finished_at"] = "2020-01-01T00:00:00+00:00"
    rehearsal.write_text(json.dumps(stored))
    stale = migrate.apply(settings)
    assert stale.status == 422
    with connect(dbs["prod"]) as conn:
        assert conn.execute("select to_regclass('public.a')").fetchone()[0] is None


def test_a_rehearsal_of_another_database_under_the_same_name_is_refused(setup, write_settings, dbs, before):
    """A rehearsal proves the plan on a clone of *that* database: when the
    name "prod" points elsewhere at apply time (another CI environment's URL,
    here a copy with the same applied files, so the same plan) it does not count."""
    settings = setup({"0001_a.sql": "create table a (id int primary key);\n"})
    assert migrate.rehearse(settings).exit_code == 0
    elsewhere = write_settings(
        {"prod": before, "scratch": dbs["scratch"]},
        '[backup]\ndatabases = ["prod"]\n[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n',
    )
    assert migrate.plan(elsewhere).body["details"]["plan"]["plan_digest"] == migrate.plan(settings).body["details"]["plan"]["plan_digest"]
    refused = migrate.apply(elsewhere)
    assert refused.status == 422 and "no passing rehearsal" in refused.body["summary"]
    with connect(before) as conn:
        assert conn.execute("select to_regclass('public.a')").fetchone()[0] is None
    settings = setup()  # "prod" is the rehearsed database again
    applied = migrate.apply(settings)
    assert applied.exit_code == 0, applied.body["summary"]


def test_scratch_guards(setup, write_settings, dbs):
    settings = write_settings(
        {**dbs, "other": dbs["prod"]},
        '[backup]\ndatabases = ["prod"]\n[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "other"\n',
    )
    (settings.base_dir / "migrations").mkdir(exist_ok=True)
    (settings.base_dir / "migrations" / "0001.sql").write_text("select 1;\n")
    same = migrate.rehearse(settings)
    assert same.status == 422 and "same database" in same.body["error"]
    protected = write_settings(
        dbs, '[backup]\ndatabases = ["prod", "scratch"]\n[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n'
    )
    answer = migrate.rehearse(protected)
    assert answer.status == 422 and "protected" in answer.body["error"]


def test_transaction_control_in_a_file_is_refused(setup):
    settings = setup({"0001_tx.sql": "BEGIN;\ncreate table t (id int);\nCOMMIT;\n"})
    answer = migrate.plan(settings)
    assert answer.status == 422
    assert "0001_tx.sql (line 1: BEGIN, line 3: COMMIT)" in answer.body["error"]


# A COMMIT hidden from a scan that reads strings one way: with
# standard_conforming_strings = off (the database's default here, or SET by
# the file) the server reads '\'' as one quote and then runs the COMMIT; read
# as with it on, a string runs to the comment. Then a failure.
HIDDEN_COMMIT = {
    "0001_early.sql": "create table early (id int);\n",
    "0002_hidden_commit.sql": "create table kept (id int);\nselect '\\''; commit; begin; select 1/0; --';\n",
}


@pytest.mark.parametrize("where", ["database", "role"])
def test_a_commit_hidden_by_backslash_quoting_is_refused_by_the_plan(setup, dbs, before, where):
    """The plan read plain strings only as with standard_conforming_strings
    on: the file above passed it and committed half a migration (the run's
    backstop below then had to restore the premigrate backup). Read both
    ways, the plan refuses it and nothing runs."""
    database = f'database "{_name(dbs["prod"])}"'
    target = database if where == "database" else f"role current_user in {database}"  # never the shared role everywhere
    with psycopg.connect(dbs["prod"], autocommit=True) as conn:
        conn.execute(f"alter {target} set standard_conforming_strings = off")
    try:
        settings = setup(HIDDEN_COMMIT)
        with psycopg.connect(dbs["prod"], autocommit=True) as conn:  # the server does read a COMMIT there
            conn.execute("begin")
            conn.execute("select '\\''; commit; begin; select 1; --';")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # the file's own BEGIN: ours was committed
            conn.execute("rollback")
        for answer in (migrate.plan(settings), migrate.apply(settings, skip_rehearsal=True)):
            assert answer.status == 422, answer.body
            assert "0002_hidden_commit.sql (line 2: COMMIT, line 2: BEGIN)" in answer.body["error"], answer.body["error"]
        assert_same(dbs["prod"], before)
    finally:
        with psycopg.connect(dbs["prod"], autocommit=True) as conn:
            conn.execute(f"alter {target} reset standard_conforming_strings")


@pytest.mark.parametrize("single", [True, False], ids=["single-transaction", "per-file"])
def test_a_file_that_commits_itself_is_never_reported_as_unchanged(setup, dbs, before, single, monkeypatch):
    """The run's backstop, should a scan ever miss a COMMIT (none known:
    the scan is made to miss this one)."""
    from safesync.functions.migrate import sqlfiles

    monkeypatch.setattr(sqlfiles, "transaction_control", lambda text: [])
    settings = setup(HIDDEN_COMMIT, migrate_extra=f"single_transaction = {str(single).lower()}\n")
    with psycopg.connect(dbs["prod"], autocommit=True) as conn:
        conn.execute(f'alter database "{_name(dbs["prod"])}" set standard_conforming_strings = off')
    assert migrate.plan(settings).exit_code == 0  # the scan does not see it: the run must
    answer = migrate.apply(settings, skip_rehearsal=True)
    body = answer.body
    assert answer.exit_code == 1 and body["status"] == "failed"
    assert "unchanged" not in body["summary"] and "restoring premigrate backup" in body["summary"]
    assert body["details"]["rollback"]["method"].startswith("restore")
    steps = {s["file"]: s["status"] for s in body["tables"]["steps"]}
    assert "partly committed" in steps["0002_hidden_commit.sql"]
    assert_same(dbs["prod"], before)


# What a file sets for its session (not SET LOCAL) and its temporary tables
# must not reach the next file, nor safesync's own record and validation: the
# next file would run without triggers and foreign keys (replica), as another
# role, on another schema's tables — only because the two were applied together.
LEAKY = (
    "set search_path = shadow, public;\nset session_replication_role = replica;\nset statement_timeout = 0;\n"
    "select set_config('lock_timeout', '0', false);\nset role pg_read_all_data;\n"
)
SEES = {
    "0001_leaky.sql": "create schema shadow;\ncreate temp table users (id int, name text);\n" + LEAKY,
    "0002_sees.sql": (
        "create table public.seen as select 1 as id, current_setting('search_path') as search_path,"
        " current_setting('session_replication_role') as replication_role, current_setting('statement_timeout') as statement_timeout,"
        " current_setting('lock_timeout') as lock_timeout, current_user::text as role, (select count(*) from users) as users;\n"
        "alter table public.seen add primary key (id);\n"
    ),
}


@pytest.mark.parametrize("single", [True, False], ids=["single-transaction", "per-file"])
def test_a_files_session_settings_do_not_reach_the_next_file(setup, dbs, single):
    settings = setup(SEES, migrate_extra=f'single_transaction = {str(single).lower()}\nlock_timeout = "4s"\nstatement_timeout = "7s"\n')
    answer = migrate.apply(settings, skip_rehearsal=True)
    assert answer.exit_code == 0, (answer.body["summary"], answer.body["tables"].get("validation failures"))
    with connect(dbs["prod"]) as conn:
        seen = conn.execute("select search_path, replication_role, statement_timeout, lock_timeout, role, users from seen").fetchone()
        owner = conn.execute("select session_user::text").fetchone()[0]
        assert [r[0] for r in conn.execute("select applied_at is not null from safesync.migrations")] == [True, True]
    assert seen == ('"$user", public', "origin", "7s", "4s", owner, 40)


@pytest.mark.parametrize("single", [True, False], ids=["single-transaction", "per-file"])
def test_validation_after_a_file_is_not_run_under_its_session_settings(setup, dbs, before, single):
    files = {"0001_wipe_names.sql": "update users set name = null where id % 7 = 0;\ncreate schema shadow;\n"
             "create table shadow.users (id int, name text);\n" + LEAKY}
    settings = setup(files, migrate_extra=f"single_transaction = {str(single).lower()}\n", extra=RULE)
    answer = migrate.apply(settings, skip_rehearsal=True)
    assert answer.exit_code == 1 and answer.body["status"] == "failed", answer.body["summary"]
    assert [f["object"] for f in answer.body["tables"]["validation failures"]] == ["every user has a name"]
    assert_same(dbs["prod"], before)


def test_an_applied_file_under_a_new_name_is_refused_not_run_again(setup, dbs, tmp_path):
    """Renumbering files after a merge (0002_raise → 0003_raise) made the
    applied file look new: the plan only warned that 0002 was gone and ran
    its text a second time (every price raised twice); so did a copy."""
    files = {"0001_prices.sql": "create table prices (id int primary key, cents int);\ninsert into prices values (1, 100);\n",
             "0002_raise.sql": "update prices set cents = cents * 2;\n"}
    settings = setup(files)
    assert migrate.apply(settings, skip_rehearsal=True).exit_code == 0
    folder = tmp_path / "migrations"
    (folder / "0002_raise.sql").rename(folder / "0003_raise.sql")
    answer = migrate.plan(settings)
    assert answer.status == 422, answer.body
    assert "0003_raise.sql = applied 0002_raise.sql (no longer in the folder)" in answer.body["error"], answer.body
    assert migrate.apply(settings, skip_rehearsal=True).exit_code == 1
    with connect(dbs["prod"]) as conn:
        assert conn.execute("select cents from prices").fetchone()[0] == 200
    (folder / "0003_raise.sql").rename(folder / "0002_raise.sql")
    (folder / "0002_raise copy.sql").write_text(files["0002_raise.sql"])  # a file manager's "duplicate"
    (folder / "0004_raise.sql").write_text(files["0002_raise.sql"])
    error = migrate.plan(settings).body["error"]
    assert "0002_raise copy.sql = applied 0002_raise.sql;" in error and "0004_raise.sql = applied 0002_raise.sql" in error, error
    (folder / "0002_raise copy.sql").unlink()
    (folder / "0004_raise.sql").write_text("-- again, on purpose\nupdate prices set cents = cents * 2;\n")  # new text: a new migration
    assert migrate.plan(settings).exit_code == 0


def test_a_file_rolling_back_to_an_earlier_files_savepoint_is_a_failure(setup, dbs, before):
    """In one transaction, 0002's ROLLBACK TO SAVEPOINT s1 undid the end of
    0001 and its record row: the run said both applied, 0001's table b was
    missing and 0001 was pending again (its re-run then failed on table a)."""
    files = {"0001_ab.sql": "create table a (id int primary key);\nsavepoint s1;\ncreate table b (id int primary key);\n",
             "0002_c.sql": "rollback to savepoint s1;\ncreate table c (id int primary key);\n"}
    settings = setup(files, migrate_extra="single_transaction = true\n")
    answer = migrate.apply(settings, skip_rehearsal=True)
    assert answer.exit_code == 1 and answer.body["status"] == "failed", answer.body["summary"]
    assert "0002_c.sql" in answer.body["summary"] and "savepoint" in answer.body["summary"]
    assert answer.body["details"]["rollback"]["method"].startswith("ROLLBACK")
    assert_same(dbs["prod"], before)


def test_a_file_with_a_nul_character_is_refused_not_cut_short(setup, dbs):
    """libpq sends a query as a C string: everything after a NUL character
    never reached the server, and the file was recorded as applied with its
    second half silently dropped."""
    settings = setup({"0001_two.sql": "create table a (id int primary key);\n\x00\ncreate table b (id int primary key);\n"})
    for answer in (migrate.plan(settings), migrate.apply(settings, skip_rehearsal=True)):
        assert answer.exit_code == 2 and answer.status == 400, answer.body
        assert "0001_two.sql" in answer.body["error"] and "NUL" in answer.body["error"] and "line 2" in answer.body["error"]
    with connect(dbs["prod"]) as conn:
        assert conn.execute("select to_regclass('a'), to_regclass('safesync.migrations')").fetchone() == (None, None)


def test_copy_from_the_clients_stdin_is_refused_by_the_plan(setup):
    """psql's inline COPY data cannot be sent as SQL: the connection would
    wait for rows inside the migration's transaction, holding its locks."""
    settings = setup({"0001_copy.sql": "create table k (id int);\ncopy k (id) from stdin;\n1\n\\.\ncopy (select 1) to stdout;\n"})
    answer = migrate.plan(settings)
    assert answer.status == 422
    assert "0001_copy.sql (line 2: COPY … FROM STDIN, line 5: COPY … TO STDOUT)" in answer.body["error"]
    assert migrate.apply(settings, skip_rehearsal=True).status == 422


# --- a migration that loses existing data does not pass its rehearsal ---------------

LOSSES = {
    "drop column": ("alter table users drop column name;\n", {"public.users.name": "column dropped with 40 value(s)"}),
    "drop table": ("drop table posts;\n", {"public.posts": "table dropped with its 120 row(s)"}),
    "rename table": ("alter table posts rename to articles;\n", {"public.posts": "table dropped with its 120 row(s)"}),
    "delete rows": ("delete from posts where id > 100;\n", {"public.posts": "20 row(s) deleted"}),
    "overwrite values": ("update users set name = upper(name) where id <= 3;\n", {"public.users": "3 row(s) with existing values changed"}),
    "lossy type change": ("alter table posts alter column title type varchar(4) using left(title, 4);\n", {"public.posts": "row(s) with existing values changed"}),
    "keyless delete": ("delete from audit where n > 3;\n", {"public.audit": "7 row(s) deleted or changed (no primary key)"}),
}
KEPT = {
    "add column and backfill it": "alter table users add column bio text;\nupdate users set bio = 'hi';\n",
    "new rows only": "insert into posts (user_id, title) select 1, 'more ' || g from generate_series(1, 50) g;\n",
    "keyless rows added": "insert into audit select g from generate_series(100, 140) g;\n",
    "widening types": "alter table users alter column name type varchar(200);\nalter table posts alter column id type bigint;\n",
    "drop an empty column": "alter table users drop column spare;\n",
    "drop an empty table": "drop table empty_log;\n",
}


@pytest.fixture
def more_tables(dbs):
    """A table without a primary key, an empty column and an empty table."""
    with psycopg.connect(dbs["prod"], autocommit=True) as conn:
        conn.execute("create table audit (n int); insert into audit select g from generate_series(1, 10) g")
        conn.execute("alter table users add column spare text; create table empty_log (id int primary key)")


@pytest.mark.parametrize("case", LOSSES, ids=list(LOSSES))
def test_a_migration_losing_existing_data_fails_its_rehearsal_and_cannot_be_applied(setup, dbs, more_tables, case):
    text, expected = LOSSES[case]
    settings = setup({"0001_change.sql": text})
    untouched = _fingerprint(dbs["prod"])
    rehearsal = migrate.rehearse(settings)
    body = rehearsal.body
    assert rehearsal.exit_code == 1 and body["status"] == "problems" and body["details"]["passed"] is False, body["summary"]
    assert "deletes or overwrites existing data" in body["summary"] and "allow_data_loss" in body["summary"]
    found = {r["object"]: r["loss"] for r in body["tables"]["existing data lost"]}
    assert found.keys() == expected.keys(), found
    assert all(what in found[name] for name, what in expected.items()), found
    refused = migrate.apply(settings)
    assert refused.status == 422 and "no passing rehearsal" in refused.body["summary"]
    assert _fingerprint(dbs["prod"]) == untouched


@pytest.mark.parametrize("case", KEPT, ids=list(KEPT))
def test_a_migration_keeping_existing_data_passes(setup, dbs, more_tables, case):
    rehearsal = migrate.rehearse(setup({"0001_change.sql": KEPT[case]}))
    assert rehearsal.exit_code == 0, rehearsal.body["summary"]
    assert rehearsal.body["tables"]["existing data lost"] == []


def test_allow_data_loss_accepts_exactly_what_it_names(setup, dbs, more_tables):
    files = {"0001_cleanup.sql": "alter table users drop column name;\ndelete from posts where id > 100;\n"}
    only_column = migrate.rehearse(setup(files, migrate_extra='allow_data_loss = ["users.name"]\n'))
    assert only_column.exit_code == 1 and "public.posts: 20 row(s) deleted" in only_column.body["summary"]
    assert "users.name" not in only_column.body["summary"].split("existing data — ")[1]
    settings = setup(files, migrate_extra='allow_data_loss = ["users.name", "public.posts"]\n')
    both = migrate.rehearse(settings)
    assert both.exit_code == 0, both.body["summary"]
    assert [r["accepted"] for r in both.body["tables"]["existing data lost"]] == ["yes (allow_data_loss)"] * 2
    assert sum("accepted by allow_data_loss" in w for w in both.body["warnings"]) == 2
    assert migrate.apply(settings).exit_code == 0
    with connect(dbs["prod"]) as conn:
        assert conn.execute("select count(*) from posts").fetchone()[0] == 100


def test_an_unqualified_allow_data_loss_entry_does_not_accept_a_loss_in_another_schemas_table(setup, dbs):
    """``allow_data_loss = ["users"]`` meant for public.users must not accept
    emptying auth.users (Supabase has both): a shared name must be qualified."""
    with psycopg.connect(dbs["prod"], autocommit=True) as conn:
        conn.execute("create schema auth; create table auth.users (id int primary key); insert into auth.users select generate_series(1, 5)")
    files = {"0001_wipe.sql": "delete from auth.users;\nupdate public.users set name = upper(name);\n"}
    unqualified = migrate.rehearse(setup(files, migrate_extra='allow_data_loss = ["users"]\n'))
    assert unqualified.exit_code == 1 and unqualified.body["details"]["passed"] is False
    assert "auth.users" in unqualified.body["summary"] and "public.users" in unqualified.body["summary"]
    assert any("qualify it with its schema" in w for w in unqualified.body["warnings"])
    qualified = migrate.rehearse(setup(migrate_extra='allow_data_loss = ["public.users"]\n'))
    assert qualified.exit_code == 1 and "auth.users" in qualified.body["summary"]
    assert "public.users" not in qualified.body["summary"]
    both = migrate.rehearse(setup(migrate_extra='allow_data_loss = ["public.users", "auth.users"]\n'))
    assert both.exit_code == 0, both.body["summary"]


def test_a_migration_changing_a_schema_the_rehearsal_does_not_compare_fails_it(setup, dbs):
    """With [migrate] schemas = ["public"], the scratch keeps an older copy of
    auth from an earlier rehearsal: deleting its rows there is no loss of the
    target's data the comparison could see. The rehearsal must fail, naming
    the table, rather than pass a migration that empties prod's auth.users."""
    with psycopg.connect(dbs["prod"], autocommit=True) as conn:
        conn.execute("create schema auth; create table auth.users (id int primary key); insert into auth.users select generate_series(1, 5)")
    earlier = setup({"0001_first.sql": "create table first (id int primary key);\n"})
    assert migrate.rehearse(earlier).exit_code == 0  # cloned every schema, auth too
    os.remove(earlier.base_dir / "migrations" / "0001_first.sql")
    settings = setup({"0001_wipe.sql": "delete from auth.users;\n"}, migrate_extra='schemas = ["public"]\n')
    rehearsal = migrate.rehearse(settings)
    assert rehearsal.exit_code == 1 and rehearsal.body["details"]["passed"] is False
    assert "outside the rehearsed schemas" in rehearsal.body["summary"] and "auth.users" in rehearsal.body["summary"]
    assert rehearsal.body["details"]["changed_outside_rehearsed_schemas"] == ["auth.users"]
    assert migrate.apply(settings).status == 422
    creating = setup({"0001_wipe.sql": "create schema extra;\ncreate table extra.t (id int primary key);\n"}, migrate_extra='schemas = ["public"]\n')
    assert migrate.rehearse(creating).exit_code == 0  # a schema the migration creates is compared, not "outside"


def test_columns_without_real_data_in_the_rehearsal_are_named_as_unchecked(setup, dbs, more_tables):
    extra = '[staging_clone]\nsource = "prod"\ntarget = "scratch"\nexclude_table_data = ["audit"]\n[[staging_clone.mask]]\ntable = "users"\ncolumn = "email"\nstrategy = "hash"\n'
    rehearsal = migrate.rehearse(setup({"0001_wipe.sql": "update users set email = id || '@x.test';\n"}, extra=extra))
    assert rehearsal.exit_code == 0, rehearsal.body["summary"]  # invisible through the mask: hence the warning
    assert "the data-loss check cannot see rewrites of public.users.email (masked), public.audit (structure only)" in " ".join(rehearsal.body["warnings"])


def test_what_the_application_writes_meanwhile_is_not_the_migrations_loss(setup, dbs, more_tables, monkeypatch):
    """The rehearsal compares with the target as it was cloned (a held
    snapshot), not as the live application has changed it since."""
    from safesync.functions.migrate import migration

    real_run = migration.run

    def app_writes_then_migrate(*args, **kwargs):
        with psycopg.connect(dbs["prod"], autocommit=True) as conn:
            conn.execute("delete from posts where id > 110")  # users delete their posts
            conn.execute("update users set name = 'renamed' where id = 1")
            conn.execute("insert into audit values (99)")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(migration, "run", app_writes_then_migrate)
    kept = migrate.rehearse(setup({"0001_bio.sql": "alter table users add column bio text;\n"}))
    assert kept.exit_code == 0, kept.body
    assert kept.body["tables"]["data differences"] == []  # the rehearsal is the clone plus the migration, nothing else
    lost = migrate.rehearse(setup({"0002_trim.sql": "delete from posts where id <= 5;\n"}))
    assert {r["object"]: r["loss"] for r in lost.body["tables"]["existing data lost"]} == {"public.posts": lost.body["tables"]["existing data lost"][0]["loss"]}
    assert lost.body["tables"]["existing data lost"][0]["loss"].startswith("5 row(s) deleted")


def test_ddl_on_the_target_while_rehearsing_is_a_clear_failure_not_a_crash(setup, dbs, more_tables, monkeypatch):
    from safesync.functions.migrate import migration

    real_run = migration.run

    def ddl_then_migrate(*args, **kwargs):
        with psycopg.connect(dbs["prod"], autocommit=True) as conn:
            conn.execute("alter table users drop column spare")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(migration, "run", ddl_then_migrate)
    answer = migrate.rehearse(setup({"0001_bio.sql": "alter table users add column bio text;\n"}))
    assert answer.status == 503 and "schema changed while rehearsing" in answer.body["error"] and "spare" in answer.body["error"]
    assert migrate.apply(setup()).status == 422  # no passing rehearsal
