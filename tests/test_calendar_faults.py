"""Calendar sync under Google API faults, and the weekly cleanup."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from safesync.functions.calendar.crypto import Cipher
from safesync.functions.calendar.status import calendar_status
from safesync.functions.calendar.sync import run_sync
from tests.fake_calendar import Faults
from tests.fake_calendar.fixtures import cal_settings, fake  # noqa: F401
from tests.fake_calendar.helpers import NOW, app_insert, app_update, audit, connect, gid, rows
from tests.test_calendar_sync import assert_converged, seed, sync


def test_fault_storm_converges_without_duplicates_or_lost_edits(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 40)
    sync(settings, "full")
    for i in range(0, 10):
        fake.store.edit("primary", gid(i), {"summary": f"remote edit {i}"})
    for i in range(10, 20):
        app_update(settings, gid(i), description=f"local edit {i}")
    for i in range(20, 22):  # both sides, different fields
        fake.store.edit("primary", gid(i), {"location": f"room {i}"})
        app_update(settings, gid(i), title=f"both sides {i}")
    for i in range(22, 24):
        app_update(settings, gid(i), deleted=True)
    for i in range(24, 26):
        fake.store.remove("primary", gid(i))
    for i in range(12):
        app_insert(settings, title=f"new local {i}", start=NOW + timedelta(days=4, hours=i))
    fake.faults = Faults(rate=0.3, kinds=("429", "403rate", "500", "drop"), seed=20261125)
    statuses = []
    for _ in range(8):
        answer = run_sync(settings, "incremental")
        statuses.append(answer.status)
        with connect(settings) as conn:
            pending = conn.execute("select count(*) as n from calendar.events where sync_status <> 'synced'").fetchone()["n"]
        if answer.status == 200 and pending == 0:
            break
    assert pending == 0, statuses
    assert all(fake.injected[k] > 0 for k in ("429", "403rate", "500", "drop")), fake.injected
    fake.faults = Faults()
    sync(settings, "incremental")
    remote = fake.store.live("primary")
    local = rows(settings)
    # no duplicates on either side
    titles = Counter(e.get("summary") for e in remote.values() if e.get("status") != "cancelled")
    assert all(titles[f"new local {i}"] == 1 for i in range(12))
    with connect(settings) as conn:
        assert conn.execute("select count(*) as n from calendar.events").fetchone()["n"] == 52
    # no lost edit
    assert all(remote[gid(i)]["summary"] == f"remote edit {i}" for i in range(10))
    assert all(remote[gid(i)]["description"] == f"local edit {i}" for i in range(10, 20))
    assert all((remote[gid(i)]["summary"], remote[gid(i)]["location"]) == (f"both sides {i}", f"room {i}") for i in range(20, 22))
    assert all(remote[gid(i)]["status"] == "cancelled" and local[gid(i)]["deleted"] for i in range(22, 26))
    assert_converged(fake, settings)


def test_a_permanently_failing_event_ends_sync_failed_after_three_runs(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 6)
    sync(settings, "full")
    fake.store.permanent_failures[gid(0)] = (403, "forbiddenForNonOrganizer", "Shared properties can only be changed by the organizer of the event.")
    fake.store.permanent_failures[gid(1)] = (500, "backendError", "Backend Error")
    app_update(settings, gid(0), title="not allowed")
    app_update(settings, gid(1), title="never works")
    app_update(settings, gid(2), title="fine")
    for run in range(1, 4):
        fake.reset_counts()
        body = sync(settings, "incremental")
        # Rows whose changes did not reach Google: not "ok" (it was, with a warning).
        assert (body["ok"], body["status"]) == (False, "problems") and "2 row(s) failed to push" in body["summary"]
        local = rows(settings)
        expected = "sync_failed" if run == 3 else "pending_sync"
        assert (local[gid(0)]["sync_status"], local[gid(0)]["sync_retries"]) == (expected, run)
        assert (local[gid(1)]["sync_status"], local[gid(1)]["sync_retries"]) == (expected, run)
        assert fake.batch_items["patch"] == 1 + 6 + (run == 1)  # 403 never retried in a run; 500 tried 6 times; gid(2) once
    assert "forbiddenForNonOrganizer" in local[gid(0)]["sync_error"]
    assert "backendError" in local[gid(1)]["sync_error"]
    assert local[gid(2)]["sync_status"] == "synced"
    info = calendar_status(settings)
    assert info["health"] in ("degraded", "failing") and "2 event(s) failed to sync" in info["reason"]
    assert {f["google_event_id"] for f in info["failed"]} == {gid(0), gid(1)}
    # A fourth run leaves sync_failed rows alone; cleanup retries them once Google accepts.
    fake.reset_counts()
    sync(settings, "incremental")
    assert fake.batch_items["patch"] == 0
    fake.store.permanent_failures.clear()
    body = sync(settings, "cleanup")
    assert body["details"]["counts"]["pushed"] == 2 and body["ok"] is True
    assert rows(settings)[gid(0)]["sync_status"] == "synced"
    assert fake.store.live("primary")[gid(1)]["summary"] == "never works"


def test_google_unreachable_fails_the_run_without_burning_the_rows_tries(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    app_update(settings, gid(0), title="waiting for Google")
    fake.faults = Faults(rate=1.0, kinds=("500", "drop"), seed=1, only="/batch")
    answer = run_sync(settings, "incremental")
    assert answer.status == 503 and "Google unreachable" in answer.body["error"]
    row = rows(settings)[gid(0)]
    assert (row["sync_status"], row["sync_retries"]) == ("pending_sync", 0)
    fake.faults = Faults()
    sync(settings, "incremental")
    assert fake.store.live("primary")[gid(0)]["summary"] == "waiting for Google"


def test_slow_answers_time_out_and_are_retried(fake, cal_settings):
    settings = cal_settings()
    settings.config = settings.config.model_copy(
        update={"calendar": settings.config.calendar.model_copy(update={"http_timeout_s": 0.25})}
    )
    seed(fake, 5)
    fake.faults = Faults(rate=0.5, kinds=("slow",), seed=3, slow_s=0.5)
    body = sync(settings, "full")
    assert body["details"]["counts"]["inserted"] == 5
    assert body["details"]["counts"]["api_retries"] >= 1


def test_cleanup_repairs_missing_extra_and_stale_rows_and_drops_obsolete(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 10)
    sync(settings, "full")
    with connect(settings) as conn:
        conn.execute("set safesync.sync_writer = 'on'")
        conn.execute("delete from calendar.events where google_event_id = %s", [gid(0)])  # missing locally
        conn.execute(
            """insert into calendar.events (calendar_id, google_event_id, title, start_at, end_at, source, sync_status, etag)
               values ('primary', 'old0000001', 'long ago', now() - interval '300 days', now() - interval '299 days',
                       'google_calendar', 'synced', '"1"')"""
        )
    del fake.store.calendars["primary"][gid(1)]  # vanished from Google without a trace: extra locally
    stale = fake.store.calendars["primary"][gid(2)]  # changed without showing up in incremental: etag mismatch
    stale.update(summary="silently changed", etag='"9999"')
    fake.reset_counts()
    body = sync(settings, "cleanup")
    counts = body["details"]["counts"]
    assert (counts["missing"], counts["extra"], counts["etag_mismatch"], counts["dropped_obsolete"]) == (1, 1, 1, 1)
    assert fake.calls["list"] == 2
    local = rows(settings)
    assert not local[gid(0)]["deleted"] and local[gid(1)]["deleted"] and local[gid(2)]["title"] == "silently changed"
    assert "old0000001" not in local
    fake.store.calendars["primary"].pop(gid(1), None)
    assert_converged(fake, settings)


def test_a_malformed_app_row_fails_alone_and_never_stops_the_sync(fake, cal_settings):
    """attendees the app wrote as something other than a list of objects with
    string emails made every run answer 500 (mapping crashed on the row), so
    no other row was ever pushed or pulled again."""
    from psycopg.types.json import Jsonb

    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    app_insert(settings, title="good", start=NOW + timedelta(days=2))
    app_insert(settings, title="bad", start=NOW + timedelta(days=3), attendees={"email": "a@example.com"})
    app_update(settings, gid(0), attendees=Jsonb([{"email": 5}]))  # a held row, then edited on Google
    app_update(settings, gid(1), attendees=Jsonb(["x"]), deleted=True)  # a malformed row being deleted
    fake.store.edit("primary", gid(0), {"summary": "edited on Google"})
    fake.store.edit("primary", gid(2), {"summary": "also edited on Google"})
    first = sync(settings, "incremental")
    assert any("malformed" in w for w in first["warnings"])
    for _ in range(2):
        sync(settings, "incremental")
    with connect(settings) as conn:
        bad = conn.execute("select * from calendar.events where title = 'bad'").fetchone()
        good = conn.execute("select * from calendar.events where title = 'good'").fetchone()
    assert good["sync_status"] == "synced" and good["google_event_id"] in fake.store.live("primary")
    assert (bad["sync_status"], bad["sync_error"]) == ("sync_failed", "invalidRow: attendees must be a JSON array of objects, not dict")
    local = rows(settings)
    assert local[gid(2)]["title"] == "also edited on Google"
    assert fake.store.live("primary")[gid(1)]["status"] == "cancelled" and local[gid(1)]["sync_status"] == "synced"
    # The malformed held row keeps the app's content (Google's change is not applied over it), and says why.
    assert local[gid(0)]["sync_status"] == "sync_failed" and "invalidRow" in local[gid(0)]["sync_error"]
    app_update(settings, gid(0), attendees=Jsonb([]))  # the app repairs it: the push merges with Google's edit
    sync(settings, "incremental")
    assert fake.store.live("primary")[gid(0)]["summary"] == "edited on Google"
    assert rows(settings)[gid(0)]["sync_status"] == "synced"


def test_an_app_attendee_without_email_fails_the_row_instead_of_vanishing(fake, cal_settings):
    """An attendee the app wrote without an email was dropped by the mapping:
    the push sent the others, wrote Google's list back over the row and
    reported it synced — the app's entry gone, nothing said."""
    from psycopg.types.json import Jsonb

    settings = cal_settings()
    seed(fake, 2)
    sync(settings, "full")
    app_update(settings, gid(0), attendees=Jsonb([{"displayName": "Bob"}, {"email": "a@example.com"}]))
    body = sync(settings, "incremental")
    row = rows(settings)[gid(0)]
    assert row["attendees"] == [{"displayName": "Bob"}, {"email": "a@example.com"}]  # the app's content, untouched
    assert row["sync_status"] == "pending_sync" and "has no email" in row["sync_error"]
    assert body["details"]["counts"]["push_failed"] == 1


