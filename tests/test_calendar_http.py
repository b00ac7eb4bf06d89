"""calendar_sync over HTTP and the CLI: actions, the events read API (ETag,
304, cache), rate limits, admin scope, push notifications."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from safesync.functions import cli
from safesync.functions.calendar import calendar_status, handle_http, handle_notify
from safesync.shared.auth import Principal
from safesync.shared.config import load_settings
from safesync.shared.errors import AuthError
from safesync.shared.http import Call
from tests.fake_calendar.fixtures import cal_settings, fake, qstash  # noqa: F401
from tests.fake_calendar.helpers import NOW, app_update, connect, qstash_delivery, rows
from tests.test_calendar_sync import seed


@pytest.fixture
def client():
    from safesync.functions.serve import create_app

    return create_app().test_client()


def post(client, body, token="SAFESYNC_API_TOKEN", headers=None):
    return client.post(
        "/calendar_sync", json=body, headers={"Authorization": f"Bearer {os.environ[token]}", **(headers or {})}
    )


def window(days_from=0, days_to=7):
    return {"from": (NOW + timedelta(days=days_from)).date().isoformat(), "to": (NOW + timedelta(days=days_to)).date().isoformat()}


def test_sync_status_and_events_over_http(fake, cal_settings, client):
    cal_settings()
    seed(fake, 6)  # day 1, every 3 hours
    fake.store.put_event("primary", {"id": "later000001", "summary": "Later", "start": {"dateTime": (NOW + timedelta(days=20)).isoformat()},
                                     "end": {"dateTime": (NOW + timedelta(days=20, hours=1)).isoformat()}})
    r = post(client, {"mode": "full"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["details"]["counts"]["inserted"] == 7
    r = post(client, {"action": "status"})
    assert r.status_code == 200 and r.get_json()["details"]["health"] == "ok"

    r = post(client, {"action": "events", **window()})
    assert r.status_code == 200
    etag = r.headers["ETag"]
    assert "max-age=300" in r.headers["Cache-Control"] and r.headers["X-Cache"] == "miss"
    assert [e["title"] for e in r.get_json()["events"]] == [f"Event {i}" for i in range(6)]
    later = post(client, {"action": "events", **window(15, 25)})
    assert later.get_json()["count"] == 1
    r = post(client, {"action": "events", **window()}, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.data == b"" and r.headers["ETag"] == etag and r.headers["X-Cache"] == "hit"

    fake.store.edit("primary", "e0000000", {"summary": "Renamed"})
    assert post(client, {"mode": "incremental"}).status_code == 200
    r = post(client, {"action": "events", **window()}, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["X-Cache"] == "miss" and r.headers["ETag"] != etag
    assert r.get_json()["events"][0]["title"] == "Renamed"
    assert post(client, {"action": "events", **window(15, 25)}).headers["X-Cache"] == "hit"  # untouched window stays cached

    w = window()
    r = client.get(f"/calendar_sync?action=events&from={w['from']}&to={w['to']}",
                   headers={"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}", "If-None-Match": r.headers["ETag"]})
    assert r.status_code == 304
    r = post(client, {"action": "events", "from": "2026-13-01", "to": "2027-01-01"})
    assert r.status_code == 400 and "from" in r.get_json()["error"]
    assert post(client, {"mode": "weekly"}).status_code == 400
    assert post(client, {"mode": "full", "extra": 1}).status_code == 400
    assert post(client, {}).status_code == 400


def test_events_read_by_get_through_the_handler(fake, cal_settings):
    settings = cal_settings()
    seed(fake, 2)
    call = lambda headers: Call("calendar_sync", "POST", {"mode": "full"}, Principal("bearer", "t", frozenset({"run"})), headers, {}, _settings=settings)  # noqa: E731
    assert handle_http(call({})).status == 200
    get = Call("calendar_sync", "GET", {}, Principal("bearer", "t", frozenset({"run"})), {}, {"action": "events", **window()}, _settings=settings)
    response = handle_http(get)
    assert response.status_code == 200 and json.loads(response.data)["count"] == 2
    mutate = Call("calendar_sync", "GET", {}, Principal("bearer", "t", frozenset({"run"})), {}, {"mode": "full"}, _settings=settings)
    with pytest.raises(Exception, match="use POST"):
        handle_http(mutate)


def test_rate_limit_per_caller_answers_429_with_retry_after(fake, cal_settings, client):
    cal_settings("rate_limit_per_minute = 3\n")
    assert post(client, {"mode": "full"}).status_code == 200
    codes = [post(client, {"action": "status"}).status_code for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429
    r = post(client, {"action": "status"})
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.get_json()["detail"]["retry_after"] == int(r.headers["Retry-After"])
    # another identity has its own budget
    assert post(client, {"action": "status"}, token="SAFESYNC_ADMIN_TOKEN").status_code == 200
    with connect(load_settings()) as conn:
        assert conn.execute("select count(distinct identity) as n from calendar.rate_limits").fetchone()["n"] == 2


def test_admin_actions_need_the_admin_token(fake, cal_settings, client):
    settings = cal_settings()
    seed(fake, 3)
    assert post(client, {"action": "resync"}).status_code == 403
    assert post(client, {"mode": "full", "force": True}).status_code == 403
    assert post(client, {"action": "retry_all"}).status_code == 403
    r = post(client, {"action": "resync"}, token="SAFESYNC_ADMIN_TOKEN")
    assert r.status_code == 200 and r.get_json()["action"] == "resync"
    with connect(settings) as conn:
        conn.execute("set safesync.sync_writer = 'on'")
        conn.execute("update calendar.events set sync_status = 'sync_failed', sync_retries = 3, title = 'retry me' where google_event_id = 'e0000000'")
    r = post(client, {"action": "retry_all"}, token="SAFESYNC_ADMIN_TOKEN")
    assert r.status_code == 200, r.get_json()
    assert rows(settings)["e0000000"]["sync_status"] == "synced"
    assert fake.store.live("primary")["e0000000"]["summary"] == "retry me"


def deliver(client, message):
    """QStash delivering a published message to this server."""
    body, headers = qstash_delivery(message)
    return client.post(urlsplit(message["destination"]).path, data=body, headers=headers)


def test_push_notifications_are_recorded_once_and_queue_one_sync(fake, qstash, cal_settings, client):
    settings = cal_settings()
    settings.config = settings.config.model_copy(update={"calendar": settings.config.calendar.model_copy(update={"notify_debounce_s": 60})})
    seed(fake, 3)
    assert post(client, {"mode": "full"}).status_code == 200
    r = post(client, {"action": "watch"})
    assert r.status_code == 200, r.get_json()
    channel_id = r.get_json()["tables"]["channels"][0]["channel"]
    assert fake.store.channels[channel_id]["address"] == "https://safesync.example.test/calendar_notify"
    with connect(settings) as conn:
        stored = conn.execute("select * from calendar.channels").fetchone()
    assert stored["token_sha256"] != fake.store.channels[channel_id]["token"]  # only the hash is kept
    handshake = fake.store.notifications.pop()
    assert handle_notify(settings, handshake["headers"]).body["ignored"] == "channel handshake"

    fake.store.edit("primary", "e0000001", {"summary": "changed upstream"})
    note = fake.store.notifications.pop()
    answer = handle_notify(settings, note["headers"])
    assert answer.status == 200 and answer.body["queued"] is True and answer.body["delay_s"] == 0  # no incremental ran yet
    [message] = qstash.published
    assert message["destination"] == "https://safesync.example.test/calendar_sync"
    assert json.loads(message["body"]) == {"mode": "incremental", "calendar_id": "primary"}
    assert rows(settings)["e0000001"]["title"] == "Event 1"  # nothing synced inside Google's request
    assert handle_notify(settings, note["headers"]).body["duplicate"] is True  # Google retrying the same message
    fake.store.edit("primary", "e0000002", {"summary": "changed again"})
    again = handle_notify(settings, fake.store.notifications.pop()["headers"])
    assert (again.body["queued"], again.body["pending"]) == (False, True) and len(qstash.published) == 1  # one sync queued

    forged = dict(note["headers"], **{"X-Goog-Channel-Token": "guess"})
    with pytest.raises(AuthError):
        handle_notify(settings, forged)
    with pytest.raises(AuthError):
        handle_notify(settings, {"X-Goog-Channel-ID": channel_id})

    r = deliver(client, message)  # QStash runs the sync in its own request
    assert r.status_code == 200, r.get_json()
    local = rows(settings)
    assert (local["e0000001"]["title"], local["e0000002"]["title"]) == ("changed upstream", "changed again")
    with connect(settings) as conn:
        state = conn.execute("select * from calendar.sync_state").fetchone()
    assert state["notify_pending_since"] is None and state["notify_queued_at"] is None
    # The next change queues the next sync, debounced after the one that just ran.
    fake.store.edit("primary", "e0000000", {"summary": "third"})
    third = handle_notify(settings, fake.store.notifications.pop()["headers"])
    assert third.body["queued"] is True and 50 <= third.body["delay_s"] <= 60
    assert qstash.published[1]["headers"]["upstash-delay"] == f"{third.body['delay_s']}s"

    # Renewal: a channel close to expiry is replaced and the old one stopped.
    assert post(client, {"action": "watch"}).get_json()["tables"]["channels"][0]["action"] == "kept"
    with connect(settings) as conn:
        conn.execute("update calendar.channels set expiration = now() + interval '1 hour'")
    assert calendar_status(settings)["health"] == "degraded"
    assert "within the renewal margin" in calendar_status(settings)["reason"]
    r = post(client, {"action": "watch"}).get_json()["tables"]["channels"][0]
    assert r["action"] == "opened" and r["stopped"] == 1 and fake.store.channels[channel_id]["stopped"]
    assert handle_notify(settings, note["headers"]).body["ignored"] == "channel stopped"
    assert "push channel" not in calendar_status(settings)["reason"]
    with connect(settings) as conn:  # the channel lapses (no watch ran): status says so
        conn.execute("update calendar.channels set expiration = now() - interval '1 minute'")
    assert "no active push channel" in calendar_status(settings)["reason"]


def test_notifications_without_qstash_stay_pending_for_the_schedule(fake, qstash, cal_settings, client, monkeypatch):
    settings = cal_settings()
    seed(fake, 2)
    assert post(client, {"action": "watch"}).status_code == 200
    fake.store.notifications.clear()
    qstash.latency = 5  # QStash not answering in time: Google still gets its answer
    fake.store.edit("primary", "e0000000", {"summary": "slow queue"})
    started = time.monotonic()
    slow = handle_notify(settings, fake.store.notifications.pop()["headers"])
    assert time.monotonic() - started < 4.5
    assert slow.body["pending"] is True and "QStash publish failed" in slow.body["reason"]
    monkeypatch.delenv("QSTASH_TOKEN")
    fake.store.edit("primary", "e0000001", {"summary": "no queue"})
    answer = handle_notify(settings, fake.store.notifications.pop()["headers"])
    assert answer.body["pending"] is True and "QSTASH_TOKEN is not set" in answer.body["reason"]
    assert post(client, {"mode": "incremental"}).status_code == 200  # the schedule catches up
    assert rows(settings)["e0000000"]["title"] == "slow queue"
    with connect(settings) as conn:
        assert conn.execute("select notify_pending_since from calendar.sync_state").fetchone()["notify_pending_since"] is None


def test_cli_sync_status_and_events(fake, cal_settings, capsys):
    cal_settings()
    seed(fake, 2)
    assert cli.main(["calendar", "sync", "--mode", "full", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["details"]["counts"]["inserted"] == 2
    assert cli.main(["calendar", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["details"]["health"] == "ok"
    assert cli.main(["calendar", "events", "--from", window()["from"], "--to", window()["to"]]) == 0
    assert "Event 1" in capsys.readouterr().out
    assert cli.main(["calendar", "sync", "--mode", "incremental", "--calendar", "other"]) == 2


def test_notifications_through_the_calendar_notify_route(fake, qstash, cal_settings, client):
    settings = cal_settings()
    seed(fake, 2)
    assert post(client, {"action": "watch"}).status_code == 200
    handshake = fake.store.notifications.pop()
    r = client.post("/calendar_notify", headers=handshake["headers"])
    assert r.status_code == 200 and r.get_json()["ignored"] == "channel handshake"
    fake.store.edit("primary", "e0000000", {"summary": "pushed to us"})
    r = client.post("/calendar_notify", headers=fake.store.notifications.pop()["headers"])
    assert r.status_code == 200 and r.get_json()["queued"] is True, r.get_json()
    assert deliver(client, qstash.published[-1]).status_code == 200
    assert rows(settings)["e0000000"]["title"] == "pushed to us"
    forged = {**handshake["headers"], "X-Goog-Channel-Token": "forged"}
    assert client.post("/calendar_notify", headers=forged).status_code == 401
    assert client.post("/calendar_notify", headers={"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"}).status_code == 401


@pytest.mark.parametrize("header, value", [
    ("X-Goog-Resource-ID", "caf\u00e9"),
    ("X-Goog-Resource-State", "exists\x00"),
    ("X-Goog-Resource-State", "x" * 257),
], ids=["non-ascii-resource-id", "nul-state", "long-state"])
def test_a_notification_with_malformed_resource_headers_is_401_not_500(fake, qstash, cal_settings, client, header, value):
    """With a valid channel token, a non-ASCII resource id (compare_digest
    raised TypeError) or a NUL in the state (PostgreSQL refused the insert)
    was a 500; now it is refused before anything is recorded."""
    settings = cal_settings()
    seed(fake, 2)
    assert post(client, {"action": "watch"}).status_code == 200
    fake.store.notifications.pop()  # the handshake
    fake.store.edit("primary", "e0000000", {"summary": "pushed"})
    headers = {**fake.store.notifications.pop()["headers"], header: value}
    r = client.post("/calendar_notify", headers=headers)
    assert r.status_code == 401 and r.is_json and "error" in r.get_json(), r.get_data()[:200]
    with connect(settings) as conn:
        assert conn.execute("select count(*) as n from calendar.notifications").fetchone()["n"] == 0
    assert qstash.published == []


def test_malformed_notification_headers_are_4xx_never_500(fake, qstash, cal_settings, client):
    """A notification with a valid channel token but odd headers: non-ASCII
    digits in X-Goog-Message-Number ("²" made int() fail: 500; "١" read as 1,
    a false duplicate) and a non-ASCII X-Goog-Resource-ID (compare_digest
    raised TypeError: 500)."""
    cal_settings()
    seed(fake, 2)
    assert post(client, {"action": "watch"}).status_code == 200
    fake.store.notifications.clear()
    fake.store.edit("primary", "e0000000", {"summary": "x"})
    headers = fake.store.notifications.pop()["headers"]
    for change, status in (({"X-Goog-Message-Number": "\u00b2"}, 400), ({"X-Goog-Message-Number": "\u0661"}, 400),
                           ({"X-Goog-Message-Number": "0"}, 400), ({"X-Goog-Resource-ID": "r\u00e9s"}, 401)):
        r = client.post("/calendar_notify", headers={**headers, **change})
        assert (r.status_code, "error" in r.get_json()) == (status, True), (change, r.get_json())
    r = client.post("/calendar_notify", headers=headers)
    assert r.status_code == 200 and r.get_json()["queued"] is True  # the real message is still fresh


@pytest.mark.parametrize("bounds", [
    {"from": "9999-12-31", "to": "9999-12-31T23:59:59+00:00"},
    {"from": "0001-01-01T00:00:00+14:00", "to": "0001-01-02"},
])
def test_events_window_at_the_ends_of_the_calendar_is_400_not_500(fake, cal_settings, client, bounds):
    """Bounds in year 9999 or 1 overflowed the window's date arithmetic (500)."""
    cal_settings()
    r = post(client, {"action": "events", **bounds})
    assert r.status_code == 400 and "out of range" in r.get_json()["error"], r.get_json()


