"""Calendar two-way sync against the fake Google Calendar (real client library,
real PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from safesync.functions.calendar.crypto import Cipher
from safesync.functions.calendar.mapping import field_hashes, from_google, from_row
from safesync.functions.calendar.sync import run_sync
from safesync.shared.errors import AlreadyRunning
from tests.fake_calendar.fixtures import cal_settings, fake  # noqa: F401
from tests.fake_calendar.helpers import NOW, all_day, app_insert, app_update, audit, connect, event, gid, rows, timed

CIPHER = Cipher.from_env()


def sync(settings, mode="incremental", **kw):
    answer = run_sync(settings, mode, **kw)
    assert answer.status == 200, answer.body
    return answer.body


def assert_converged(fake, settings, cal="primary"):
    """Every live Google event in the DB with the same content, and vice versa."""
    remote = fake.store.live(cal)
    local = rows(settings)
    for event_id, ev in remote.items():
        if ev.get("status") == "cancelled":
            if event_id in local and not ev.get("recurringEventId"):
                assert local[event_id]["deleted"], event_id
            continue
        assert event_id in local, f"{event_id} missing locally"
        row = local[event_id]
        assert not row["deleted"] and row["sync_status"] == "synced", (event_id, row["sync_status"], row["sync_error"])
        assert field_hashes(from_row(row, CIPHER)) == field_hashes(from_google(ev)), event_id
        assert row["etag"] == ev["etag"]
    for event_id, row in local.items():
        if not row["deleted"] and row["event_status"] != "cancelled":
            assert event_id in remote and remote[event_id].get("status") != "cancelled", f"{event_id} only local"


def utc_key(moment):
    """An original start as rows and the fake key it (a UTC instant)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(fake, n, *, start=None, prefix="e"):
    start = start or NOW + timedelta(days=1)
    for i in range(n):
        fake.store.put_event("primary", event(gid(i, prefix), f"Event {i}", start + timedelta(hours=3 * i)))


def put_standup(fake, days: int = 10) -> datetime:
    """A daily 09:00 Berlin series ``series00001`` on Google, starting
    tomorrow; its first start."""
    first = (NOW + timedelta(days=1)).replace(hour=9, minute=0, second=0)
    fake.store.put_event("primary", {"id": "series00001", "summary": "Standup", "recurrence": [f"RRULE:FREQ=DAILY;COUNT={days}"],
                                     **timed(first, 0.5, "Europe/Berlin")})
    return first


def test_full_sync_converges_and_respects_the_window(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 12)
    fake.store.put_event("primary", event(gid(1, "far"), "Next year", NOW + timedelta(days=200)))
    fake.store.put_event("primary", {"id": gid(1, "alldai"), "summary": "Offsite", **all_day((NOW + timedelta(days=3)).date(), 2)})
    body = sync(settings, "full")
    assert body["details"]["api_calls"]["list"] == 1
    local = rows(settings)
    assert gid(1, "far") not in local  # outside the 90-day window
    assert len(local) == 13
    assert local[gid(1, "alldai")]["start_date"].isoformat() == (NOW + timedelta(days=3)).date().isoformat()
    assert local[gid(1, "alldai")]["start_at"] is None
    fake.store.remove("primary", gid(1, "far"))
    assert_converged(fake, settings)
    with connect(settings) as conn:
        token = conn.execute("select sync_token from calendar.sync_state").fetchone()["sync_token"]
    assert token


def test_incremental_after_ten_edits_is_one_list_call_and_changes_exactly_those_rows(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 30)
    sync(settings, "full")
    before = {k: (r["etag"], r["updated_at"], r["title"]) for k, r in rows(settings).items()}
    edited = [gid(i) for i in range(0, 30, 3)]
    for event_id in edited:
        fake.store.edit("primary", event_id, {"summary": f"edited {event_id}"})
    fake.reset_counts()
    body = sync(settings, "incremental")
    assert fake.calls["list"] == 1 and fake.calls["batch"] == 0
    after = {k: (r["etag"], r["updated_at"], r["title"]) for k, r in rows(settings).items()}
    changed = {k for k in after if after[k] != before[k]}
    assert changed == set(edited)
    assert all(after[k][2] == f"edited {k}" for k in edited)
    assert body["details"]["counts"]["updated"] == 10
    assert_converged(fake, settings)


def test_410_falls_back_to_full_sync_without_duplicates_and_keeps_local_work(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 8)
    sync(settings, "full")
    pending = app_insert(settings, title="local, not pushed yet", start=NOW + timedelta(days=2), status="pending_sync")
    local_only = app_insert(settings, title="private", start=NOW + timedelta(days=2), status="local_only")
    fake.store.remove("primary", gid(2))
    fake.store.edit("primary", gid(3), {"summary": "changed while token expired"})
    fake.store.expire_tokens("primary")
    body = sync(settings, "incremental")
    assert body["details"]["counts"]["token_expired"] == 1
    assert body["details"]["counts"]["full_syncs"] == 1
    local = rows(settings)
    with connect(settings) as conn:
        dupes = conn.execute(
            "select google_event_id from calendar.events where google_event_id is not null group by 1 having count(*) > 1"
        ).fetchall()
        survivors = {str(r["id"]): r for r in conn.execute("select * from calendar.events where id = any(%s::uuid[])", [[pending, local_only]])}
    assert not dupes
    assert local[gid(2)]["deleted"] and local[gid(3)]["title"] == "changed while token expired"
    assert survivors[local_only]["sync_status"] == "local_only" and not survivors[local_only]["deleted"]
    assert survivors[pending]["sync_status"] == "synced"  # pushed after the resync
    assert survivors[pending]["google_event_id"] in fake.store.live("primary")
    assert any(a["action"] == "sync token expired: full sync" for a in audit(settings, "state"))
    assert_converged(fake, settings)


