"""Calendar building blocks without a database: mapping, merge rules,
encryption, error classification, and the fake's own API rules (through the
real client library)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import httplib2
import pytest
from googleapiclient.errors import HttpError

from safesync.functions.calendar.conflicts import merge
from safesync.functions.calendar.crypto import Cipher, parse_key
from safesync.functions.calendar.google import CalendarClient, load_credentials
from safesync.functions.calendar.mapping import field_hashes, from_google, span, to_google
from safesync.functions.calendar.retry import classify
from safesync.functions.calendar.schema import MIGRATIONS
from safesync.shared.errors import ConfigError
from tests.fake_calendar.fixtures import fake  # noqa: F401
from tests.fake_calendar.helpers import NOW, all_day, event, timed


def http_error(status: int, reason: str) -> HttpError:
    body = json.dumps({"error": {"errors": [{"reason": reason, "message": reason}], "code": status, "message": reason}})
    return HttpError(httplib2.Response({"status": status}), body.encode())


@pytest.mark.parametrize(
    "status,reason,retryable",
    [(429, "rateLimitExceeded", True), (403, "rateLimitExceeded", True), (403, "userRateLimitExceeded", True),
     (500, "backendError", True), (503, "backendError", True), (400, "invalid", False), (403, "quotaExceeded", False),
     (403, "forbiddenForNonOrganizer", False), (409, "duplicate", False), (410, "fullSyncRequired", False),
     (412, "conditionNotMet", False), (404, "notFound", False)],
)
def test_retry_classification_follows_googles_error_guide(status, reason, retryable):
    failure = classify(http_error(status, reason))
    assert (failure.status, failure.reason, failure.retryable) == (status, reason, retryable)


def test_retry_after_is_read_in_both_of_its_forms():
    """RFC 9110 section 10.2.3: "Retry-After = HTTP-date / delay-seconds".
    An HTTP-date was ignored, so the backoff did not wait as asked."""
    from email.utils import format_datetime

    def after(value: str) -> float | None:
        return classify(HttpError(httplib2.Response({"status": 429, "retry-after": value}), b"{}")).retry_after

    assert after("7") == 7
    in_20s = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert 17 <= after(in_20s) <= 20
    assert after(format_datetime(datetime.now(timezone.utc) - timedelta(minutes=5), usegmt=True)) == 0
    assert after("soon") is None and after("-3") is None and after("nan") is None


def test_transport_errors_are_retryable():
    assert classify(ConnectionResetError("reset")).retryable
    assert classify(TimeoutError("timed out")).retryable
    assert not classify(ValueError("bug")).retryable


def test_all_day_events_stay_dates_whatever_the_zone():
    for tz in ("Pacific/Honolulu", "Pacific/Tongatapu", None):
        ev = {"id": "x0001", "summary": "Day", **all_day(NOW.date(), 2, tz)}
        data = from_google(ev)
        assert data["when"] == {"all_day": True, "start": NOW.date().isoformat(), "end": (NOW.date() + timedelta(days=2)).isoformat()}
        assert to_google(data)["start"]["date"] == NOW.date().isoformat()
        low, high = span(data)
        assert low < high


def test_timed_events_normalise_to_utc_and_go_back_in_their_zone():
    ev = {"id": "x0001", "summary": "Late", **timed(NOW, 1, "Pacific/Honolulu")}
    data = from_google(ev)
    assert data["when"]["start"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = to_google(data)
    assert body["start"]["dateTime"].endswith("-10:00") and body["start"]["timeZone"] == "Pacific/Honolulu"
    assert field_hashes(from_google({**ev, **body})) == field_hashes(data)


def _data(**changes):
    base = from_google(event("x0001", "Title", NOW, location="A"))
    base.update(changes)
    return base


def test_merge_rules():
    base = field_hashes(_data())
    same = merge(base, _data(title="T2"), _data(title="T2"), local_time=NOW, remote_time=NOW)
    assert not same.conflict
    fields = merge(base, _data(title="local"), _data(location="remote"), local_time=NOW, remote_time=NOW)
    assert fields.kind == "merged" and (fields.data["title"], fields.data["location"]) == ("local", "remote")
    later_local = merge(base, _data(title="local"), _data(title="remote"), local_time=NOW + timedelta(seconds=1), remote_time=NOW)
    assert later_local.winner == "local" and later_local.data["title"] == "local"
    tie = merge(base, _data(title="local"), _data(title="remote"), local_time=NOW, remote_time=NOW)
    assert tie.winner == "google" and tie.data["title"] == "remote"
    assert tie.describe()["lost"] == {"title": "local"}  # the overwritten edit stays recoverable
    secret = merge(base, _data(conference={"conferenceId": "a"}), _data(conference={"conferenceId": "b"}), local_time=NOW, remote_time=NOW)
    assert "conferenceId" not in json.dumps(secret.describe())  # never in clear in the audit log
    no_base = merge(None, _data(title="local"), _data(title="remote"), local_time=None, remote_time=NOW)
    assert no_base.overlapping == ["title"] and no_base.winner == "google"


def test_encryption_round_trip_and_key_handling():
    key = parse_key("00" * 32)
    cipher = Cipher(key)
    blob = cipher.encrypt({"conferenceId": "secret-room"})
    assert b"secret-room" not in blob and cipher.decrypt(blob) == {"conferenceId": "secret-room"}
    assert cipher.encrypt({"a": 1}) != cipher.encrypt({"a": 1})  # fresh nonce each time
    with pytest.raises(Exception, match="does not decrypt"):
        Cipher(parse_key("11" * 32)).decrypt(blob)
    with pytest.raises(ConfigError, match="32 bytes"):
        parse_key("too-short")
    with pytest.raises(ConfigError, match="not set"):
        Cipher(None).encrypt({"a": 1})
    assert Cipher(None).encrypt(None) is None


def test_credentials_come_from_the_environment(tmp_path):
    with pytest.raises(ConfigError, match="no Google credentials"):
        load_credentials({})
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_credentials({"SAFESYNC_GOOGLE_CREDENTIALS": "{"})
    with pytest.raises(ConfigError, match="unsupported credential type"):
        load_credentials({"SAFESYNC_GOOGLE_CREDENTIALS": '{"type": "external_account"}'})
    user = {"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(user))
    assert load_credentials({"GOOGLE_APPLICATION_CREDENTIALS": str(path)}).refresh_token == "r"
    with pytest.raises(ConfigError, match="only applies to service-account"):
        load_credentials({"SAFESYNC_GOOGLE_CREDENTIALS": json.dumps(user), "SAFESYNC_GOOGLE_SUBJECT": "a@b.c"})
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    sa = {"type": "service_account", "client_email": "sync@p.iam.gserviceaccount.com", "private_key": pem,
          "token_uri": "https://oauth2.googleapis.com/token", "project_id": "p", "private_key_id": "k"}
    creds = load_credentials({"SAFESYNC_GOOGLE_CREDENTIALS": json.dumps(sa), "SAFESYNC_GOOGLE_SUBJECT": "admin@example.com"})
    assert creds._subject == "admin@example.com"


def test_migrations_are_versioned_in_order():
    versions = [v for v, _, _ in MIGRATIONS]
    assert versions == sorted(set(versions))


# -- the fake enforces Google's rules (through the real client) ------------------

@pytest.fixture
def api(fake):
    import os

    return CalendarClient(os.environ, timeout=5)


def test_fake_rules_sync_token_window_410_412_409(fake, api):
    for i in range(5):
        fake.store.put_event("primary", event(f"evt{i:04d}", f"E{i}", NOW + timedelta(hours=i)))
    first = api.list_events("primary", maxResults=2)
    assert len(first["items"]) == 2 and "nextPageToken" in first and "nextSyncToken" not in first
    with pytest.raises(HttpError) as exc:  # a page token belongs to its query
        api.list_events("primary", maxResults=3, pageToken=first["nextPageToken"])
    assert exc.value.resp.status == 400
    pages = [first]
    while "nextPageToken" in pages[-1]:
        pages.append(api.list_events("primary", maxResults=2, pageToken=pages[-1]["nextPageToken"]))
    assert sum(len(p["items"]) for p in pages) == 5
    token = pages[-1]["nextSyncToken"]
    with pytest.raises(HttpError) as exc:
        api.list_events("primary", syncToken=token, timeMin=NOW.isoformat())
    assert classify(exc.value).status == 400
    fake.store.edit("primary", "evt0001", {"summary": "changed"})
    changed = api.list_events("primary", syncToken=token)
    assert [i["id"] for i in changed["items"]] == ["evt0001"]
    fake.store.expire_tokens("primary")
    with pytest.raises(HttpError) as exc:
        api.list_events("primary", syncToken=changed["nextSyncToken"])
    assert (classify(exc.value).status, classify(exc.value).reason) == (410, "fullSyncRequired")
    stale = api.get_event("primary", "evt0002")["etag"]
    fake.store.edit("primary", "evt0002", {"summary": "someone else"})
    results = api.execute_batch([
        ("patch", api.patch_request("primary", "evt0002", {"summary": "mine"}, stale)),
        ("dup", api.insert_request("primary", {"id": "evt0003", "summary": "again", **timed(NOW)})),
        ("new", api.insert_request("primary", {"id": "evt9999", "summary": "new", **timed(NOW)})),
        ("gone", api.delete_request("primary", "nothere001")),
    ])
    assert classify(results["patch"][1]).status == 412
    assert classify(results["dup"][1]).status == 409
    assert results["new"][0]["id"] == "evt9999" and results["new"][1] is None
    assert classify(results["gone"][1]).status == 404
    assert fake.calls["batch"] == 1


def test_fake_expands_series_with_exceptions(fake, api):
    start = (NOW + timedelta(days=1)).replace(hour=8, minute=0, second=0)
    fake.store.put_event("primary", {"id": "ser0001", "summary": "Daily", "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"], **timed(start, 1, "UTC")})
    second = fake.store.instance_id("primary", "ser0001", (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    fake.store.remove("primary", second)
    singles = api.list_events("primary", singleEvents=True, timeMin=NOW.isoformat())
    assert len(singles["items"]) == 2
    masters = api.list_events("primary", timeMin=NOW.isoformat())
    kinds = sorted((i["id"], i.get("status")) for i in masters["items"])
    assert kinds == [("ser0001", "confirmed"), (second, "cancelled")]
    # Event ids are opaque ("id: Opaque identifier of the event"): an id built
    # from the series id and a start is unknown (404), events.instances names it.
    built = "ser0001_" + (start + timedelta(days=2)).strftime("%Y%m%dT%H%M%SZ")
    with pytest.raises(HttpError) as exc:
        api.get_event("primary", built)
    assert exc.value.resp.status == 404
    third = (start + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    [instance] = api.service.events().instances(calendarId="primary", eventId="ser0001", originalStart=third).execute()["items"]
    assert api.get_event("primary", instance["id"])["originalStartTime"]["dateTime"] == third
    with pytest.raises(HttpError) as exc:  # events.instances of an unknown series
        api.service.events().instances(calendarId="primary", eventId="nosuch0001").execute()
    assert exc.value.resp.status == 404


# Calendar API v3 events.list, syncToken: "There are several query parameters
# that cannot be specified together with nextSyncToken to ensure consistency
# of the client state. These are: iCalUID, orderBy, privateExtendedProperty,
# q, sharedExtendedProperty, timeMin, timeMax, updatedMin."
@pytest.mark.parametrize("param,value", [
    ("timeMin", "2026-01-01T00:00:00Z"), ("timeMax", "2026-01-01T00:00:00Z"), ("orderBy", "updated"), ("q", "standup"),
    ("updatedMin", "2026-01-01T00:00:00Z"), ("iCalUID", "x@google.com"),
])
def test_fake_refuses_sync_token_with_filters(fake, api, param, value):
    token = api.list_events("primary")["nextSyncToken"]
    with pytest.raises(HttpError) as exc:
        api.list_events("primary", syncToken=token, **{param: value})
    assert classify(exc.value).status == 400


def test_fake_windowed_token_syncs_only_its_window(fake, api):
    # Synchronize resources efficiently: the initial full sync "can optionally
    # restrict the list request ... if you only want to synchronize a specific
    # subset of resources" — its token then syncs that subset only.
    fake.store.put_event("primary", event("near00001", "Near", NOW + timedelta(days=1)))
    fake.store.put_event("primary", event("far000001", "Far", NOW + timedelta(days=120)))
    windowed = api.list_events("primary", timeMin=NOW.isoformat(), timeMax=(NOW + timedelta(days=90)).isoformat())
    unbounded = api.list_events("primary")
    assert [i["id"] for i in windowed["items"]] == ["near00001"]
    fake.store.edit("primary", "near00001", {"summary": "near, edited"})
    fake.store.edit("primary", "far000001", {"summary": "far, edited"})
    assert [i["id"] for i in api.list_events("primary", syncToken=windowed["nextSyncToken"])["items"]] == ["near00001"]
    assert sorted(i["id"] for i in api.list_events("primary", syncToken=unbounded["nextSyncToken"])["items"]) == ["far000001", "near00001"]


def test_fake_refuses_a_recurring_event_without_a_time_zone(fake, api):
    # Event resource, start.timeZone: "For recurring events this field is
    # required and specifies the time zone in which the recurrence is expanded."
    body = {"summary": "Daily", "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"], **timed(NOW + timedelta(days=1))}
    results = api.execute_batch([("series", api.insert_request("primary", body))])
    assert classify(results["series"][1]).status == 400
    body = {"summary": "Daily", "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"], **timed(NOW + timedelta(days=1), 1, "Europe/Berlin")}
    results = api.execute_batch([("series", api.insert_request("primary", body))])
    assert results["series"][1] is None


def _firings(cron: str, days: int = 7) -> list[int]:
    """Minutes (from a Monday 00:00) at which a ``M H * * *`` cron fires:
    numbers, ``*``, ``*/n`` and lists in the minute and hour fields."""
    minute, hour, dom, month, dow = cron.split()
    assert (dom, month, dow) == ("*", "*", "*"), cron

    def values(field: str, size: int) -> list[int]:
        out: set[int] = set()
        for part in field.split(","):
            if part == "*":
                out |= set(range(size))
            elif part.startswith("*/"):
                out |= set(range(0, size, int(part[2:])))
            else:
                out.add(int(part))
        return sorted(out)

    return [d * 1440 + h * 60 + m for d in range(days) for h in values(hour, 24) for m in values(minute, 60)]


def test_the_watch_schedule_renews_channels_well_before_they_expire():
    from pathlib import Path

    from safesync.functions.schedules import load_schedules
    from safesync.shared.config import CalendarSection

    shipped = load_schedules(Path(__file__).resolve().parents[1] / "infra" / "schedules.toml", {"SAFESYNC_PUBLIC_URL": "https://x.test"})
    [watch] = [d for d in shipped.schedules if d.target == "calendar_sync" and d.body.get("action") == "watch"]
    times = _firings(watch.cron)
    period_h = max(b - a for a, b in zip(times, times[1:] + [times[0] + 7 * 1440])) / 60
    cfg = CalendarSection()
    # A channel enters the renewal margin channel_renew_hours before its end;
    # some watch run must fall inside that margin, with room for a failed one.
    assert period_h < cfg.channel_ttl_hours - cfg.channel_renew_hours
    assert 2 * period_h <= cfg.channel_renew_hours


def test_fake_refuses_batches_over_1000_calls(fake, api):
    # Send batch requests: "You're limited to 1000 calls in a single batch
    # request." (the client library refuses to build one, so it goes raw)
    def batch(n: int) -> int:
        parts = "".join(
            f"--b\r\nContent-Type: application/http\r\nContent-ID: <{i}>\r\n\r\nGET /calendar/v3/calendars/primary/events/evt{i:05d} HTTP/1.1\r\n\r\n"
            for i in range(n)
        )
        response, _ = api.http.request(api.batch_uri, "POST", body=parts + "--b--\r\n", headers={"Content-Type": "multipart/mixed; boundary=b"})
        return int(response.status)

    assert batch(1000) == 200
    assert batch(1001) == 400


def test_fake_ignores_conference_data_without_conference_data_version_1(fake, api):
    # events.insert/patch, conferenceDataVersion: "Version 0 assumes no conference
    # data support and ignores conference data in the event's body. ... The default is 0."
    conference = {"conferenceId": "abc-defg-hij"}
    body = {**event("conf00001", "E", NOW + timedelta(days=1)), "conferenceData": conference}
    plain = api.service.events().insert(calendarId="primary", body=body).execute()
    assert "conferenceData" not in plain
    api.service.events().patch(calendarId="primary", eventId="conf00001", body={"conferenceData": conference}).execute()
    assert "conferenceData" not in fake.store.live("primary")["conf00001"]
    api.patch_request("primary", "conf00001", {"conferenceData": conference}, None).execute()  # ours sends version 1
    assert fake.store.live("primary")["conf00001"]["conferenceData"] == conference
    api.patch_request("primary", "conf00001", {"conferenceData": None}, None).execute()  # null clears (patch semantics)
    assert "conferenceData" not in fake.store.live("primary")["conf00001"]


def test_fake_channels_expire_and_number_their_messages(fake, api):
    # Push guide: X-Goog-Message-Number "is always 1 for sync messages" and
    # increases, not sequentially; a channel stops at its expiration (events.watch
    # params.ttl) and is never renewed by Google; channels.stop needs a live channel.
    fake.store.put_event("primary", event("evt00001", "E", NOW + timedelta(days=1)))
    channel = api.watch("primary", {"id": "chan-1", "type": "web_hook", "address": "https://n.example.test/calendar_notify",
                                    "token": "t", "params": {"ttl": "3600"}})
    assert abs(int(channel["expiration"]) / 1000 - (time.time() + 3600)) < 120
    assert fake.store.notifications.pop()["headers"]["X-Goog-Message-Number"] == "1"
    numbers = []
    for n in range(3):
        fake.store.edit("primary", "evt00001", {"summary": f"E{n}"})
        numbers.append(int(fake.store.notifications.pop()["headers"]["X-Goog-Message-Number"]))
    assert numbers == sorted(set(numbers)) and numbers[0] > 1
    fake.store.clock_offset = timedelta(hours=2)
    fake.store.edit("primary", "evt00001", {"summary": "after expiry"})
    assert fake.store.notifications == []
    with pytest.raises(HttpError) as exc:
        api.stop_channel("chan-1", channel["resourceId"])
    assert exc.value.resp.status == 404
    with pytest.raises(HttpError) as exc:  # Google only calls HTTPS webhooks
        api.watch("primary", {"id": "chan-2", "type": "web_hook", "address": "http://n.example.test/calendar_notify"})
    assert exc.value.resp.status == 400


def test_fake_refresh_token_gets_only_what_was_granted(fake):
    # RFC 6749 section 6: a refresh "MUST NOT include any scope not originally
    # granted"; the fake's user granted calendar.events only. Methods then need
    # one of the scopes the discovery document lists for them.
    import os

    wide = CalendarClient(os.environ, timeout=5, scopes=["https://www.googleapis.com/auth/calendar"])
    with pytest.raises(Exception, match="invalid_scope"):
        wide.list_events("primary")
    narrow = CalendarClient(os.environ, timeout=5)
    assert narrow.list_events("primary")["items"] == []
    fake.granted_scopes = frozenset({"https://www.googleapis.com/auth/calendar.events.readonly"})
    readonly = CalendarClient(os.environ, timeout=5, scopes=["https://www.googleapis.com/auth/calendar.events.readonly"])
    results = readonly.execute_batch([("w", readonly.insert_request("primary", {"summary": "x", **timed(NOW)}))])
    assert classify(results["w"][1]).status == 403


def test_authorized_user_scopes_must_cover_the_configured_ones(fake):
    user = json.loads(fake.authorized_user_json())
    user["scopes"] = ["https://www.googleapis.com/auth/calendar.events"]
    env = {"SAFESYNC_GOOGLE_CREDENTIALS": json.dumps(user)}
    assert load_credentials(env).scopes == ["https://www.googleapis.com/auth/calendar.events"]
    with pytest.raises(ConfigError, match="not granted"):
        load_credentials(env, ["https://www.googleapis.com/auth/calendar"])


def test_start_and_end_time_zones_stay_apart():
    flight = {"id": "x0001", "summary": "Flight", "start": {"dateTime": "2026-06-01T10:00:00+02:00", "timeZone": "Europe/Berlin"},
              "end": {"dateTime": "2026-06-01T13:00:00-04:00", "timeZone": "America/New_York"}}
    data = from_google(flight)
    assert data["time_zone"] == ["Europe/Berlin", "America/New_York"]
    body = to_google(data)
    assert (body["start"]["timeZone"], body["end"]["timeZone"]) == ("Europe/Berlin", "America/New_York")
    assert body["end"]["dateTime"].endswith("-04:00")
    same = from_google({**flight, "end": {"dateTime": "2026-06-01T13:00:00+02:00", "timeZone": "Europe/Berlin"}})
    assert same["time_zone"] == "Europe/Berlin"  # one zone: hashed as before end zones existed
    series = {**from_google(event("x0002", "Daily", NOW)), "recurrence": ["RRULE:FREQ=DAILY"]}
    assert to_google(series, calendar_zone="Asia/Tokyo")["start"]["timeZone"] == "Asia/Tokyo"
    assert to_google({**series, "recurrence": None}, calendar_zone="Asia/Tokyo")["start"]["timeZone"] is None  # none set (a patch clears it)


def test_fake_refuses_list_bounds_without_offset_or_empty_and_ordering_without_single_events(fake, api):
    # events.list (https://developers.google.com/calendar/api/v3/reference/events/list):
    # timeMin/timeMax "Must be an RFC3339 timestamp with mandatory time zone
    # offset"; "If timeMax is set, timeMin must be smaller than timeMax";
    # orderBy startTime "is only available when querying single events".
    later = (NOW + timedelta(days=1)).isoformat()
    for params in ({"timeMin": "2026-01-01T00:00:00"}, {"timeMax": "2026-01-01T00:00:00"},
                   {"timeMin": later, "timeMax": NOW.isoformat()}, {"orderBy": "startTime"}):
        with pytest.raises(HttpError) as exc:
            api.list_events("primary", **params)
        assert classify(exc.value).status == 400, params
    assert api.list_events("primary", timeMin=NOW.isoformat(), timeMax=later, orderBy="startTime", singleEvents=True)["items"] == []


def test_fake_refuses_times_without_a_zone_and_unknown_zones(fake, api):
    # Event resource (https://developers.google.com/calendar/api/v3/reference/events):
    # start.dateTime "A time zone offset is required unless a time zone is
    # explicitly specified in timeZone"; timeZone is "an IANA Time Zone
    # Database name, e.g. "Europe/Zurich"".
    naive = {"start": {"dateTime": "2026-12-20T09:00:00"}, "end": {"dateTime": "2026-12-20T10:00:00"}}
    unknown = {"start": {"dateTime": "2026-12-20T09:00:00Z", "timeZone": "Mars/Olympus_Mons"},
               "end": {"dateTime": "2026-12-20T10:00:00Z", "timeZone": "Mars/Olympus_Mons"}}
    zoned = {"start": {"dateTime": "2026-12-20T09:00:00", "timeZone": "Asia/Tokyo"},
             "end": {"dateTime": "2026-12-20T10:00:00", "timeZone": "Asia/Tokyo"}}
    results = api.execute_batch([
        ("naive", api.insert_request("primary", {"summary": "n", **naive})),
        ("unknown", api.insert_request("primary", {"summary": "u", **unknown})),
        ("zoned", api.insert_request("primary", {"id": "local0001", "summary": "z", **zoned})),
    ])
    assert classify(results["naive"][1]).status == 400 and classify(results["unknown"][1]).status == 400
    assert results["zoned"][1] is None  # wall time in its zone: 09:00 Tokyo is 00:00 UTC
    listed = api.list_events("primary", timeMin="2026-12-20T00:00:00Z", timeMax="2026-12-20T00:30:00Z")
    assert [i["id"] for i in listed["items"]] == ["local0001"]


def test_fake_refuses_bad_recurrence_lines_and_attendee_emails(fake, api):
    # Event resource (https://developers.google.com/calendar/api/v3/reference/events):
    # recurrence: "List of RRULE, EXRULE, RDATE and EXDATE lines ... DTSTART
    # and DTEND lines are not allowed"; attendees[].email "must be present
    # when adding an attendee. It must be a valid email address".
    when = timed(NOW + timedelta(days=1), 1, "UTC")
    bad = {
        "garbage": {"recurrence": ["every day"]}, "dtstart": {"recurrence": ["DTSTART:20261201T090000Z", "RRULE:FREQ=DAILY"]},
        "noemail": {"attendees": [{"displayName": "Bob"}]}, "bademail": {"attendees": [{"email": "not an email"}]},
    }
    results = api.execute_batch([(k, api.insert_request("primary", {"summary": k, **when, **v})) for k, v in bad.items()]
                                + [("fine", api.insert_request("primary", {"summary": "ok", **when, "attendees": [{"email": "a@example.com"}],
                                                                            "recurrence": ["RRULE:FREQ=DAILY;COUNT=2", "EXDATE:20261230T090000Z"]}))])
    assert {k: classify(results[k][1]).status for k in bad} == dict.fromkeys(bad, 400)
    assert results["fine"][1] is None


def test_fake_patch_merges_nested_objects_and_null_deletes(fake, api):
    # Calendar API performance guide, "Patch semantics"
    # (https://developers.google.com/calendar/api/guides/performance#patch):
    # the data sent "is merged into the data for the parent object, if there
    # is one"; "To delete a field, specify the field and set it to null";
    # "Patch requests that contain arrays replace the existing array".
    fake.store.put_event("primary", {"id": "merge00001", "summary": "M", "attendees": [{"email": "a@example.com"}],
                                     "start": {"dateTime": "2026-12-20T09:00:00+01:00", "timeZone": "Europe/Berlin"},
                                     "end": {"dateTime": "2026-12-20T10:00:00+01:00", "timeZone": "Europe/Berlin"}})
    moved = api.execute_batch([("0", api.patch_request("primary", "merge00001", {
        "start": {"dateTime": "2026-12-20T11:00:00+01:00"}, "end": {"dateTime": "2026-12-20T12:00:00+01:00", "timeZone": None},
        "attendees": [{"email": "b@example.com"}]}, None))])["0"][0]
    assert moved["start"] == {"dateTime": "2026-12-20T11:00:00+01:00", "timeZone": "Europe/Berlin"}  # the zone left out stays
    assert moved["end"] == {"dateTime": "2026-12-20T12:00:00+01:00"}  # null deleted it
    assert [a["email"] for a in moved["attendees"]] == ["b@example.com"]  # an array is replaced