def corrupt(fake, event_id: str, **fields) -> None:
    """Google answering with fields of another type than its reference
    gives (a schema change, a bug): written past the fake's validation."""
    with fake.store.lock:
        stored = fake.store.events("primary")[event_id]
        stored.update(fields)
        fake.store._bump("primary", stored)


def test_a_malformed_google_event_is_skipped_and_named_while_the_rest_syncs(fake, cal_settings):
    """One event whose conferenceData (or another field) was not of the
    documented type crashed the whole calendar's run (AttributeError: 500)
    and nothing else synced; a recurrence string was stored as a list of its
    characters. Now that event is skipped and named, its held row kept, the
    others applied, and the run is not ok."""
    settings = cal_settings()
    seed(fake, 4)
    conference = {"conferenceId": "abc-defg-hij", "entryPoints": [{"entryPointType": "video", "uri": "https://meet.google.com/abc-defg-hij"}]}
    fake.store.edit("primary", gid(0), {"conferenceData": conference})
    sync(settings, "full")
    held = rows(settings)[gid(0)]
    corrupt(fake, gid(0), conferenceData=["not", "an", "object"], summary="renamed while malformed")
    corrupt(fake, gid(1), recurrence="RRULE:FREQ=DAILY")
    fake.store.put_event("primary", {"id": "n0000001", "summary": "new", "start": {"dateTime": (NOW + timedelta(days=2)).isoformat()},
                                     "end": {"dateTime": (NOW + timedelta(days=2, hours=1)).isoformat()}})
    corrupt(fake, "n0000001", conferenceData="meet.google.com/secret-room")
    fake.store.edit("primary", gid(2), {"summary": "edited on Google"})
    for mode in ("incremental", "full"):
        answer = run_sync(settings, mode)
        body = answer.body
        assert answer.status == 200 and body["ok"] is False, body
        assert "malformed Google event(s) skipped" in body["summary"]
        named = " ".join(body["warnings"])
        assert f"primary/{gid(0)}" in named and "conferenceData must be a dict, not list" in named
        assert "secret-room" not in str(body)
        if mode == "incremental":
            assert f"primary/{gid(1)}" in named and "recurrence must be a list" in named and "primary/n0000001" in named
    local = rows(settings)
    assert local[gid(2)]["title"] == "edited on Google" and local[gid(2)]["sync_status"] == "synced"
    assert local[gid(0)]["title"] == held["title"] and not local[gid(0)]["deleted"]  # kept as it was
    assert local[gid(0)]["conference_data"] == held["conference_data"]
    assert local[gid(1)]["recurrence"] is None and not local[gid(1)]["deleted"]
    assert "n0000001" not in local
    errors = [a for a in audit(settings, "error") if a["action"] == "Google's event malformed: skipped"]
    assert {a["google_event_id"] for a in errors} >= {gid(0), gid(1), "n0000001"}
    # An unbounded resync checks every held row: the malformed ones are never deleted either.
    answer = run_sync(settings, "full", resync=True)
    assert answer.status == 200 and not any(r["deleted"] for r in rows(settings).values())
    # Google repairs the event: the next change is applied.
    fake.store.edit("primary", gid(0), {"conferenceData": conference, "summary": "repaired"})
    sync(settings, "incremental")
    assert rows(settings)[gid(0)]["title"] == "repaired"