def test_full_sync_never_deletes_on_absence_alone(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 6)
    sync(settings, "full")
    # Changes incremental never reported (Google's listings are not perfect):
    # an event moved out of the window is absent from the listing, alive, and
    # kept; one gone without a trace is deleted once its id answers 404.
    fake.store.calendars["primary"][gid(4)].update(timed(NOW + timedelta(days=150)), etag='"moved-silently"')
    del fake.store.calendars["primary"][gid(5)]
    fake.reset_counts()
    body = sync(settings, "full")
    local = rows(settings)
    assert not local[gid(4)]["deleted"] and local[gid(4)]["start_at"] == NOW + timedelta(days=150)
    assert local[gid(5)]["deleted"]
    assert fake.batch_items["get"] == 2  # only the two absent rows were checked, by id
    assert body["details"]["counts"]["absent_checked"] == 2


def test_mass_deletion_and_empty_listing_are_refused_unless_forced(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 20)
    sync(settings, "full")
    for i in range(10):
        fake.store.remove("primary", gid(i))
    answer = run_sync(settings, "incremental")
    assert answer.status == 422 and "would delete 10 of 20" in answer.body["error"]
    assert sum(r["deleted"] for r in rows(settings).values()) == 0  # nothing written
    for i in range(10, 20):
        fake.store.remove("primary", gid(i))
    fake.store.calendars["primary"].clear()  # the calendar suddenly lists empty
    answer = run_sync(settings, "full")
    assert answer.status == 422 and "listed empty" in answer.body["error"]
    assert sum(r["deleted"] for r in rows(settings).values()) == 0
    answer = run_sync(settings, "full", force=True)
    assert answer.status == 200, answer.body
    assert sum(r["deleted"] for r in rows(settings).values()) == 20


