"""Content sync on the LMS fixture: content moves, user data provably untouched."""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from safesync.functions.cli import main as cli_main
from safesync.functions.content_sync import content_sync
from safesync.shared import db
from safesync.shared.errors import ConfigError
from tests.fixtures.lms import LMS_CONTENT, LMS_PROTECTED, lms_config_toml, lms_database


def fingerprints(url: str, tables=None) -> dict:
    with psycopg.connect(url) as conn:
        prints = db.database_fingerprint(conn)
    return {k: v for k, v in prints.items() if tables is None or k.split(".")[1] in tables}


def totals(body: dict) -> dict[str, dict]:
    return {row["table"]: row for row in body["tables"]["tables"]}


def test_sync_moves_content_and_leaves_user_tables_untouched(lms):
    make, dev, prod = lms
    settings = make()
    users_before = fingerprints(prod, LMS_PROTECTED)
    dev_users_before = fingerprints(dev, LMS_PROTECTED)

    answer = content_sync(settings, "sync", adopt=True)  # first run: dev's edits adopted
    body = answer.body
    assert answer.status == 200, body
    rows = totals(body)
    assert rows["lessons"]["new"] == 3 and rows["lessons"]["changed"] > 0
    assert rows["lessons"]["written"] == rows["lessons"]["new"] + rows["lessons"]["changed"]
    assert body["details"]["protection_proof"]["ok"] is True
    assert {r["table"] for r in body["tables"]["protection proof"]} >= set(LMS_PROTECTED)
    assert all(r["inserted"] == r["updated"] == r["deleted"] == 0 for r in body["tables"]["protection proof"])
    assert body["details"]["verified"] is True
    assert body["details"]["safety_backup"]["kind"] == "presync"

    # every user table byte-identical, on both sides; content now equal to dev
    assert fingerprints(prod, LMS_PROTECTED) == users_before
    assert fingerprints(dev, LMS_PROTECTED) == dev_users_before
    assert fingerprints(prod, LMS_CONTENT) == fingerprints(dev, LMS_CONTENT)
    with psycopg.connect(prod) as conn:
        # generated column recomputed by the target, identity ALWAYS ids kept
        assert conn.execute("select count(*) from lessons where title_search <> lower(title)").fetchone()[0] == 0
        assert conn.execute("select max(id) from events").fetchone()[0] == 7
        # sequences moved past the synced ids: a normal insert does not collide
        conn.execute("insert into lessons (course_id, position, title, updated_at) values (6, 9, 'x', now())")
        conn.execute("insert into events (title, starts_at) values ('x', now())")
        conn.rollback()

    again = content_sync(settings, "compare").body
    assert all(r["new"] == r["changed"] == r["extra"] == 0 for r in again["tables"]["tables"])
    stored = [o.key for o in settings.storage.list("runs/content_sync/")]
    reports = [k for k in stored if k.endswith(".json")]
    assert sorted(settings.storage.get_json(k)["action"] for k in reports) == ["compare", "sync"]
    sync_report = next(settings.storage.get_json(k) for k in reports if settings.storage.get_json(k)["action"] == "sync")
    assert set(stored) - set(reports) == {sync_report["details"]["undo_log"]["key"]}  # the undo log beside its report
    assert sync_report["details"]["undo_log"]["key"] == reports[[settings.storage.get_json(k)["action"] for k in reports].index("sync")].removesuffix(".json") + ".undo.gz"


def test_second_sync_writes_nothing_and_fires_no_update(lms):
    make, dev, prod = lms
    settings = make()
    assert content_sync(settings, "sync", adopt=True).status == 200
    with psycopg.connect(prod) as conn:
        versions = conn.execute("select array_agg(xmin::text order by id) from lessons").fetchone()[0]
    second = content_sync(settings, "sync").body
    assert all(r["written"] == 0 for r in second["tables"]["tables"])
    assert "already in sync" in second["summary"]
    assert "safety_backup" not in second["details"]  # nothing to write, nothing to undo
    with psycopg.connect(prod) as conn:
        assert conn.execute("select array_agg(xmin::text order by id) from lessons").fetchone()[0] == versions


def test_trigger_writing_a_user_table_rolls_the_sync_back(lms):
    make, dev, prod = lms
    with psycopg.connect(prod) as conn:
        conn.execute(
            """
            create function award_points() returns trigger language plpgsql as $$
            begin
              insert into user_points_history (user_id, points, reason, lesson_id, created_at)
              select user_id, 1, 'lesson edited', new.id, now() from lesson_progress where lesson_id = new.id;
              return new;
            end $$;
            create trigger lessons_award after insert or update on lessons for each row execute function award_points();
            """
        )
    before = fingerprints(prod)
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 422 and answer.exit_code == 1
    report = answer.body
    assert report["status"] == "refused"
    assert "user_points_history" in report["summary"] and "rolled back" in report["summary"]
    violations = {v["table"]: v for v in report["details"]["protection_proof"]["violations"]}
    assert set(violations) == {"user_points_history", "user_points_history_id_seq"} and violations["user_points_history"]["inserted"] > 0
    # the insert drew ids from the table's sequence, which no ROLLBACK gives back: the proof says so
    assert "not transactional" in violations["user_points_history_id_seq"]["changes"][0]
    assert "except sequence values" in report["summary"]
    assert fingerprints(prod) == before