def test_a_skipped_malformed_event_is_fetched_again_on_every_run_until_it_reads_or_is_gone(fake, cal_settings):
    """The incremental run that skipped a malformed event stored the new
    nextSyncToken, and a change listing returns only what changed since its
    token (Google's sync guide: incremental sync retrieves "all the
    resources that have been modified since the last sync request"): the
    next runs never saw the event again and said ok, the held row stale and
    the new event missing for good. Now each skipped id is remembered (in
    the token's transaction) and fetched by id on every run — named until
    it reads (then applied) or is gone (404: forgotten)."""
    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "incremental")
    fake.store.put_event("primary", {"id": "n0000001", "summary": "new", "start": {"dateTime": (NOW + timedelta(days=2)).isoformat()},
                                     "end": {"dateTime": (NOW + timedelta(days=2, hours=1)).isoformat()}})
    fake.store.put_event("primary", {"id": "n0000002", "summary": "purged", "start": {"dateTime": (NOW + timedelta(days=3)).isoformat()},
                                     "end": {"dateTime": (NOW + timedelta(days=3, hours=1)).isoformat()}})
    corrupt(fake, gid(0), conferenceData=["not", "an", "object"], summary="renamed while malformed")
    for event_id in ("n0000001", "n0000002"):
        corrupt(fake, event_id, conferenceData="not an object")
    for run in range(2):
        body = run_sync(settings, "incremental").body
        assert body["ok"] is False and "3 malformed Google event(s) skipped" in body["summary"], (run, body)
        named = " ".join(body["warnings"])
        assert all(f"primary/{e}" in named for e in (gid(0), "n0000001", "n0000002")), (run, named)
    assert rows(settings)[gid(0)]["title"] == "Event 0" and "n0000001" not in rows(settings)
    # Google's answers become readable without a change its token would list
    # (as after a deploy that reads them); one event is purged (events.get: 404).
    with fake.store.lock:
        for event_id in (gid(0), "n0000001"):
            fake.store.events("primary")[event_id].pop("conferenceData")
        del fake.store.calendars["primary"]["n0000002"]
    fake.reset_counts()
    body = run_sync(settings, "incremental").body
    assert body["ok"] is True, body
    assert body["details"]["counts"]["skipped_rechecked"] == 3
    local = rows(settings)
    assert local[gid(0)]["title"] == "renamed while malformed" and local["n0000001"]["title"] == "new"
    with connect(settings) as conn:
        assert conn.execute("select count(*) as n from calendar.skipped_events").fetchone()["n"] == 0
    body = run_sync(settings, "incremental").body  # nothing left to fetch again
    assert body["ok"] is True and "skipped_rechecked" not in body["details"]["counts"]