def test_push_inserts_patches_and_deletes_in_batches(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    for i in range(60):
        app_insert(settings, title=f"local {i}", start=NOW + timedelta(days=5, hours=i))
    app_update(settings, gid(0), title="renamed here")
    app_update(settings, gid(1), deleted=True)
    fake.reset_counts()
    body = sync(settings, "incremental")
    assert fake.calls["batch"] == 2  # 62 writes, 50 per batch
    assert fake.batch_items["post"] == 60 and fake.batch_items["patch"] == 1 and fake.batch_items["delete"] == 1
    assert body["details"]["counts"]["pushed"] == 62
    remote = fake.store.live("primary")
    assert remote[gid(0)]["summary"] == "renamed here"
    assert remote[gid(1)]["status"] == "cancelled"
    assert sum(1 for e in remote.values() if e.get("summary", "").startswith("local ")) == 60
    # Our own writes come back in the next incremental as echoes, not remote edits.
    before = {k: r["updated_at"] for k, r in rows(settings).items()}
    fake.reset_counts()
    body = sync(settings, "incremental")
    assert body["details"]["counts"]["echoes"] == 61  # 60 inserts + 1 patch; the deletion is already applied
    assert {k: r["updated_at"] for k, r in rows(settings).items()} == before
    assert_converged(fake, settings)


def test_retried_insert_answered_409_counts_as_done(fake, cal_settings):
    settings = cal_settings()
    sync(settings, "full")
    row_id = app_insert(settings, title="twice", start=NOW + timedelta(days=1))
    with connect(settings) as conn:  # a previous run assigned the id and the insert landed, answer lost
        conn.execute("update calendar.events set google_event_id = 'abc0000000001' where id = %s", [row_id])
    fake.store.insert("primary", {"id": "abc0000000001", "summary": "twice", **timed(NOW + timedelta(days=1))})
    sync(settings, "incremental")
    local = rows(settings)["abc0000000001"]
    assert local["sync_status"] == "synced"
    assert sum(1 for e in fake.store.live("primary").values() if e.get("summary") == "twice") == 1
    assert_converged(fake, settings)


def test_both_sides_edited_merge_fields_and_log_conflicts(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    # Event 0: different fields on each side → both survive (field-level merge).
    fake.store.edit("primary", gid(0), {"location": "Room 2"})
    app_update(settings, gid(0), title="local title")
    # Event 1: same field both sides: the later edit wins (here: local, edited after Google).
    fake.store.edit("primary", gid(1), {"summary": "google title"})
    app_update(settings, gid(1), title="local wins")
    # Event 2: same content on both sides → not a conflict.
    fake.store.edit("primary", gid(2), {"summary": "same"})
    app_update(settings, gid(2), title="same")
    sync(settings, "incremental")
    remote = fake.store.live("primary")
    assert (remote[gid(0)]["summary"], remote[gid(0)]["location"]) == ("local title", "Room 2")
    assert remote[gid(1)]["summary"] == "local wins"
    assert remote[gid(2)]["summary"] == "same"
    conflicts = audit(settings, "conflict")
    by_event = {c["google_event_id"]: c for c in conflicts}
    assert set(by_event) == {gid(0), gid(1)}
    assert by_event[gid(0)]["detail"]["kind"] == "merged"
    assert by_event[gid(1)]["detail"]["overlapping"] == ["title"] and by_event[gid(1)]["detail"]["winner"] == "local"
    # The overwritten value is in the audit, so the losing edit can be recovered.
    assert by_event[gid(1)]["detail"]["lost"] == {"title": "google title"}
    assert_converged(fake, settings)


def test_412_on_push_merges_with_the_newer_google_version(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 1)
    sync(settings, "full")
    app_update(settings, gid(0), description="agenda from the app")
    # Google changes after our pull but before our push: the patch gets 412.
    original_list = fake.store.list

    def list_then_edit(cal, params):
        result = original_list(cal, params)
        if "syncToken" in params:
            fake.store.edit("primary", gid(0), {"summary": "moved by organiser", **timed(NOW + timedelta(days=2))})
        return result

    fake.store.list = list_then_edit
    body = sync(settings, "incremental")
    fake.store.list = original_list
    assert body["details"]["counts"]["precondition_failed"] == 1
    ev = fake.store.live("primary")[gid(0)]
    assert ev["summary"] == "moved by organiser" and ev["description"] == "agenda from the app"
    assert any("412" in c["action"] for c in audit(settings, "conflict"))
    sync(settings, "incremental")
    assert_converged(fake, settings)


def test_remote_deletion_wins_over_local_edit_and_is_logged(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 6)
    sync(settings, "full")
    app_update(settings, gid(0), title="edited locally")
    fake.store.remove("primary", gid(0))
    sync(settings, "incremental")
    assert rows(settings)[gid(0)]["deleted"]
    assert [c["action"] for c in audit(settings, "conflict")] == ["remote deletion wins over local edit"]


def test_recurring_series_with_moved_and_cancelled_occurrence_round_trips(fake, cal_settings):
    settings = cal_settings()
    first = put_standup(fake)
    occ2 = fake.store.instance_id("primary", "series00001", utc_key(first + timedelta(days=2)))
    occ4 = fake.store.instance_id("primary", "series00001", utc_key(first + timedelta(days=4)))
    fake.store.edit("primary", occ2, {"summary": "Standup (moved)", **timed(first + timedelta(days=2, hours=3), 0.5, "Europe/Berlin")})
    fake.store.remove("primary", occ4)
    sync(settings, "full")
    local = rows(settings)
    assert local["series00001"]["recurrence"] == ["RRULE:FREQ=DAILY;COUNT=10"]
    moved, cancelled = local[occ2], local[occ4]
    assert moved["recurring_event_id"] == "series00001" and moved["title"] == "Standup (moved)"
    assert cancelled["event_status"] == "cancelled" and not cancelled["deleted"]  # hides the occurrence, kept
    # Local edits to the series' occurrences go back to Google.
    occ6 = (first + timedelta(days=6)).astimezone(timezone.utc)
    app_insert(settings, title="Standup", start=occ6, hours=0.5, tz="Europe/Berlin", recurring_event_id="series00001",
               original_start=occ6.strftime("%Y-%m-%dT%H:%M:%SZ"), event_status="cancelled")
    app_update(settings, occ2, title="Standup (moved twice)")
    sync(settings, "incremental")
    remote = fake.store.live("primary")
    occ6_id = fake.store.instance_id("primary", "series00001", utc_key(occ6))
    assert remote[occ6_id]["status"] == "cancelled"
    assert remote[occ2]["summary"] == "Standup (moved twice)"
    sync(settings, "incremental")
    assert_converged(fake, settings)
    # Deleting the series takes its exceptions along.
    fake.store.remove("primary", "series00001")
    sync(settings, "incremental")
    local = rows(settings)
    assert all(r["deleted"] for k, r in local.items() if k.startswith("series00001"))


def test_local_series_with_exceptions_reaches_google(fake, cal_settings):
    settings = cal_settings()
    sync(settings, "full")
    first = (NOW + timedelta(days=2)).replace(hour=15, minute=0, second=0)
    master = "a" * 8 + "b" * 8
    app_insert(settings, title="Weekly review", start=first, tz="America/New_York", google_event_id=master,
               recurrence=["RRULE:FREQ=WEEKLY;COUNT=6"])
    week2 = first + timedelta(weeks=1)
    app_insert(settings, title="Weekly review (late)", start=week2 + timedelta(hours=2), tz="America/New_York",
               recurring_event_id=master, original_start=week2.strftime("%Y-%m-%dT%H:%M:%SZ"))
    week3 = first + timedelta(weeks=2)
    app_insert(settings, title="Weekly review", start=week3, tz="America/New_York",
               recurring_event_id=master, original_start=week3.strftime("%Y-%m-%dT%H:%M:%SZ"), event_status="cancelled")
    sync(settings, "incremental")
    remote = fake.store.live("primary")
    assert remote[master]["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=6"]
    late = remote[fake.store.instance_id("primary", master, utc_key(week2))]
    assert late["summary"] == "Weekly review (late)" and late["recurringEventId"] == master
    assert remote[fake.store.instance_id("primary", master, utc_key(week3))]["status"] == "cancelled"
    sync(settings, "incremental")
    assert_converged(fake, settings)


@pytest.mark.parametrize("tz", ["Pacific/Honolulu", "Pacific/Tongatapu"])  # UTC−10 and UTC+13
def test_all_day_events_keep_their_dates_in_far_time_zones(fake, cal_settings, tz):
    settings = cal_settings()
    day = (NOW + timedelta(days=10)).date()
    fake.store.put_event("primary", {"id": "holidai0001", "summary": "Holiday", **all_day(day, 1, tz)})
    late = (NOW + timedelta(days=11)).replace(hour=23, minute=30)
    fake.store.put_event("primary", {"id": "latenight01", "summary": "Late", **timed(late, 1, tz)})
    sync(settings, "full")
    local = rows(settings)
    assert (local["holidai0001"]["start_date"], local["holidai0001"]["end_date"]) == (day, day + timedelta(days=1))
    assert local["holidai0001"]["start_at"] is None and local["holidai0001"]["time_zone"] == tz
    assert local["latenight01"]["start_at"] == late
    app_insert(settings, title="Local day off", day=day + timedelta(days=1), tz=tz)
    app_update(settings, "holidai0001", end_date=day + timedelta(days=2))
    sync(settings, "incremental")
    remote = fake.store.live("primary")
    pushed = next(e for e in remote.values() if e.get("summary") == "Local day off")
    assert pushed["start"] == {"date": (day + timedelta(days=1)).isoformat(), "timeZone": tz}
    assert pushed["end"]["date"] == (day + timedelta(days=2)).isoformat()
    assert remote["holidai0001"]["end"]["date"] == (day + timedelta(days=2)).isoformat()
    assert remote["latenight01"]["start"]["dateTime"].startswith(late.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M"))
    sync(settings, "incremental")
    assert_converged(fake, settings)


def test_switching_between_all_day_and_timed_in_the_app_reaches_google(fake, cal_settings):
    """events.patch merges a nested object into the one Google holds
    (performance guide, "Patch semantics": the data sent "is merged into
    the data for the parent object"; null deletes a field), and the fake
    now does too. A patch sending start {"dateTime", "timeZone"} over an
    all-day event left its "date" in place, so Google kept the event
    all-day and the next pull reverted the app's change; the other way a
    stale dateTime and zone stayed. Now start/end name every sub-field,
    null for the ones the event no longer has."""
    settings = cal_settings()
    day = (NOW + timedelta(days=5)).date()
    fake.store.put_event("primary", {"id": "alldai00001", "summary": "Offsite", **all_day(day, 1, "Europe/Berlin")})
    fake.store.put_event("primary", {"id": "timed000001", "summary": "Call", **timed(NOW + timedelta(days=6), 1, "Europe/Berlin")})
    sync(settings, "incremental")
    meeting = (NOW + timedelta(days=5)).replace(hour=9, minute=0, second=0, microsecond=0)
    app_update(settings, "alldai00001", all_day=False, start_date=None, end_date=None,
               start_at=meeting, end_at=meeting + timedelta(hours=2), time_zone=None)
    app_update(settings, "timed000001", all_day=True, start_at=None, end_at=None, time_zone=None,
               start_date=day + timedelta(days=1), end_date=day + timedelta(days=2))
    body = sync(settings, "incremental")
    assert body["details"]["counts"]["pushed"] == 2, body
    remote = fake.store.live("primary")
    assert set(remote["alldai00001"]["start"]) == {"dateTime"} and set(remote["alldai00001"]["end"]) == {"dateTime"}
    assert remote["timed000001"]["start"] == {"date": (day + timedelta(days=1)).isoformat()}
    assert remote["timed000001"]["end"] == {"date": (day + timedelta(days=2)).isoformat()}
    sync(settings, "incremental")
    local = rows(settings)
    assert (local["alldai00001"]["all_day"], local["alldai00001"]["start_at"]) == (False, meeting)
    assert (local["timed000001"]["all_day"], local["timed000001"]["start_date"]) == (True, day + timedelta(days=1))
    assert_converged(fake, settings)


def test_two_syncs_started_together_one_waits_or_409_and_no_duplicates(fake, cal_settings):
    settings = cal_settings()
    sync(settings, "full")  # creates the tables
    seed(fake, 10)
    for i in range(5):
        app_insert(settings, title=f"local {i}", start=NOW + timedelta(days=3, hours=i))
    fake.latency = 0.05
    answers = []

    def one():
        try:
            answers.append(run_sync(settings, "incremental").status)
        except AlreadyRunning:  # the HTTP layer answers it 409
            answers.append(409)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fake.latency = 0
    assert sorted(answers) in ([200, 200], [200, 409])
    with connect(settings) as conn:
        assert conn.execute("select count(*) as n from calendar.events").fetchone()["n"] == 15
    remote = fake.store.live("primary")
    assert sum(1 for e in remote.values() if e.get("summary", "").startswith("local ")) == 5
    assert_converged(fake, settings)


def test_conference_data_is_encrypted_at_rest(fake, cal_settings):
    settings = cal_settings()
    conference = {"conferenceId": "abc-defg-hij", "entryPoints": [{"entryPointType": "video", "uri": "https://meet.google.com/abc-defg-hij"}]}
    fake.store.put_event("primary", event("meet0000001", "Call", NOW + timedelta(days=1), conferenceData=conference))
    sync(settings, "full")
    row = rows(settings)["meet0000001"]
    assert row["meeting_id"] == "abc-defg-hij"
    assert b"meet.google.com" not in bytes(row["conference_data"])
    assert CIPHER.decrypt(row["conference_data"]) == conference


def test_a_meeting_removed_in_the_app_is_removed_on_google(fake, cal_settings):
    """The push left conferenceData out of the patch when the row had none,
    so Google kept the meeting, the sync wrote it back over the app's
    removal and reported the row synced. A patch clears a field sent as
    null (Google's patch semantics); a meeting Google added meanwhile still
    survives an app edit of another field (412, three-way merge)."""
    settings = cal_settings()
    conference = {"conferenceId": "abc-defg-hij", "entryPoints": [{"entryPointType": "video", "uri": "https://meet.google.com/abc-defg-hij"}]}
    fake.store.put_event("primary", event("meet0000001", "Call", NOW + timedelta(days=1), conferenceData=conference))
    fake.store.put_event("primary", event("meet0000002", "Chat", NOW + timedelta(days=2)))
    sync(settings, "full")
    app_update(settings, "meet0000001", conference_data=None, meeting_id=None)
    app_update(settings, "meet0000002", title="Chat (moved)")
    fake.store.edit("primary", "meet0000002", {"conferenceData": conference})  # added on Google meanwhile
    sync(settings, "incremental")
    remote, local = fake.store.live("primary"), rows(settings)
    assert "conferenceData" not in remote["meet0000001"]
    assert local["meet0000001"]["conference_data"] is None and local["meet0000001"]["sync_status"] == "synced"
    assert remote["meet0000002"]["conferenceData"] == conference and remote["meet0000002"]["summary"] == "Chat (moved)"
    assert CIPHER.decrypt(local["meet0000002"]["conference_data"]) == conference
    assert_converged(fake, settings)


def test_an_app_made_occurrence_keeps_the_meeting_of_its_series(fake, cal_settings):
    """Since conferenceData is always sent (null removes it), an occurrence
    the app makes (it cannot write conference data: encrypted at rest) must
    not remove its instance's Meet link: no conference on a row that never
    synced is not a removal."""
    settings = cal_settings()
    first = put_standup(fake)
    conference = {"conferenceId": "abc-defg-hij"}
    fake.store.edit("primary", "series00001", {"conferenceData": conference})
    sync(settings, "full")
    moment = first + timedelta(days=3)
    app_insert(settings, title="Standup (moved)", start=moment + timedelta(hours=1), hours=0.5, tz="Europe/Berlin",
               recurring_event_id="series00001", original_start=utc_key(moment))
    sync(settings, "incremental")
    instance = fake.store.live("primary")[fake.store.instance_id("primary", "series00001", utc_key(moment))]
    assert instance["summary"] == "Standup (moved)" and instance["conferenceData"] == conference
    assert_converged(fake, settings)


def test_migrations_are_idempotent_and_a_changed_one_is_refused(make_db, monkeypatch):
    import psycopg as pg

    from safesync.functions.calendar import schema
    from safesync.shared.errors import JobFailed

    url = make_db()
    with pg.connect(url, autocommit=True) as conn:
        assert schema.migrate(conn) == [v for v, _, _ in schema.MIGRATIONS]
        assert schema.migrate(conn) == []
        assert schema.installed(conn)
        changed = [(v, n, sql + "\n-- edited") if v == 2 else (v, n, sql) for v, n, sql in schema.MIGRATIONS]
        monkeypatch.setattr(schema, "MIGRATIONS", changed)
        with pytest.raises(JobFailed, match="migration 2"):
            schema.migrate(conn)


def _held_far_away(fake, settings):
    """Two synced events that Google then moved to +120 d (outside every window)."""
    far = NOW + timedelta(days=120)
    for n in (1, 2):
        fake.store.put_event("primary", event(gid(n, "far"), f"Far {n}", NOW + timedelta(days=5 + n)))
    sync(settings, "full")
    for n in (1, 2):
        fake.store.edit("primary", gid(n, "far"), timed(far + timedelta(hours=n)))
    sync(settings, "incremental")  # held rows follow their events wherever they go
    local = rows(settings)
    assert [local[gid(n, "far")]["start_at"] for n in (1, 2)] == [far + timedelta(hours=n) for n in (1, 2)]


def stored_token(settings):
    with connect(settings) as conn:
        return conn.execute("select sync_token from calendar.sync_state where calendar_id = 'primary'").fetchone()["sync_token"]


def test_changes_outside_the_window_between_an_incremental_and_a_full_reach_the_table(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 3)
    _held_far_away(fake, settings)
    fake.store.edit("primary", gid(1, "far"), {"summary": "Far 1, renamed"})
    fake.store.remove("primary", gid(2, "far"))
    sync(settings, "full")
    assert fake.store.token_window("primary", stored_token(settings)) is None  # never a windowed listing's token
    sync(settings, "incremental")
    local = rows(settings)
    assert local[gid(1, "far")]["title"] == "Far 1, renamed"
    assert local[gid(2, "far")]["deleted"]
    assert fake.store.token_window("primary", stored_token(settings)) is None
    assert_converged(fake, settings)


def test_410_drops_the_token_at_once_and_resyncs_every_held_row(fake, cal_settings, monkeypatch):
    from tests.fake_calendar import ApiError

    settings = cal_settings()
    seed(fake, 4)
    _held_far_away(fake, settings)
    pending = app_insert(settings, title="local, not pushed yet", start=NOW + timedelta(days=200), status="pending_sync")
    fake.store.edit("primary", gid(1, "far"), {"summary": "edited while the token expired"})
    fake.store.remove("primary", gid(2, "far"))
    fake.store.expire_tokens("primary")
    # The unbounded listing fails this time: the dead token must not survive the failure.
    unbounded = fake.store.list

    def down(cal, params):
        if not {"syncToken", "timeMin", "timeMax"} & set(params):
            raise ApiError(503, "backendError", "Backend Error")
        return unbounded(cal, params)

    monkeypatch.setattr(fake.store, "list", down)
    assert run_sync(settings, "incremental").status == 503
    assert stored_token(settings) is None
    monkeypatch.setattr(fake.store, "list", unbounded)
    fake.reset_counts()
    body = sync(settings, "incremental")
    assert fake.calls["list"] == 1  # no token: straight to the unbounded listing
    local = rows(settings)
    assert local[gid(1, "far")]["title"] == "edited while the token expired"
    assert local[gid(2, "far")]["deleted"]  # outside every window, still checked by id and found gone
    assert body["details"]["counts"]["absent_checked"] == 1
    with connect(settings) as conn:
        survivor = conn.execute("select * from calendar.events where id = %s", [pending]).fetchone()
    assert survivor["sync_status"] == "synced" and not survivor["deleted"]
    assert fake.store.token_window("primary", stored_token(settings)) is None
    assert_converged(fake, settings)


def test_app_made_series_without_zone_goes_in_the_calendars_zone_and_exceptions_use_googles_ids(fake, cal_settings):
    settings = cal_settings()
    fake.store.time_zone = "Europe/Berlin"
    sync(settings, "full")  # learns the calendar's zone from events.list
    first = (NOW + timedelta(days=2)).replace(hour=8, minute=0, second=0)
    master = "c" * 16
    app_insert(settings, title="Daily", start=first, google_event_id=master, recurrence=["RRULE:FREQ=DAILY;COUNT=5"])  # no zone
    second = first + timedelta(days=1)
    app_insert(settings, title="Daily (late)", start=second + timedelta(hours=1), recurring_event_id=master, original_start=utc_key(second))
    nowhere = first + timedelta(days=1, minutes=30)  # no occurrence starts then
    stray = app_insert(settings, title="Daily (stray)", start=nowhere, recurring_event_id=master, original_start=utc_key(nowhere))
    sync(settings, "incremental")
    remote = fake.store.live("primary")
    assert remote[master]["start"]["timeZone"] == "Europe/Berlin"
    late = remote[fake.store.instance_id("primary", master, utc_key(second))]
    assert late["summary"] == "Daily (late)"
    with connect(settings) as conn:
        row = conn.execute("select * from calendar.events where id = %s", [stray]).fetchone()
    assert not row["deleted"] and row["sync_status"] == "pending_sync" and "noSuchOccurrence" in row["sync_error"]
    assert row["google_event_id"] is None  # never a made-up id


def test_start_and_end_zones_survive_a_round_trip(fake, cal_settings):
    settings = cal_settings()
    start = (NOW + timedelta(days=3)).replace(minute=0, second=0)
    fake.store.put_event("primary", {
        "id": "flight00001", "summary": "Flight",
        "start": {"dateTime": start.astimezone(ZoneInfo("Europe/Berlin")).isoformat(), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": (start + timedelta(hours=9)).astimezone(ZoneInfo("America/New_York")).isoformat(), "timeZone": "America/New_York"},
    })
    sync(settings, "full")
    row = rows(settings)["flight00001"]
    assert (row["time_zone"], row["end_time_zone"]) == ("Europe/Berlin", "America/New_York")
    app_update(settings, "flight00001", title="Flight (seat 12A)")
    sync(settings, "incremental")
    remote = fake.store.live("primary")["flight00001"]
    assert remote["summary"] == "Flight (seat 12A)"
    assert (remote["start"]["timeZone"], remote["end"]["timeZone"]) == ("Europe/Berlin", "America/New_York")
    sync(settings, "incremental")
    assert_converged(fake, settings)


def test_an_app_edit_made_while_a_pull_runs_is_not_overwritten(fake, cal_settings, monkeypatch):
    """The pull plans from rows read before its Google calls and writes
    later: an app edit in between used to be overwritten with Google's
    version and marked synced, lost without a trace."""
    from safesync.functions.calendar.pull import Puller

    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    fake.store.edit("primary", gid(1), {"location": "Room 9"})
    planned = Puller._guard

    def app_edits_then_guard(self, *args, **kwargs):  # the app writes between planning and writing
        app_update(settings, gid(1), title="edited during the sync")
        return planned(self, *args, **kwargs)

    monkeypatch.setattr(Puller, "_guard", app_edits_then_guard)
    body = sync(settings, "incremental")
    assert body["details"]["counts"]["edited_during_sync"] == 1
    assert any("edited in the app during the sync" in w for w in body["warnings"])
    remote = fake.store.live("primary")[gid(1)]
    assert (remote["summary"], remote["location"]) == ("edited during the sync", "Room 9")  # both edits kept
    assert any(a["action"].startswith("edited in the app during the sync") for a in audit(settings, "conflict"))
    monkeypatch.setattr(Puller, "_guard", planned)
    sync(settings, "incremental")
    assert_converged(fake, settings)


def test_an_app_edit_made_while_a_412_is_merged_is_not_overwritten(fake, cal_settings, monkeypatch):
    """After a 412 the push merges the row it read at the start of the run;
    writing that merge used to overwrite an app edit made since."""
    from safesync.functions.calendar.pull import Puller
    from safesync.functions.calendar.push import Pusher

    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    app_update(settings, gid(1), title="first app edit")
    fake.store.edit("primary", gid(1), {"location": "Room 9"})  # the push meets 412
    resolve, incremental = Pusher._resolve, Puller.incremental

    def app_edits_then_resolve(self, op, remote):
        app_update(settings, gid(1), description="second app edit")
        return resolve(self, op, remote)

    monkeypatch.setattr(Pusher, "_resolve", app_edits_then_resolve)
    monkeypatch.setattr(Puller, "incremental", lambda self: "incremental")  # this run only pushes
    assert sync(settings, "incremental")["details"]["counts"]["edited_during_push"] == 1
    assert rows(settings)[gid(1)]["description"] == "second app edit"
    monkeypatch.setattr(Pusher, "_resolve", resolve)
    monkeypatch.setattr(Puller, "incremental", incremental)
    sync(settings, "incremental")
    remote = fake.store.live("primary")[gid(1)]
    assert (remote["summary"], remote.get("description"), remote.get("location")) == ("first app edit", "second app edit", "Room 9")
    assert_converged(fake, settings)


def test_a_series_deleted_on_google_says_which_local_occurrence_changes_it_dropped(fake, cal_settings):
    """Deleting a series deletes its occurrences; an occurrence the app made
    (not on Google yet) was deleted and marked synced without any audit."""
    settings = cal_settings()
    first = put_standup(fake)
    sync(settings, "full")
    occ6 = (first + timedelta(days=6)).astimezone(timezone.utc)
    made = app_insert(settings, title="Standup (app-made)", start=occ6, hours=0.5, tz="Europe/Berlin",
                      recurring_event_id="series00001", original_start=utc_key(occ6))
    fake.store.remove("primary", "series00001")
    body = sync(settings, "incremental")
    with connect(settings) as conn:
        row = conn.execute("select * from calendar.events where id = %s", [made]).fetchone()
    assert row["deleted"]  # the series is gone: so is its occurrence, as the rule says ...
    [entry] = [a for a in audit(settings, "conflict") if str(a["event_id"]) == made]  # ... and it is said
    assert entry["action"].startswith("remote deletion of the series") and entry["detail"]["lost_local_edit"] is True
    assert body["details"]["counts"]["conflicts"] == 1


def test_an_id_already_used_by_another_google_event_is_never_overwritten(fake, cal_settings):
    """An app row whose chosen id another Google event already holds (here one
    outside the synced window): the insert's 409 was taken for "our retried
    insert landed" and that event was patched over with the row's content."""
    settings = cal_settings()
    fake.store.put_event("primary", event("abc00001", "Board meeting", NOW + timedelta(days=200), description="agenda"))
    sync(settings, "full")
    assert "abc00001" not in rows(settings)  # outside the window: not held
    app_insert(settings, title="Dentist", start=NOW + timedelta(days=3), google_event_id="abc00001")
    body = sync(settings, "incremental")
    remote = fake.store.live("primary")["abc00001"]
    assert (remote["summary"], remote["description"]) == ("Board meeting", "agenda")  # untouched
    row = rows(settings)["abc00001"]
    assert row["title"] == "Dentist" and row["sync_status"] == "pending_sync" and "idCollision" in row["sync_error"]
    assert body["ok"] is False


def test_a_retried_insert_answered_409_is_recognised_by_its_row_marker(fake, cal_settings, monkeypatch):
    """Our insert landed, its answer was lost, and someone edited the event
    on Google before the retry: the 409's event carries the row's id in its
    private extended property, so it is merged (not failed, not overwritten)."""
    from safesync.functions.calendar.pull import Puller
    from safesync.functions.calendar.push import ROW_MARKER

    settings = cal_settings()
    sync(settings, "full")
    row_id = app_insert(settings, title="planning", start=NOW + timedelta(days=1))
    with connect(settings) as conn:  # the earlier attempt: id assigned, insert landed
        conn.execute("update calendar.events set google_event_id = 'abc0000000002' where id = %s", [row_id])
    fake.store.insert("primary", {"id": "abc0000000002", "summary": "planning", **timed(NOW + timedelta(days=1)),
                                  "extendedProperties": {"private": {ROW_MARKER: row_id}}})
    fake.store.edit("primary", "abc0000000002", {"location": "Room 2"})
    monkeypatch.setattr(Puller, "incremental", lambda self: "incremental")  # the retry comes before any pull
    body = sync(settings, "incremental")
    assert body["ok"] is True
    remote = fake.store.live("primary")["abc0000000002"]
    assert (remote["summary"], remote["location"]) == ("planning", "Room 2")
    assert rows(settings)["abc0000000002"]["sync_status"] == "synced"
    assert any(a["action"].startswith("insert answered 409") for a in audit(settings, "state"))
    # And a plain insert carries the marker for next time.
    new_id = app_insert(settings, title="fresh", start=NOW + timedelta(days=2))
    sync(settings, "incremental")
    [fresh] = [e for e in fake.store.live("primary").values() if e.get("summary") == "fresh"]
    assert fresh["extendedProperties"]["private"][ROW_MARKER] == new_id


def test_a_local_only_row_is_left_alone_when_google_deletes_its_event(fake, cal_settings):
    """The app takes a synced row out of the sync (local_only): Google edits
    to it were already left alone, but Google deleting the event marked the
    row deleted and synced (so cleanup would later drop it for good)."""
    settings = cal_settings()
    seed(fake, 2)
    sync(settings, "full")
    app_update(settings, gid(0), sync_status="local_only", title="mine now")
    fake.store.remove("primary", gid(0))
    body = sync(settings, "incremental")
    row = rows(settings)[gid(0)]
    assert (row["title"], row["deleted"], row["sync_status"]) == ("mine now", False, "local_only")
    assert any("local_only but Google deleted it" in w for w in body["warnings"])


def test_an_app_row_duplicating_a_held_occurrence_fails_alone(fake, cal_settings):
    """An app-made occurrence whose series and original start are already a
    held row: giving it that occurrence's id broke the unique key, and every
    run of the calendar answered 500 from then on."""
    settings = cal_settings()
    first = put_standup(fake)
    occ2 = fake.store.instance_id("primary", "series00001", utc_key(first + timedelta(days=2)))
    fake.store.edit("primary", occ2, {"summary": "moved"})
    seed(fake, 1)
    sync(settings, "full")
    dup = app_insert(settings, title="duplicate", start=first + timedelta(days=2, hours=1), hours=0.5, tz="Europe/Berlin",
                     recurring_event_id="series00001", original_start=utc_key(first + timedelta(days=2)))
    app_update(settings, gid(0), title="still pushed")
    body = sync(settings, "incremental")
    assert body["ok"] is False
    assert fake.store.live("primary")[gid(0)]["summary"] == "still pushed"
    with connect(settings) as conn:
        row = conn.execute("select * from calendar.events where id = %s", [dup]).fetchone()
    assert row["google_event_id"] is None and "duplicateOccurrence" in row["sync_error"]
    assert fake.store.live("primary")[occ2]["summary"] == "moved"


def test_an_app_made_occurrence_is_merged_with_googles_edits_of_that_instance(fake, cal_settings):
    """An occurrence the app makes for a day Google's organiser already edited
    (outside the incremental window, so not held): it was force-patched over
    the instance, erasing the organiser's edit without a conflict."""
    settings = cal_settings()
    first = put_standup(fake, days=40)
    sync(settings, "full")
    edited, plain = first + timedelta(days=30), first + timedelta(days=31)
    edited_id = fake.store.instance_id("primary", "series00001", utc_key(edited))
    fake.store.edit("primary", edited_id, {"description": "agenda by the organiser"})
    sync(settings, "incremental")
    assert edited_id not in rows(settings)  # beyond incremental_days: not held
    for moment in (edited, plain):
        app_insert(settings, title="Standup (app)", start=moment, hours=0.5, tz="Europe/Berlin",
                   recurring_event_id="series00001", original_start=utc_key(moment))
    body = sync(settings, "incremental")
    remote = fake.store.live("primary")
    assert (remote[edited_id]["summary"], remote[edited_id]["description"]) == ("Standup (app)", "agenda by the organiser")
    plain_id = fake.store.instance_id("primary", "series00001", utc_key(plain))
    assert remote[plain_id]["summary"] == "Standup (app)"
    # Only the instance Google had edited is a (merged) conflict; the other is just the app's edit.
    assert [c["google_event_id"] for c in audit(settings, "conflict")] == [edited_id]
    assert body["details"]["counts"]["conflicts"] == 1
    sync(settings, "incremental")
    assert_converged(fake, settings)


def test_a_local_deletion_over_a_google_edit_is_always_a_logged_conflict(fake, cal_settings):
    """A deletion beats an edit, and every conflict is audited: but a Google
    edit made after the pull and before the push's DELETE (sent without
    If-Match) was deleted away with no trace. The DELETE now carries the
    row's etag; the 412 is audited, then the deletion goes through."""
    settings = cal_settings()
    seed(fake, 2)
    sync(settings, "full")
    app_update(settings, gid(0), deleted=True)  # edited on Google after our pull: the push's DELETE meets it
    fake.store.edit("primary", gid(1), {"summary": "edited before the pull"})
    app_update(settings, gid(1), deleted=True)  # the pull sees this one: audited there, not twice
    original_list = fake.store.list

    def list_then_edit(cal, params):
        result = original_list(cal, params)
        if "syncToken" in params:
            fake.store.edit("primary", gid(0), {"description": "added by the organiser"})
        return result

    fake.store.list = list_then_edit
    body = sync(settings, "incremental")
    fake.store.list = original_list
    remote = fake.store.live("primary")
    assert remote[gid(0)]["status"] == "cancelled" and remote[gid(1)]["status"] == "cancelled"  # the deletions win
    conflicts = [(c["google_event_id"], c["action"]) for c in audit(settings, "conflict")]
    assert sorted(conflicts) == [(gid(0), "local deletion wins over a Google edit made since the last sync"),
                                 (gid(1), "local deletion wins over remote edit")]
    assert body["details"]["counts"]["conflicts"] == 2
    assert all(rows(settings)[g]["sync_status"] == "synced" for g in (gid(0), gid(1)))