def test_channels_of_a_calendar_removed_from_the_config_are_stopped(fake, qstash, cal_settings, client):
    """A calendar taken out of calendar.calendar_ids kept its push channel
    open (watch only looked at the configured calendars): Google delivered
    its changes until the channel's expiry, and each notification queued a
    sync that calendar_sync refused. Google: "To stop receiving messages
    about a particular resource, make a POST request to the channels.stop
    method" (developers.google.com/calendar/api/guides/push)."""
    from safesync.functions.calendar.watch import watch

    settings = cal_settings()
    both = settings.config.calendar.model_copy(update={"calendar_ids": ["primary", "team"]})
    settings.config = settings.config.model_copy(update={"calendar": both})
    fake.store.put_event("team", {"id": "t0000000", "summary": "Team", "start": {"dateTime": NOW.isoformat()},
                                  "end": {"dateTime": (NOW + timedelta(hours=1)).isoformat()}})
    assert watch(settings).status == 200
    team = next(c for c in fake.store.channels.values() if c["calendar_id"] == "team")
    fake.store.notifications.clear()
    only_primary = both.model_copy(update={"calendar_ids": ["primary"]})
    settings.config = settings.config.model_copy(update={"calendar": only_primary})

    fake.store.edit("team", "t0000000", {"summary": "still watched"})
    note = fake.store.notifications.pop()  # before the next watch run: nothing queued for a calendar not synced
    answer = handle_notify(settings, note["headers"])
    assert answer.status == 200 and answer.body["ignored"] == "calendar not configured", answer.body
    assert qstash.published == []

    answer = watch(settings)
    assert answer.status == 200, answer.body
    assert team.get("stopped") is True
    removed = [r for r in answer.body["tables"]["channels"] if r["calendar"] == "team"]
    assert removed and removed[0]["action"] == "stopped: calendar not configured" and removed[0]["stopped"] == 1
    with connect(settings) as conn:
        left = conn.execute("select count(*) as n from calendar.channels where calendar_id = 'team' and stopped_at is null").fetchone()
    assert left["n"] == 0
    assert handle_notify(settings, note["headers"]).body["ignored"] == "channel stopped"
    assert "1 stopped" in answer.body["summary"]