def test_a_skipped_event_that_cannot_be_fetched_again_stays_remembered(fake, cal_settings):
    """A transient failure of the re-fetch is no answer: the id is kept,
    named, and the run is not ok; the next run fetches it again."""
    settings = cal_settings()
    seed(fake, 2)
    sync(settings, "incremental")
    corrupt(fake, gid(0), conferenceData="not an object", summary="renamed while malformed")
    assert run_sync(settings, "incremental").body["ok"] is False
    with fake.store.lock:
        fake.store.events("primary")[gid(0)].pop("conferenceData")
    fake.faults = Faults(rate=1.0, kinds=("500",), seed=1, only="/batch")
    body = run_sync(settings, "incremental").body
    assert body["ok"] is False and any(f"primary/{gid(0)}" in w and "fetching it again failed" in w for w in body["warnings"]), body
    fake.faults = Faults()
    assert run_sync(settings, "incremental").body["ok"] is True
    assert rows(settings)[gid(0)]["title"] == "renamed while malformed"


def test_malformed_server_set_fields_are_a_named_skip_not_a_500(fake, cal_settings):
    """The fields Google sets (created, updated: RFC 3339 datetimes;
    originalStartTime: an object with date or dateTime; sequence: an
    integer — events resource reference) were read unchecked: one event
    with another type or text there crashed the whole run (500) and nothing
    else synced. Now such an event is skipped and named like any malformed
    field, its held row kept, the rest applied."""
    from tests.test_calendar_sync import put_standup, utc_key

    settings = cal_settings()
    seed(fake, 5)
    first = put_standup(fake)
    occ2 = fake.store.instance_id("primary", "series00001", utc_key(first + timedelta(days=2)))
    fake.store.edit("primary", occ2, {"summary": "moved standup"})  # an exception, listed on its own
    sync(settings, "incremental")
    corrupt(fake, gid(0), summary="renamed 0")
    with fake.store.lock:  # after the bump, which sets updated
        fake.store.events("primary")[gid(0)]["updated"] = "yesterday"
    corrupt(fake, gid(1), created=1733280000, summary="renamed 1")
    corrupt(fake, gid(2), sequence="2", summary="renamed 2")
    corrupt(fake, gid(3), originalStartTime="2026-12-05", summary="renamed 3")
    corrupt(fake, occ2, originalStartTime={"dateTime": 20261206}, summary="renamed occurrence")
    fake.store.edit("primary", gid(4), {"summary": "applied"})
    answer = run_sync(settings, "incremental")
    assert answer.status == 200 and answer.body["ok"] is False, answer.body
    assert "5 malformed Google event(s) skipped" in answer.body["summary"], answer.body["warnings"]
    named = " ".join(answer.body["warnings"])
    for event_id, why in ((gid(0), "updated is not an RFC 3339 instant)"), (gid(1), "created must be a str, not int)"),
                          (gid(2), "sequence must be a int, not str)"), (gid(3), "originalStartTime must be a dict, not str)"),
                          (occ2, "originalStartTime.dateTime must be a str, not int)")):
        assert f"primary/{event_id}: Google's event is malformed ({why}" in named, (event_id, named)
    local = rows(settings)
    assert local[gid(4)]["title"] == "applied"
    assert [local[gid(i)]["title"] for i in range(4)] == [f"Event {i}" for i in range(4)]
    assert local[occ2]["title"] == "moved standup" and not local[occ2]["deleted"]