def test_delete_missing_refuses_when_users_have_progress(lms):
    make, dev, prod = lms
    with psycopg.connect(dev) as conn:  # lesson 1 deleted in dev (with what hangs off it there)
        conn.execute("delete from lesson_progress where lesson_id = 1")
        conn.execute("delete from resources where lesson_id = 1")
        conn.execute("delete from lessons where id = 1")
    before = fingerprints(prod)
    answer = content_sync(make(delete_missing=True), "sync", adopt=True)
    assert answer.status == 422
    summary = answer.body["summary"]
    assert "lesson_progress" in summary and "CASCADE" in summary
    blocked = {b["table"]: b for b in answer.body["tables"]["blocked deletes"]}
    with psycopg.connect(prod) as conn:
        progress = conn.execute("select count(*) from lesson_progress where lesson_id = 1").fetchone()[0]
        points = conn.execute("select count(*) from user_points_history where lesson_id = 1").fetchone()[0]
    assert progress > 0 and blocked["lesson_progress"]["rows"] == progress
    assert blocked["user_points_history"]["rows"] == points and blocked["user_points_history"]["on_delete"] == "SET NULL"
    assert fingerprints(prod) == before

    # without delete_missing the same sync leaves the extra rows alone
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 200
    assert totals(answer.body)["lessons"]["extra"] == 1
    with psycopg.connect(prod) as conn:
        assert conn.execute("select count(*) from lesson_progress where lesson_id = 1").fetchone()[0] == progress


def test_delete_missing_deletes_unreferenced_rows_children_first(lms):
    make, dev, prod = lms
    with psycopg.connect(dev) as conn:
        conn.execute("delete from promotions where code = 'PROMO2'")
        conn.execute("delete from resources where lesson_id = 2")  # children of a lesson nobody uses in prod
        conn.execute("delete from lessons where id = 2")
    with psycopg.connect(prod) as conn:
        conn.execute("delete from user_points_history where lesson_id = 2")
        conn.execute("delete from lesson_progress where lesson_id = 2")
    users_before = fingerprints(prod, LMS_PROTECTED)
    answer = content_sync(make(delete_missing=True), "sync", adopt=True)
    assert answer.status == 200, answer.body
    rows = totals(answer.body)
    assert rows["promotions"]["deleted"] == 2 and rows["resources"]["deleted"] == 2 and rows["lessons"]["deleted"] == 1
    assert fingerprints(prod, LMS_CONTENT) == fingerprints(dev, LMS_CONTENT)
    assert fingerprints(prod, LMS_PROTECTED) == users_before


def test_killed_connection_mid_sync_leaves_target_unchanged(lms, pg_server):
    make, dev, prod = lms
    settings = make()
    before = fingerprints(prod)

    def kill(step, conn):
        if step == "after_write":
            with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
                admin.execute("select pg_terminate_backend(%s)", [conn.info.backend_pid])

    answer = content_sync(settings, "sync", adopt=True, hook=kill)
    assert answer.status == 503 and "rolled back, target unchanged" in answer.body["error"]
    assert fingerprints(prod) == before
    assert content_sync(settings, "sync", adopt=True).status == 200  # and the next run just works


def test_dry_run_changes_nothing_and_its_digest_pins_the_sync(lms):
    make, dev, prod = lms
    settings = make()
    before = fingerprints(prod)
    seq = "select last_value, is_called from lessons_id_seq"
    with psycopg.connect(prod) as conn:
        sequence_before = conn.execute(seq).fetchone()
    dry = content_sync(settings, "dry-run", adopt=True).body
    assert dry["status"] == "ok" and "rolled back" in dry["summary"]
    digest = dry["details"]["plan_digest"]
    assert digest in dry["summary"]
    assert dry["details"]["fk_order"].index("courses") < dry["details"]["fk_order"].index("lessons") < dry["details"]["fk_order"].index("resources")
    assert dry["details"]["fk_order"].index("products") < dry["details"]["fk_order"].index("prices")
    assert {m["table"] for m in dry["details"]["sequences"]} >= {"courses", "lessons", "events"}
    changed = dry["details"]["samples"]["lessons"]["changed"]
    assert changed and all(s["columns"] for s in changed)
    assert {"title", "updated_at"} <= {c for s in changed for c in s["columns"]}
    assert totals(dry)["lessons"]["written"] > 0
    assert fingerprints(prod) == before
    with psycopg.connect(prod) as conn:  # sequences untouched by a dry-run
        assert conn.execute(seq).fetchone() == sequence_before

    with psycopg.connect(dev) as conn:  # dev moves on after the review
        conn.execute("update courses set title = 'Renamed' where id = 3")
    refused = content_sync(settings, "sync", expect_plan=digest, adopt=True)
    assert refused.status == 422 and "plan changed" in refused.body["summary"]
    assert fingerprints(prod) == before

    fresh = content_sync(settings, "dry-run", adopt=True).body["details"]["plan_digest"]
    assert fresh != digest
    assert content_sync(settings, "sync", expect_plan=fresh).status == 422  # adopt is part of the reviewed plan
    assert content_sync(settings, "sync", expect_plan=fresh, adopt=True).status == 200