def test_an_event_whose_conference_data_does_not_decrypt_is_named_not_a_failed_read(fake, cal_settings, client):
    """One row whose conference_data does not decrypt (written in clear by
    the app, or under an older key) made every read of its window a 503
    that did not say which event."""
    settings = cal_settings()
    seed(fake, 3)
    assert post(client, {"mode": "full"}).status_code == 200
    app_update(settings, "e0000001", conference_data=b'{"conferenceId": "plain"}')
    r = post(client, {"action": "events", **window()})
    assert r.status_code == 200, r.get_json()
    events = {e["google_event_id"]: e for e in r.get_json()["events"]}
    assert len(events) == 3 and events["e0000001"]["conference"] is None
    assert "not in the expected encrypted format" in events["e0000001"]["conference_error"]
    assert "conference_error" not in events["e0000000"]


def test_a_calendar_whose_watch_fails_does_not_keep_the_others_from_renewal(fake, cal_settings, monkeypatch):
    """events.watch refused for one calendar (403) ended the watch run at
    that calendar: the calendars after it were never renewed, and their
    channels lapsed. Now every calendar is renewed and the run fails naming
    the one that was refused."""
    from safesync.functions.calendar.watch import watch
    from tests.fake_calendar.store import ApiError

    settings = cal_settings()
    both = settings.config.calendar.model_copy(update={"calendar_ids": ["team", "primary"]})
    settings.config = settings.config.model_copy(update={"calendar": both})
    real_watch = fake.store.watch

    def refuse_team(cal, body):
        if cal == "team":
            raise ApiError(403, "forbidden", "The caller does not have permission")
        return real_watch(cal, body)

    monkeypatch.setattr(fake.store, "watch", refuse_team)
    answer = watch(settings)
    assert answer.status == 503 and "calendar team: events.watch failed: 403 forbidden" in answer.body["error"], answer.body
    assert [c["calendar_id"] for c in fake.store.channels.values()] == ["primary"]
    with connect(settings) as conn:
        assert [r["calendar_id"] for r in conn.execute("select calendar_id from calendar.channels").fetchall()] == ["primary"]