def test_an_event_listed_twice_is_applied_once_in_the_copy_read_last(fake, cal_settings, monkeypatch):
    """Google documents no promise that a paged listing returns an event
    once (events.list: pages are read one request at a time, and an event
    edited between them may be met again). The second copy was planned as a
    second insert: the unique key stopped the run (422) on every run while
    the listing did so, nothing synced. Now each event is taken once, in the
    copy read last (Google's state at the later moment)."""
    settings = cal_settings("page_size = 2\n")
    seed(fake, 5)
    original = fake.store.list

    def edited_while_paging(cal, params):
        out = original(cal, params)
        if "pageToken" in params and "nextPageToken" not in out:  # the last page: gid(0) was on the first
            out["items"].append(fake.store.edit(cal, gid(0), {"summary": "edited while paging"}))
        return out

    monkeypatch.setattr(fake.store, "list", edited_while_paging)
    body = sync(settings, "incremental")
    assert body["ok"] is True and body["details"]["counts"]["listed_twice"] == 1, body
    local = rows(settings)
    assert len(local) == 5 and local[gid(0)]["title"] == "edited while paging"
    assert local[gid(0)]["etag"] == fake.store.live("primary")[gid(0)]["etag"]


def test_a_row_whose_conference_data_does_not_decrypt_fails_alone(fake, cal_settings):
    """A row whose conference_data the app wrote in clear (or damaged) made
    Cipher.decrypt raise JobFailed out of the whole calendar run (503): no
    other row was pulled or pushed again. Now that row fails with the
    reason and the rest syncs."""
    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    app_update(settings, gid(0), conference_data=b'{"conferenceId": "plain"}', title="edited in the app")
    app_update(settings, gid(1), title="pushed fine")
    fake.store.edit("primary", gid(2), {"summary": "pulled fine"})
    answer = run_sync(settings, "incremental")
    assert answer.status == 200, answer.body
    assert answer.body["ok"] is False and "failed to push" in answer.body["summary"]
    local = rows(settings)
    assert local[gid(2)]["title"] == "pulled fine"
    assert fake.store.live("primary")[gid(1)]["summary"] == "pushed fine"
    assert local[gid(0)]["title"] == "edited in the app" and "not in the expected encrypted format" in local[gid(0)]["sync_error"]
    assert fake.store.live("primary")[gid(0)]["summary"] == "Event 0"  # nothing half-sent


