"""``safesync schedules plan | apply`` against a local fake of the QStash
schedules API, through the real ``qstash`` SDK."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from safesync.functions import cli
from safesync.functions.schedules import check_cron, load_schedules, run
from tests import sentinels
from tests.fake_qstash import FakeQStash

REPO = Path(__file__).resolve().parents[1]
PUBLIC = sentinels.PUBLIC_URL

FILE = """
[defaults]
base_url = "${SAFESYNC_PUBLIC_URL}"
retries = 3
failure_callback = "https://alerts.example.test/qstash-failed"

[schedules.backup-daily]
target = "backup"
cron = "0 2 * * *"
body = { action = "create", db = "prod" }

[schedules.calendar-incremental]
target = "calendar_sync"
cron = "5 * * * *"
body = { mode = "incremental" }

[schedules.calendar-full]
target = "calendar_sync"
cron = "30 3 * * *"
body = { mode = "full" }
retries = 1
"""


@pytest.fixture
def qstash(monkeypatch):
    fake = FakeQStash(sentinels.SECRETS["QSTASH_TOKEN"]).start()
    monkeypatch.setenv("QSTASH_URL", fake.url)
    yield fake
    fake.stop()


@pytest.fixture
def settings(write_settings):
    return write_settings({"prod": "postgresql://unused@127.0.0.1:1/unused"})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedules.toml"
    path.write_text(textwrap.dedent(text))
    return path


def rows(answer) -> dict[str, dict]:
    report = answer.body.get("report", answer.body)
    return {r["schedule_id"]: r for r in report["tables"]["schedules"]}


def test_plan_then_apply_creates_everything_and_second_apply_changes_nothing(qstash, settings, tmp_path):
    path = write(tmp_path, FILE)
    plan = run(settings, "plan", path)
    assert plan.exit_code == 0, plan.body
    assert {k: r["change"] for k, r in rows(plan).items()} == {
        "safesync-backup-daily": "create",
        "safesync-calendar-incremental": "create",
        "safesync-calendar-full": "create",
    }
    assert plan.body["summary"] == "plan: 3 to create; 0 unchanged"
    assert qstash.changing_calls() == []  # plan only lists

    applied = run(settings, "apply", path)
    assert applied.exit_code == 0, applied.body
    assert sorted(qstash.changing_calls()) == sorted(
        ("POST", f"/v2/schedules/{PUBLIC}/{t}") for t in ("backup", "calendar_sync", "calendar_sync")
    )
    backup = qstash.schedules["safesync-backup-daily"]
    assert backup["destination"] == f"{PUBLIC}/backup"
    assert backup["cron"] == "0 2 * * *"
    assert json.loads(backup["body"]) == {"action": "create", "db": "prod"}
    assert backup["header"]["Content-Type"] == ["application/json"]
    assert backup["retries"] == 3 and backup["failureCallback"] == "https://alerts.example.test/qstash-failed"
    assert qstash.schedules["safesync-calendar-full"]["retries"] == 1

    before = len(qstash.changing_calls())
    again = run(settings, "apply", path)
    assert again.exit_code == 0
    assert len(qstash.changing_calls()) == before  # idempotent: only a GET
    assert qstash.calls[-1] == ("GET", "/v2/schedules")
    assert {r["change"] for r in rows(again).values()} == {"unchanged"}
    assert again.body["summary"] == "applied: nothing to change; 3 unchanged"


def test_changed_cron_is_one_update_and_removed_entry_one_delete(qstash, settings, tmp_path):
    path = write(tmp_path, FILE)
    run(settings, "apply", path)
    created_at = qstash.schedules["safesync-calendar-incremental"]["createdAt"]
    start = len(qstash.calls)

    write(tmp_path, FILE.replace('cron = "0 2 * * *"', 'cron = "15 2 * * *"'))
    plan = run(settings, "plan", path)
    assert rows(plan)["safesync-backup-daily"]["change"] == "update"
    assert 'cron: "0 2 * * *" → "15 2 * * *"' in rows(plan)["safesync-backup-daily"]["notes"]
    applied = run(settings, "apply", path)
    assert applied.exit_code == 0
    assert qstash.changing_calls()[-1] == ("POST", f"/v2/schedules/{PUBLIC}/backup")
    assert [c for c in qstash.calls[start:] if c[0] != "GET"] == [("POST", f"/v2/schedules/{PUBLIC}/backup")]
    assert qstash.schedules["safesync-backup-daily"]["cron"] == "15 2 * * *"
    assert qstash.schedules["safesync-calendar-incremental"]["createdAt"] == created_at  # not touched

    start = len(qstash.calls)
    trimmed = FILE.replace('cron = "0 2 * * *"', 'cron = "15 2 * * *"').split("[schedules.calendar-full]")[0]
    write(tmp_path, trimmed)
    applied = run(settings, "apply", path)
    assert applied.exit_code == 0, applied.body
    assert [c for c in qstash.calls[start:] if c[0] != "GET"] == [("DELETE", "/v2/schedules/safesync-calendar-full")]
    assert set(qstash.schedules) == {"safesync-backup-daily", "safesync-calendar-incremental"}
    assert applied.body["summary"] == "applied: 1 deleted; 2 unchanged"


@pytest.mark.parametrize("text", ["", '[defaults]\nbase_url = "${SAFESYNC_PUBLIC_URL}"\n'], ids=["empty file", "defaults only"])
def test_a_file_without_schedules_deletes_nothing_unless_told(qstash, settings, tmp_path, text):
    """An empty mount or a truncated file would delete every schedule —
    the backups and the status runs that would notice them gone. apply
    refuses, naming them; ``delete_all`` (``apply --delete-all``) does it."""
    path = write(tmp_path, FILE)
    run(settings, "apply", path)
    before = set(qstash.schedules)
    write(tmp_path, text)
    refused = run(settings, "apply", path)
    assert refused.status == 422 and "defines no schedule" in refused.body["error"], refused.body
    assert "safesync-backup-daily" in refused.body["error"] and "--delete-all" in refused.body["error"]
    assert set(qstash.schedules) == before and before
    assert run(settings, "plan", path).exit_code == 0  # plan shows the deletes, as it always did
    applied = run(settings, "apply", path, delete_all=True)
    assert applied.exit_code == 0 and not set(qstash.schedules) & before, applied.body


def test_body_and_retries_and_callback_changes_are_updates(qstash, settings, tmp_path):
    path = write(tmp_path, FILE)
    run(settings, "apply", path)
    write(
        tmp_path,
        FILE.replace('db = "prod"', 'db = "staging"')
        .replace("retries = 1", "retries = 2")
        .replace("alerts.example.test", "alerts2.example.test"),
    )
    plan = rows(run(settings, "plan", path))
    assert {k: r["change"] for k, r in plan.items()} == dict.fromkeys(plan, "update")
    assert "body:" in plan["safesync-backup-daily"]["notes"]
    assert "retries: 1 → 2" in plan["safesync-calendar-full"]["notes"]


def test_schedules_that_are_not_ours_are_never_touched(qstash, settings, tmp_path):
    qstash.seed("scd_user_own", "https://shop.example.org/cron/reports")
    qstash.seed("safesync-old-thing", "https://elsewhere.example.org/backup")  # our prefix, not our URL
    qstash.seed("scd_manual", f"{PUBLIC}/backup", body='{"action":"create","db":"prod"}')  # our URL, not our id
    foreign = {k: dict(v) for k, v in qstash.schedules.items()}
    path = write(tmp_path, FILE)

    plan = run(settings, "plan", path)
    assert rows(plan)["scd_manual"]["change"] == "unmanaged"
    assert "scd_user_own" not in rows(plan) and "safesync-old-thing" not in rows(plan)
    applied = run(settings, "apply", path)
    assert applied.exit_code == 0, applied.body
    assert all(method == "POST" for method, _ in qstash.changing_calls())
    for key, value in foreign.items():
        assert qstash.schedules[key] == value
    assert "1 unmanaged left alone" in applied.body["summary"]

    # Emptying the file (and saying so) deletes only our three, never the others.
    write(tmp_path, "[defaults]\n")
    run(settings, "apply", path, delete_all=True)
    assert set(qstash.schedules) == set(foreign)


def test_an_id_taken_by_a_foreign_destination_refuses_everything(qstash, settings, tmp_path):
    qstash.seed("safesync-backup-daily", "https://elsewhere.example.org/backup")
    answer = run(settings, "apply", write(tmp_path, FILE))
    assert answer.status == 422 and answer.exit_code == 1
    assert "safesync-backup-daily" in answer.body["error"] and "nothing changed" in answer.body["error"]
    assert qstash.changing_calls() == []
    assert qstash.schedules["safesync-backup-daily"]["destination"] == "https://elsewhere.example.org/backup"


def test_per_target_base_urls_and_ownership(qstash, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFESYNC_BACKUP_BASE_URL", "https://backup-abc-ew.a.run.app")
    path = write(tmp_path, FILE + '\n[targets]\nbackup = "${SAFESYNC_BACKUP_BASE_URL}"\n')
    run(settings, "apply", path)
    assert qstash.schedules["safesync-backup-daily"]["destination"] == "https://backup-abc-ew.a.run.app/backup"
    assert qstash.schedules["safesync-calendar-full"]["destination"] == f"{PUBLIC}/calendar_sync"
    # Dropping the backup entry deletes it: its destination is under a base URL of the file.
    write(tmp_path, FILE.split("[schedules.backup-daily]")[0] + '\n[targets]\nbackup = "${SAFESYNC_BACKUP_BASE_URL}"\n')
    run(settings, "apply", path, delete_all=True)  # the file is left with no schedule: said so
    assert "safesync-backup-daily" not in qstash.schedules


def test_qstash_failure_half_way_is_reported_and_rerun_converges(qstash, settings, tmp_path):
    path = write(tmp_path, FILE)
    run(settings, "apply", path)
    write(tmp_path, FILE.replace('"0 2 * * *"', '"1 2 * * *"').replace('"5 * * * *"', '"6 * * * *"'))
    qstash.fail_next = 500
    answer = run(settings, "apply", path)
    assert answer.status == 503 and answer.exit_code == 1
    assert "QStash update of safesync-backup-daily failed" in answer.body["error"]
    assert answer.body["detail"]["done"] == []
    assert sentinels.SECRETS["QSTASH_TOKEN"] not in json.dumps(answer.body)
    again = run(settings, "apply", path)
    assert again.exit_code == 0 and again.body["summary"] == "applied: 2 updated; 1 unchanged"
    assert run(settings, "apply", path).body["summary"] == "applied: nothing to change; 3 unchanged"


def test_bad_token_and_missing_settings_are_clear(qstash, settings, tmp_path, monkeypatch):
    path = write(tmp_path, FILE)
    monkeypatch.setenv("QSTASH_TOKEN", "wrong-token-123456")
    answer = run(settings, "plan", path)
    assert answer.status == 503 and "401" in answer.body["error"]
    assert "wrong-token-123456" not in json.dumps(answer.body)

    monkeypatch.delenv("QSTASH_TOKEN")
    answer = run(settings, "plan", path)
    assert answer.exit_code == 2 and "QSTASH_TOKEN is not set" in answer.body["error"]

    monkeypatch.delenv("SAFESYNC_PUBLIC_URL")
    answer = run(settings, "plan", path)
    assert answer.exit_code == 2 and "SAFESYNC_PUBLIC_URL is not set" in answer.body["error"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[schedules.x]\ntarget = "backup"\ncron = "0 2 * *"\n', "not a 5-field cron"),
        # each field within its range (crontab.guru, which the QStash docs point to): minute 0-59,
        # hour 0-23, day 1-31, month 1-12 or JAN-DEC, weekday 0-6 (7 = Sunday) or SUN-SAT
        ('[schedules.x]\ntarget = "backup"\ncron = "0 24 * * *"\n', "'0 24 * * *': hour 24 is not in 0-23"),
        ('[schedules.x]\ntarget = "backup"\ncron = "60 2 * * *"\n', "minute 60 is not in 0-59"),
        ('[schedules.x]\ntarget = "backup"\ncron = "0 2 0 * *"\n', "day of month 0 is not in 1-31"),
        ('[schedules.x]\ntarget = "backup"\ncron = "0 2 * 13 *"\n', "month 13 is not in 1-12"),
        ('[schedules.x]\ntarget = "backup"\ncron = "0 2 * * 8"\n', "day of week 8 is not in 0-7"),
        ('[schedules.x]\ntarget = "backup"\ncron = "a b c d e"\n', "minute 'a' is not a number"),
        ('[schedules.x]\ntarget = "backup"\ncron = "*/0 2 * * *"\n', "minute step '0' must be a whole number above 0"),
        ('[schedules.x]\ntarget = "backup"\ncron = "0 5-2 * * *"\n', "hour range 5-2 runs backwards"),
        ('[schedules.x]\ntarget = "backup"\ncron = "0 2 * FOO *"\n', "month 'FOO' is not a number"),
        ('[schedules.x]\ntarget = "backup"\ncron = "0,,5 2 * * *"\n', "minute '' is not a number"),
        ('[schedules.x]\ntarget = "bakup"\ncron = "0 2 * * *"\n', "schedules.x.target"),
        ('[schedules.Bad_Name]\ntarget = "backup"\ncron = "0 2 * * *"\n', "must be lowercase"),
        ('[schedules.x]\ntarget = "backup"\ncron = "0 2 * * *"\nretry = 3\n', "schedules.x.retry: unknown key"),
        ('[defaults]\nbase_url = "ftp://x"\n[schedules.x]\ntarget = "backup"\ncron = "0 2 * * *"\n', "not an http(s) URL"),
        ("[defaults\n", "not valid TOML"),
    ],
)
def test_bad_files_are_config_errors(qstash, settings, tmp_path, text, message):
    answer = run(settings, "plan", write(tmp_path, text))
    assert answer.exit_code == 2 and message in answer.body["error"], answer.body
    assert qstash.calls == []  # rejected before any QStash call


@pytest.mark.parametrize("cron", [
    "0 2 * * *", "*/15 * * * *", "0 9-17/2 * * MON-FRI", "30 3 1,15 * *", "0 0 * JAN,jul SUN", "0 0 * * 7",
    "CRON_TZ=Europe/Berlin 0 4 * * 1-5", "5 4 ? * ?", "0-59/5 0-23 1-31 1-12 0-6",
])
def test_valid_cron_expressions_pass(cron):
    check_cron(cron)


def test_cli_plan_and_the_shipped_schedules_file(qstash, settings, capsys, monkeypatch):
    monkeypatch.setenv("SAFESYNC_FAILURE_CALLBACK_URL", "https://alerts.example.test/f")
    shipped = REPO / "infra" / "schedules.toml"
    desires = load_schedules(shipped, {"SAFESYNC_PUBLIC_URL": PUBLIC})
    by_name = {d.name: d for d in desires.schedules}
    assert by_name["backup-daily"].cron == "0 2 * * *"
    assert by_name["backup-daily"].body == {"action": "create", "db": "prod"}
    assert by_name["backup-restore-drill"].body["restore_drill"] is True
    assert {by_name[f"calendar-{m}"].body["mode"] for m in ("incremental", "full", "cleanup")} == {"incremental", "full", "cleanup"}
    assert desires.warnings  # no failure callback configured in that environment

    code = cli.main(["schedules", "apply", "--file", str(shipped), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["summary"] == "applied: 7 created; 0 unchanged"
    assert code == cli.main(["schedules", "plan", "--file", str(shipped)])
    assert "nothing to change; 7 unchanged" in capsys.readouterr().out
    assert sentinels.SECRETS["QSTASH_TOKEN"] not in json.dumps(out)


def test_unset_per_target_url_falls_back_to_the_default_base(qstash, settings, tmp_path, monkeypatch):
    text = FILE + '\n[targets]\nbackup = "${SAFESYNC_BACKUP_BASE_URL:-}"\n'
    desires = load_schedules(write(tmp_path, text), {"SAFESYNC_PUBLIC_URL": PUBLIC})
    assert {d.destination for d in desires.schedules} == {f"{PUBLIC}/backup", f"{PUBLIC}/calendar_sync"}
    # Every target with its own URL: SAFESYNC_PUBLIC_URL is not needed at all.
    text = FILE + '\n[targets]\nbackup = "https://b.example.test"\ncalendar_sync = "https://c.example.test"\n'
    desires = load_schedules(write(tmp_path, text), {})
    assert desires.base_urls == ["https://b.example.test", "https://c.example.test"]


def test_shipped_bodies_are_accepted_by_their_targets():
    """Each schedule body of infra/schedules.toml passes its job's own body
    validation (a rejected body would fail every night with a 400)."""
    from safesync.functions.backup.http import _MODELS as BACKUP_BODIES
    from safesync.functions.calendar import CalendarBody
    from safesync.shared.http import validate_body

    from safesync.functions.status.http import _Body as StatusBody

    desires = load_schedules(REPO / "infra" / "schedules.toml", {"SAFESYNC_PUBLIC_URL": PUBLIC})
    assert {d.target for d in desires.schedules} == {"backup", "calendar_sync", "status"}
    for d in desires.schedules:
        model = BACKUP_BODIES[d.body["action"]] if d.target == "backup" else CalendarBody if d.target == "calendar_sync" else StatusBody
        validate_body(model, d.body)  # raises BadRequest naming the field