def test_schema_drift_is_reported_and_blocks_sync(lms):
    make, dev, prod = lms
    with psycopg.connect(dev) as conn:
        conn.execute("alter table lessons add column difficulty text")
        conn.execute("alter table resources alter column kind type varchar(20)")
    with psycopg.connect(prod) as conn:
        conn.execute("alter table courses add column legacy_flag boolean")
    settings = make()
    compare = content_sync(settings, "compare")
    assert compare.exit_code == 1 and compare.body["status"] == "problems"
    drift = {r["table"]: r.get("drift") for r in compare.body["tables"]["tables"]}
    assert drift["lessons"] == "missing in target: difficulty text"
    assert drift["courses"] == "only in target: legacy_flag boolean"
    assert drift["resources"] == "retyped: kind: character varying(20) -> text"
    before = fingerprints(prod)
    answer = content_sync(settings, "sync")
    assert answer.status == 422
    assert "difficulty" in answer.body["summary"] and "legacy_flag" in answer.body["summary"]
    assert fingerprints(prod) == before


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (None, 'tables = ["courses", "nope"]', "nope does not exist"),
        ("create table notes (body text)", 'tables = ["notes"]', "has no primary key"),
        (None, 'tables = ["courses"]\nprotected = ["users", "ghosts"]', "ghosts does not exist"),
    ],
)
def test_config_errors_touch_nothing(pg_server, make_db, write_settings, setup, extra, message):
    dev = lms_database(pg_server, make_db, variant="dev")
    prod = lms_database(pg_server, make_db, variant="prod")
    for url in (dev, prod):
        if setup:
            with psycopg.connect(url) as conn:
                conn.execute(setup)
    before = fingerprints(prod)
    settings = write_settings({"dev": dev, "prod": prod}, f'[content_sync]\nsource = "dev"\ntarget = "prod"\n{extra}\n')
    answer = content_sync(settings, "sync")
    assert answer.status == 400 and message in answer.body["error"]
    assert fingerprints(prod) == before


def test_content_and_protected_at_once_is_a_config_error(write_settings, make_db):
    url = make_db()
    with pytest.raises(ConfigError, match="both content and protected"):
        write_settings({"dev": url, "prod": url}, '[content_sync]\ntables = ["lessons"]\nprotected = ["lessons"]\n')


def test_source_and_target_the_same_database_is_refused(pg_server, make_db, write_settings):
    url = lms_database(pg_server, make_db)
    same = write_settings({"dev": url, "prod": url}, lms_config_toml())
    answer = content_sync(same, "compare")
    assert answer.status == 400 and "same database" in answer.body["error"]
    # a different URL that reaches the same database is caught too
    alias = write_settings({"dev": url + "?application_name=other", "prod": url}, lms_config_toml())
    answer = content_sync(alias, "dry-run")
    assert answer.status == 400 and "same database" in answer.body["error"]


def test_http_and_cli(lms, capsys):
    make, dev, prod = lms
    make()
    from safesync.functions.serve import create_app

    client = create_app().test_client()
    auth = {"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"}
    response = client.post("/content_sync", json={"mode": "compare"}, headers=auth)
    assert response.status_code == 200 and response.get_json()["action"] == "compare"
    for bad in ({"mode": "push"}, {"mode": "compare", "expect_plan": "0" * 64}, {"mode": "sync", "expect_plan": "xyz"}, {"mode": "sync", "force": True}, {"mode": "sync", "adopt": "yes"}):
        assert client.post("/content_sync", json=bad, headers=auth).status_code == 400, bad

    assert cli_main(["content", "dry-run", "--json"]) == 1  # first run: rows without history need --adopt
    assert "--adopt" in json.loads(capsys.readouterr().out)["summary"]
    assert cli_main(["content", "dry-run", "--adopt", "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["details"]["plan_digest"]
    assert cli_main(["content", "sync", "--adopt", "--expect-plan", "f" * 64]) == 1
    assert "plan changed" in capsys.readouterr().out
    assert cli_main(["content", "sync", "--expect-plan", "nothex"]) == 2
    capsys.readouterr()
    assert cli_main(["content", "sync", "--adopt", "--expect-plan", digest]) == 0
    out = capsys.readouterr().out
    assert "synced" in out and "lessons" in out