def test_google_changes_not_applied_to_an_unreadable_synced_row_make_the_run_not_ok(fake, cal_settings):
    """A synced row whose conference data no longer decrypts (the key was
    rotated) cannot take Google's edits: they were skipped with a warning
    under ok: true, and as the row is never pushed nothing else ever said
    that it is stale."""
    settings = cal_settings()
    seed(fake, 2)
    sync(settings, "full")
    with connect(settings) as conn:
        conn.execute("set safesync.sync_writer = 'on'")  # as written by the sync, under an older key
        conn.execute("update calendar.events set conference_data = %s where google_event_id = %s",
                     [Cipher(b"k" * 32).encrypt({"conferenceId": "old"}), gid(0)])
    fake.store.edit("primary", gid(0), {"summary": "edited on Google"})
    fake.store.edit("primary", gid(1), {"summary": "applied"})
    body = run_sync(settings, "incremental").body
    assert body["ok"] is False and "1 Google change(s) not applied to malformed row(s)" in body["summary"], body
    assert any(f"primary/{gid(0)}" in w and "does not decrypt" in w for w in body["warnings"])
    local = rows(settings)
    assert local[gid(1)]["title"] == "applied" and local[gid(0)]["title"] == "Event 0"


def test_cleanup_confirms_a_row_absent_from_its_listings_by_id_before_deleting_it(fake, cal_settings):
    """Cleanup deleted a synced row on absence from its two windowed
    listings alone: an event Google had just moved out of the window (not
    pulled yet) was marked deleted — the app saw a live event vanish and
    the audit said it was gone. Every other path asks Google by id first
    (events.get: 404/410 or "cancelled" only mean gone)."""
    settings = cal_settings()
    seed(fake, 6)
    sync(settings, "full")
    later = NOW + timedelta(days=200)
    fake.store.edit("primary", gid(0), {"start": {"dateTime": later.isoformat()}, "end": {"dateTime": (later + timedelta(hours=1)).isoformat()}})
    del fake.store.calendars["primary"][gid(1)]  # really gone: 404 by id
    body = sync(settings, "cleanup")
    local = rows(settings)
    assert not local[gid(0)]["deleted"] and local[gid(0)]["start_at"] == later
    assert local[gid(1)]["deleted"]
    assert body["details"]["counts"]["extra"] == 1


