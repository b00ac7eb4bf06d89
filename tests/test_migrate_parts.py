"""Migrations: the parts — finding transaction control in SQL, the command's
environment, timeout and redaction, the lock guard, HTTP (admin only) and
the CLI's exit codes."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import psycopg
import pytest

from safesync.functions import migrate
from safesync.functions.migrate import command as cmd
from safesync.functions.migrate.sqlfiles import checksum, transaction_control
from safesync.shared.db import connect
from tests import sentinels


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("begin;\ncreate table x (a int);\ncommit;", ["line 1: BEGIN", "line 3: COMMIT"]),
        ("START TRANSACTION; select 1; END;", ["line 1: START", "line 1: END"]),
        ("select 1;\n  rollback ;", ["line 2: ROLLBACK"]),
        ("savepoint a; select 1; rollback to a; release a;", []),
        ("create function f() returns int language sql\nbegin atomic\n  select case when true then 1 end;\n  select 2;\nend;", []),
        ("do $$ begin perform 1; commit; end $$;\nselect $tag$ commit; $tag$;", []),
        ("-- commit;\n/* rollback; /* nested */ begin; */ select 'begin; commit;', E'it\\'s; commit', \"commit\";", []),
        ("create table \"begin\" (a int);\nabort;", ["line 2: ABORT"]),
        ("prepare transaction 'x';\nprepare stmt as select 1;", ["line 1: PREPARE TRANSACTION"]),
        # non-ASCII letters are identifier and dollar-tag characters for the server too
        ("create table é$x$ (id int);\ncommit;", ["line 2: COMMIT"]),
        ("select $é$ commit; $é$;", []),
        ("create table \xa0$x$ (id int);\ncommit;", ["line 2: COMMIT"]),  # a no-break space is not whitespace to the server
    ],
)
def test_transaction_control_is_found_outside_strings_comments_and_bodies(text, found):
    assert transaction_control(text) == found


def test_a_folder_whose_sql_is_only_in_subfolders_is_a_config_error_not_up_to_date(write_settings, make_db, tmp_path):
    """sql_dir pointed at Prisma's folder (<name>/migration.sql) found no
    file directly in it, and plan and apply said "up to date" forever."""
    folder = tmp_path / "migrations" / "20240101000000_init"
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text("create table users (id int primary key);\n")
    settings = write_settings({"prod": make_db(), "scratch": make_db()}, '[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n')
    answer = migrate.plan(settings)
    assert answer.status == 400 and answer.exit_code == 2, answer.body
    assert "20240101000000_init/migration.sql" in answer.body["error"] and "command" in answer.body["error"]



def test_a_migration_ending_in_upper_case_sql_is_a_config_error_not_skipped(write_settings, make_db, tmp_path):
    """The folder is read as *.sql: 0002_b.SQL (a Windows editor's save) was
    never applied while plan and apply said the database was up to date."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_a.sql").write_text("create table a (id int primary key);\n")
    (tmp_path / "migrations" / "0002_b.SQL").write_text("create table b (id int primary key);\n")
    settings = write_settings({"prod": make_db(), "scratch": make_db()}, '[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n')
    answer = migrate.plan(settings)
    assert answer.status == 400 and "0002_b.SQL" in answer.body["error"], answer.body


def test_checksum_ignores_line_endings_only():
    assert checksum("select 1;\r\nselect 2;\r\n") == checksum("select 1;\nselect 2;\n")
    assert checksum("select 1;") != checksum("select 2;")


def test_a_byte_order_mark_is_not_part_of_the_sql(tmp_path):
    from safesync.functions.migrate.sqlfiles import discover

    (tmp_path / "0001_bom.sql").write_bytes(b"\xef\xbb\xbfalter table users add column bio text;\n")
    (found,) = discover(tmp_path)
    assert found.text == "alter table users add column bio text;\n"
    assert found.checksum == checksum("alter table users add column bio text;\n")


def test_command_environment_has_only_the_target():
    base = {
        "PATH": "/usr/bin", "HOME": "/root", "PROD_DATABASE_URL": "postgresql://u:p@h/prod", "DEV_DATABASE_URL": "x",
        "SAFESYNC_ADMIN_TOKEN": "t", "QSTASH_TOKEN": "q", "PGHOST": "elsewhere", "PGPASSWORD": "pw", "PGSSLMODE": "require",
        "NODE_ENV": "production",
        # not configured in safesync, but prod all the same (Prisma's directUrl reads DIRECT_URL for migrate deploy)
        "DIRECT_URL": "postgresql://u:p@h:5432/prod", "SHADOW_DATABASE_URL": "postgres://u:p@h/shadow",
        "JDBC_URL": "jdbc:postgresql://h/prod",
    }  # fmt: skip
    env = cmd.command_env("postgresql://u:p@h/scratch", ["PROD_DATABASE_URL", "DEV_DATABASE_URL"], "5s", "15min", base)
    assert env["DATABASE_URL"] == "postgresql://u:p@h/scratch"
    assert env["PGOPTIONS"] == "-c lock_timeout=5s -c statement_timeout=15min"
    assert {"PATH", "HOME", "PGSSLMODE", "NODE_ENV"} <= set(env)
    for gone in (
        "PROD_DATABASE_URL", "DEV_DATABASE_URL", "SAFESYNC_ADMIN_TOKEN", "QSTASH_TOKEN", "PGHOST", "PGPASSWORD",
        "DIRECT_URL", "SHADOW_DATABASE_URL", "JDBC_URL",
    ):  # fmt: skip
        assert gone not in env


def test_command_output_is_redacted_and_a_hung_command_is_killed(tmp_path):
    url = f"postgresql://someone:{sentinels.DB_PASSWORD}@127.0.0.1:1/x"
    script = "import os, sys, time; print(os.environ['DATABASE_URL']); print('pw', '" + sentinels.DB_PASSWORD + "'); sys.stdout.flush(); time.sleep(60)"
    started = time.perf_counter()
    result = cmd.run_command(f'{sys.executable} -c "{script}"', url, cwd=tmp_path, env={"DATABASE_URL": url, "PATH": os.environ["PATH"]}, timeout_s=1.5)
    assert time.perf_counter() - started < 20
    assert result.timed_out and not result.ok and "timeout" in result.error()
    assert sentinels.DB_PASSWORD not in result.output
    assert "$DATABASE_URL" in result.output and "pw ***" in result.output


def test_a_file_waiting_on_a_lock_gives_up_after_lock_timeout(write_settings, make_db, tmp_path):
    prod = make_db()
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create table users (id int primary key); insert into users values (1)")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_alter.sql").write_text("alter table users add column x int;\n")
    settings = write_settings(
        {"prod": prod, "scratch": make_db()},
        '[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\nlock_timeout = "300ms"\n',
    )
    holder = psycopg.connect(prod)
    holder.execute("lock table users in access share mode")  # an app's open transaction
    try:
        started = time.perf_counter()
        answer = migrate.apply(settings, skip_rehearsal=True)
        elapsed = time.perf_counter() - started
    finally:
        holder.rollback()
        holder.close()
    body = answer.body
    assert answer.exit_code == 1 and body["status"] == "failed"
    assert "0001_alter.sql" in body["details"]["error"] and "lock timeout" in body["details"]["error"]
    assert body["details"]["rollback"]["method"].startswith("ROLLBACK")  # the only file never committed
    assert elapsed < 30
    with connect(prod) as conn:
        assert conn.execute("select count(*) from safesync.migrations").fetchone()[0] == 0


def test_bad_timeout_and_missing_source_are_config_errors(write_settings, make_db, tmp_path):
    prod = make_db()
    (tmp_path / "migrations").mkdir()
    bad = write_settings({"prod": prod, "scratch": prod}, '[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\nlock_timeout = "soon"\n')
    answer = migrate.plan(bad)
    assert answer.status == 400 and answer.exit_code == 2 and "migrate.lock_timeout" in answer.body["error"]
    none = write_settings({"prod": prod, "scratch": prod}, '[migrate]\ndatabase = "prod"\nrehearse_on = "scratch"\n')
    answer = migrate.plan(none)
    assert answer.status == 400 and "sql_dir" in answer.body["error"]


@pytest.fixture
def http_client():
    """The migrate handler behind the same serve() the functions-framework targets use."""
    import flask

    from safesync.shared.http import serve

    app = flask.Flask(__name__)
    app.add_url_rule("/migrate", "migrate", lambda: serve(flask.request, "migrate", migrate.handle_http), methods=["POST"])
    return app.test_client()


def _bearer(var: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ[var]}"}


def test_http_is_admin_only_and_validates_the_body(http_client, write_settings, make_db, tmp_path):
    prod = make_db()
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_t.sql").write_text("create table t (id int primary key);\n")
    write_settings({"prod": prod, "scratch": make_db()}, '[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n')

    assert http_client.post("/migrate", json={"action": "plan"}).status_code == 401
    assert http_client.post("/migrate", json={"action": "plan"}, headers=_bearer("SAFESYNC_API_TOKEN")).status_code == 403
    admin = _bearer("SAFESYNC_ADMIN_TOKEN")
    assert http_client.post("/migrate", json={"action": "drop"}, headers=admin).status_code == 400
    assert http_client.post("/migrate", json={"action": "plan", "force": True}, headers=admin).status_code == 400
    assert http_client.post("/migrate", json={"action": "plan", "skip_rehearsal": True}, headers=admin).status_code == 400
    assert http_client.post("/migrate", json={"action": "apply", "skip_rehearsal": "yes"}, headers=admin).status_code == 400

    planned = http_client.post("/migrate", json={"action": "plan"}, headers=admin)
    assert planned.status_code == 200 and planned.json["details"]["plan"]["pending"] == ["0001_t.sql"]
    refused = http_client.post("/migrate", json={"action": "apply"}, headers=admin)
    assert refused.status_code == 422 and "no passing rehearsal" in refused.json["summary"]
    with connect(prod) as conn:
        assert conn.execute("select to_regclass('public.t')").fetchone()[0] is None