def test_cleanup_repairs_a_cancelled_occurrence_the_app_deleted(fake, cal_settings):
    """A cancelled occurrence is listed by a windowed listing (events.list:
    "Cancelled instances of recurring events ... will still be included if
    showDeleted and singleEvents are both False"). Cleanup repaired a held
    row it had as a live event: such an instance may carry only its id,
    status and original start (no start/end), and every weekly cleanup
    crashed (500) once the app had deleted that occurrence's row."""
    from tests.test_calendar_sync import put_standup, utc_key

    settings = cal_settings()
    first = put_standup(fake)
    occ4 = fake.store.instance_id("primary", "series00001", utc_key(first + timedelta(days=4)))
    sync(settings, "full")
    fake.store.remove("primary", occ4)
    sync(settings, "incremental")
    app_update(settings, occ4, deleted=True)  # the app clears the cancelled occurrence away
    sync(settings, "incremental")
    body = sync(settings, "cleanup")
    assert body["details"]["counts"]["missing"] == 1
    row = rows(settings)[occ4]
    assert (row["event_status"], row["deleted"], row["sync_status"]) == ("cancelled", False, "synced")
    assert row["start_at"] == first + timedelta(days=4)
    assert not rows(settings)["series00001"]["deleted"]


def test_status_is_degraded_while_a_malformed_google_event_is_skipped(fake, cal_settings):
    """The run that skipped a malformed Google event said ok: false once, but
    `calendar status` kept saying ok although the event never synced."""
    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    sync(settings, "full")  # a second full: its listing is the window's own
    corrupt(fake, gid(0), conferenceData="not an object")
    assert run_sync(settings, "full").body["ok"] is False
    status = calendar_status(settings)
    assert status["health"] == "degraded" and "skipped 1 malformed Google event(s)" in status["reason"], status["reason"]
    fake.store.edit("primary", gid(0), {"conferenceData": None, "summary": "repaired"})
    sync(settings, "full")
    assert calendar_status(settings)["health"] == "ok"


def test_a_retry_after_longer_than_the_backoff_allows_is_not_cut_short(fake, cal_settings):
    """Google's error guide: retry rate-limit errors with exponential backoff;
    RFC 9110 10.2.3: Retry-After is how long the client "ought to wait". A
    Retry-After beyond retry_max_delay_s was cut to that cap, so every
    attempt called Google again early (each one more over quota), and the
    rows of a push burnt their tries on Google's throttle. Now the attempt
    ends at once, the run fails naming the wait, and rows keep their tries."""
    settings = cal_settings()
    seed(fake, 3)
    sync(settings, "full")
    app_update(settings, gid(0), title="waits for Google")
    fake.reset_counts()
    fake.faults = Faults(rate=1.0, kinds=("429",), retry_after="120", only="/calendar/v3/calendars/primary/events")
    answer = run_sync(settings, "incremental")
    assert answer.status == 503 and "Retry-After 120 s" in answer.body["error"], answer.body
    assert fake.calls["list"] == 0 and sum(fake.injected.values()) == 1  # one call, not one per attempt
    fake.reset_counts()
    fake.faults = Faults(rate=1.0, kinds=("429", "403rate"), retry_after="120", only="/batch")
    answer = run_sync(settings, "incremental")
    assert answer.status == 503, answer.body
    assert sum(fake.injected.values()) == 1
    row = rows(settings)[gid(0)]
    assert (row["sync_status"], row["sync_retries"]) == ("pending_sync", 0)
    fake.faults = Faults()
    sync(settings, "incremental")
    assert fake.store.live("primary")[gid(0)]["summary"] == "waits for Google"