def test_cli_exit_codes(write_settings, make_db, tmp_path, capsys):
    from safesync.functions.cli import main

    prod = make_db()
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_t.sql").write_text("create table t (id int primary key);\n")
    write_settings({"prod": prod, "scratch": make_db()}, '[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n')

    assert main(["migrate", "plan"]) == 0
    assert "0001_t.sql" in capsys.readouterr().out
    assert main(["migrate", "apply", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "refused" and out["details"]["skip_rehearsal"] is False
    assert main(["migrate", "apply", "--skip-rehearsal", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["details"]["rehearsal"] == {"skipped": True} and out["details"]["backup"]["id"]
    assert main(["migrate", "apply"]) == 0
    assert "nothing to apply" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["migrate", "frobnicate"])
    assert usage.value.code == 2


@pytest.mark.parametrize("other_name", ["prod", "live"], ids=["same name", "another name for the same database"])
def test_concurrent_apply_is_refused_by_the_lock(write_settings, make_db, tmp_path, other_name):
    """Two applies at once: the second gets 409 while the first holds the
    lock — also from a second config (another deployment) calling the same
    database "live": the lock is the database's, not its name's."""
    prod, scratch = make_db(), make_db()
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_slow.sql").write_text("select pg_sleep(2);\ncreate table t (id int primary key);\n")
    toml = '[migrate]\ndatabase = "{}"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n'
    first_settings = write_settings({"prod": prod, "scratch": scratch}, toml.format("prod"))
    other_settings = write_settings({other_name: prod, "scratch": scratch}, toml.format(other_name))
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", migrate.apply(first_settings, skip_rehearsal=True)))
    first.start()
    deadline = time.time() + 30
    while time.time() < deadline:
        with connect(prod, autocommit=True) as conn:
            if conn.execute("select count(*) from pg_stat_activity where query like 'select pg_sleep(2)%%'").fetchone()[0]:
                break
        time.sleep(0.05)
    from safesync.shared.errors import AlreadyRunning

    try:
        with pytest.raises(AlreadyRunning):
            migrate.apply(other_settings, skip_rehearsal=True)
    finally:
        first.join()
    assert results["first"].exit_code == 0


def test_command_inputs_are_part_of_the_plan(write_settings, make_db, tmp_path):
    from safesync.functions.migrate.plan import build_plan
    from safesync.shared.errors import ConfigError

    (tmp_path / "prisma" / "migrations" / "001_init").mkdir(parents=True)
    sql_file = tmp_path / "prisma" / "migrations" / "001_init" / "migration.sql"
    sql_file.write_text("create table a (id int);\n")
    settings = write_settings(
        {"prod": make_db(), "scratch": make_db()},
        '[migrate]\ndatabase = "prod"\nrehearse_on = "scratch"\ncommand = "npx prisma migrate deploy"\n'
        'command_inputs = ["prisma/migrations/**/*.sql"]\n',
    )
    first = build_plan(settings)
    assert first.inputs == [("prisma/migrations/001_init/migration.sql", first.inputs[0][1])]
    assert build_plan(settings).digest == first.digest
    sql_file.write_text("create table a (id bigint);\n")
    assert build_plan(settings).digest != first.digest  # an older rehearsal no longer matches
    missing = write_settings({"prod": make_db(), "scratch": make_db()}, '[migrate]\ndatabase = "prod"\nrehearse_on = "scratch"\ncommand = "true"\ncommand_inputs = ["nothing/*.sql"]\n')
    with pytest.raises(ConfigError, match="matches no file"):
        build_plan(missing)


def test_rows_gone_that_the_diff_does_not_name_are_a_loss():
    """A comparison that finds fewer deleted rows than the row counts say
    went missing (complete or not) is never "no loss"."""
    from safesync.functions.migrate.loss import _rows_lost
    from safesync.functions.validate.data_diff import TableDiff
    from safesync.shared.db import TableRef

    table = TableRef("public", "notes")
    unnamed = TableDiff("public.notes", "differs", rows_a=35, rows_b=34, found={}, complete=True)
    [loss] = _rows_lost(table, unnamed)
    assert "1 row(s) gone that the comparison could not name" in loss.what
    named = TableDiff("public.notes", "differs", rows_a=35, rows_b=34, found={"only in A": 1}, complete=True)
    [loss] = _rows_lost(table, named)
    assert "could not name" not in loss.what and "1 row(s) deleted" in loss.what
    grown = TableDiff("public.notes", "differs", rows_a=34, rows_b=35, found={"only in B": 1}, complete=True)
    assert _rows_lost(table, grown) == []
