"""The fake's calendar state and the Calendar v3 rules it enforces.

Operations raise ``ApiError(status, reason, message)`` exactly where Google
answers an error: syncToken with a time filter → 400, expired token → 410
fullSyncRequired, stale If-Match → 412 conditionNotMet, existing id → 409
duplicate, unknown event → 404 notFound, deleting a deleted event → 410
deleted. Every change bumps a global version; sync tokens and etags derive
from it, so an incremental listing returns exactly what changed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import random
import re
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .recurrence import occurrences

ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
FORBIDDEN_WITH_SYNC = ("timeMin", "timeMax", "updatedMin", "q", "iCalUID", "orderBy", "privateExtendedProperty", "sharedExtendedProperty")


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, domain: str = "global") -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.domain = status, reason, message, domain

    def body(self) -> dict[str, Any]:
        return {"error": {"errors": [{"domain": self.domain, "reason": self.reason, "message": self.message}], "code": self.status, "message": self.message}}


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(text: str, zone: str | None = None) -> datetime:
    """An RFC 3339 instant; one without an offset is wall time in ``zone``."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone or "UTC"))
    return moment.astimezone(timezone.utc)


def _has_offset(text: str) -> bool:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def _bounds(event: dict) -> tuple[datetime, datetime]:
    s, e = event["start"], event["end"]
    if "date" in s:
        return (datetime.fromisoformat(s["date"]).replace(tzinfo=timezone.utc), datetime.fromisoformat(e["date"]).replace(tzinfo=timezone.utc))
    return _instant(s["dateTime"], s.get("timeZone")), _instant(e["dateTime"], e.get("timeZone") or s.get("timeZone"))


def _check_zones(event: dict) -> None:
    """Event resource, EventDateTime (https://developers.google.com/calendar/api/v3/reference/events):
    ``dateTime``: "A time zone offset is required unless a time zone is
    explicitly specified in timeZone"; ``timeZone``: "Formatted as an IANA
    Time Zone Database name, e.g. "Europe/Zurich"". Google answers 400
    "Missing time zone definition" / "Invalid time zone definition"."""
    for side in ("start", "end"):
        value = event.get(side) or {}
        zone = value.get("timeZone")
        if zone:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ApiError(400, "invalid", f"Invalid time zone definition for {side} time.") from None
        if "dateTime" in value and not zone and not _has_offset(value["dateTime"]):
            raise ApiError(400, "invalid", f"Missing time zone definition for {side} time.")


RECURRENCE_LINE = re.compile(r"^(RRULE|EXRULE|RDATE|EXDATE)[:;]")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")


def _check_content(event: dict) -> None:
    """Event resource (https://developers.google.com/calendar/api/v3/reference/events):
    recurrence is a "List of RRULE, EXRULE, RDATE and EXDATE lines ... Note
    that DTSTART and DTEND lines are not allowed in this field"; an
    attendee's email "must be present when adding an attendee. It must be a
    valid email address as per RFC5322"."""
    for line in event.get("recurrence") or []:
        if not isinstance(line, str) or not RECURRENCE_LINE.match(line):
            raise ApiError(400, "invalid", "Invalid recurrence rule.")
    for attendee in event.get("attendees") or []:
        email = attendee.get("email") if isinstance(attendee, dict) else None
        if not isinstance(email, str) or not EMAIL_RE.match(email):
            raise ApiError(400, "invalid", "Invalid attendee email.")


def _check_list_bounds(params: dict[str, str]) -> None:
    """events.list / events.instances (https://developers.google.com/calendar/api/v3/reference/events/list):
    timeMin and timeMax "Must be an RFC3339 timestamp with mandatory time
    zone offset"; "If timeMax is set, timeMin must be smaller than timeMax";
    orderBy "startTime" "is only available when querying single events (i.e.
    the parameter singleEvents is True)"."""
    for name in ("timeMin", "timeMax"):
        if name in params and not _has_offset(params[name]):
            raise ApiError(400, "badRequest", f"Bad Request: {name} must be an RFC3339 timestamp with a time zone offset.")
    if "timeMin" in params and "timeMax" in params and _instant(params["timeMin"]) >= _instant(params["timeMax"]):
        raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", "calendar")
    if params.get("orderBy") == "startTime" and params.get("singleEvents") != "true":
        raise ApiError(400, "invalid", "The requested ordering is not available for the particular query.")


def _original_key(text: str) -> str:
    """An original start as the fake keys it: a date, or a UTC instant."""
    if "T" not in text:
        return text
    return _instant(text).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_field(target: dict, key: str, value: Any, *, nested: bool) -> None:
    """Patch semantics (Calendar API performance guide, "Patch semantics"):
    the data sent "is merged into the data for the parent object"; a field
    set to null is deleted; an array replaces the existing array. So a
    nested object (start, end) keeps every sub-field the patch leaves out.
    ``nested`` False: update (PUT) semantics, the value replaces."""
    if value is None:
        target.pop(key, None)
    elif nested and isinstance(value, dict) and isinstance(target.get(key), dict):
        for sub, sub_value in value.items():
            _merge_field(target[key], sub, sub_value, nested=True)
    else:
        target[key] = _without_nulls(value)


def _without_nulls(value: Any) -> Any:
    """A new value as stored: nulls in it set nothing."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return copy.deepcopy(value)


def _validate_times(event: dict) -> None:
    s, e = event.get("start"), event.get("end")
    if not s or not e:
        raise ApiError(400, "required", "Missing end time." if s else "Missing start time.")
    _check_zones(event)
    _check_content(event)
    if ("date" in s) != ("date" in e):
        raise ApiError(400, "invalid", "Start and end times must either both be date or both be dateTime.")
    start, end = _bounds(event)
    if end <= start and not ("dateTime" in s and end == start):
        raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", "calendar")
    if event.get("recurrence") and "dateTime" in s and not s.get("timeZone"):
        raise ApiError(400, "invalid", "Missing time zone definition for start time.")


class FakeStore:
    """Calendars keyed by id, each a dict of event id → event resource."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.version = 0
        self.calendars: dict[str, dict[str, dict]] = {}
        self.token_epoch: Counter[str] = Counter()
        self.channels: dict[str, dict] = {}
        self.notifications: list[dict] = []
        self.permanent_failures: dict[str, tuple[int, str, str]] = {}
        self.writes: Counter[str] = Counter()
        self.instance_keys: dict[str, tuple[str, str]] = {}  # instance id -> (series id, original start)
        self.time_zone = "UTC"  # every calendar's (events.list answers carry it)
        self.clock_offset = timedelta(0)
        self.message_step = random.Random(7)

    # -- helpers --------------------------------------------------------------
    def events(self, cal: str) -> dict[str, dict]:
        return self.calendars.setdefault(cal, {})

    def _bump(self, cal: str, event: dict, *, significant: bool = False) -> None:
        self.version += 1
        event["_version"] = self.version
        event["etag"] = f'"{3100000000000000 + self.version}"'
        event["updated"] = _now_text()
        if significant:
            event["sequence"] = event.get("sequence", 0) + 1
        self._notify(cal)

    def now(self) -> datetime:
        """The fake's clock (``clock_offset`` moves it: channels expire)."""
        return datetime.now(timezone.utc) + self.clock_offset

    def _live(self, channel: dict) -> bool:
        return not channel.get("stopped") and channel["expiration"] > self.now()

    def _notify(self, cal: str) -> None:
        # Push guide: message numbers "increase for each subsequent message
        # on the channel, but they are not sequential"; an expired channel
        # sends nothing (Google does not renew channels).
        for channel in self.channels.values():
            if channel["calendar_id"] == cal and self._live(channel):
                channel["messages"] += self.message_step.randint(1, 3)
                self.notifications.append(self._message(channel, "exists"))

    @staticmethod
    def _message(channel: dict, state: str) -> dict:
        headers = {
            "X-Goog-Channel-ID": channel["id"],
            "X-Goog-Message-Number": str(channel["messages"]),
            "X-Goog-Resource-ID": channel["resourceId"],
            "X-Goog-Resource-State": state,
            "X-Goog-Resource-URI": f"https://www.googleapis.com/calendar/v3/calendars/{channel['calendar_id']}/events?alt=json",
            "X-Goog-Channel-Expiration": channel["expiration_text"],
        }
        if channel.get("token"):
            headers["X-Goog-Channel-Token"] = channel["token"]
        return {"address": channel["address"], "headers": headers}

    @staticmethod
    def public(event: dict) -> dict:
        """The resource as the API returns it (a deleted event is reduced to
        its identity, as in incremental listings)."""
        if event.get("status") == "cancelled":
            keep = ("kind", "id", "etag", "status", "updated", "recurringEventId", "originalStartTime", "iCalUID")
            return {k: copy.deepcopy(event[k]) for k in keep if k in event}
        return {k: copy.deepcopy(v) for k, v in event.items() if not k.startswith("_")}

    def _check_permanent(self, event_id: str) -> None:
        failure = self.permanent_failures.get(event_id)
        if failure:
            raise ApiError(*failure)

    # -- seeding (tests: "someone edited Google") -------------------------------
    def put_event(self, cal: str, body: dict) -> dict:
        """Create or replace an event as another Google user would."""
        with self.lock:
            event = self._new_event(cal, body)
            self.events(cal)[event["id"]] = event
            self._bump(cal, event)
            return self.public(event)

    def edit(self, cal: str, event_id: str, changes: dict) -> dict:
        with self.lock:
            return self.patch(cal, event_id, changes, None, check_permanent=False)

    def remove(self, cal: str, event_id: str) -> None:
        with self.lock:
            self.delete(cal, event_id, None, check_permanent=False)

    def expire_tokens(self, cal: str) -> None:
        with self.lock:
            self.token_epoch[cal] += 1

    def live(self, cal: str) -> dict[str, dict]:
        with self.lock:
            return {k: self.public(v) for k, v in self.events(cal).items()}

    # -- tokens ---------------------------------------------------------------
    # A token remembers the time window of the listing that produced it:
    # Google's sync guide lets the initial full sync be "restricted using
    # request parameters if you only want to synchronize a specific subset",
    # and the token then syncs that subset — changes outside the window never
    # come back through it.
    def _token(self, cal: str, version: int, window: tuple[str, str]) -> str:
        raw = "\x00".join(["v2", cal, str(self.token_epoch[cal]), str(version), *window])
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def _token_parts(self, cal: str, token: str) -> tuple[int, tuple[str, str]]:
        try:
            tag, tcal, epoch, version, tmin, tmax = base64.urlsafe_b64decode(token.encode()).decode().split("\x00")
            assert tag == "v2" and tcal == cal
        except Exception:
            raise ApiError(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.") from None
        if int(epoch) != self.token_epoch[cal]:
            raise ApiError(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.")
        return int(version), (tmin, tmax)

    def token_window(self, cal: str, token: str) -> tuple[str, str] | None:
        """The timeMin/timeMax a token's listing had (tests: None = unbounded)."""
        _, window = self._token_parts(cal, token)
        return window if any(window) else None

    # -- events.list ------------------------------------------------------------
    def list(self, cal: str, params: dict[str, str]) -> dict:
        with self.lock:
            sync = params.get("syncToken")
            if sync:
                bad = [p for p in FORBIDDEN_WITH_SYNC if p in params]
                if bad:
                    raise ApiError(400, "invalid", f"Sync token cannot be combined with {', '.join(bad)}.")
                if params.get("showDeleted") == "false":
                    raise ApiError(400, "invalid", "showDeleted cannot be false with a sync token.")
            _check_list_bounds(params)
            max_results = min(int(params.get("maxResults", "250")), 2500)
            page = params.get("pageToken")
            query_key = hashlib.sha256(repr(sorted((k, v) for k, v in params.items() if k != "pageToken")).encode()).hexdigest()[:16]
            after, snapshot = "", self.version
            if page:
                try:
                    q, after, snap = base64.urlsafe_b64decode(page.encode()).decode().split("\x00")
                except Exception:
                    raise ApiError(400, "invalid", "Invalid page token.") from None
                if q != query_key:
                    raise ApiError(400, "invalid", "The page token does not match the query.")
                snapshot = int(snap)
            if sync:
                since, window = self._token_parts(cal, sync)
                scope = dict(params, **{k: v for k, v in zip(("timeMin", "timeMax"), window) if v})
            else:
                since, window, scope = None, (params.get("timeMin", ""), params.get("timeMax", "")), params
            items = self._select(cal, scope, since)
            items = [i for i in items if i["id"] > after]
            items.sort(key=lambda i: i["id"])
            chunk = items[:max_results]
            out: dict[str, Any] = {"kind": "calendar#events", "summary": cal, "timeZone": self.time_zone, "items": chunk}
            if len(items) > max_results:
                raw = f"{query_key}\x00{chunk[-1]['id']}\x00{snapshot}"
                out["nextPageToken"] = base64.urlsafe_b64encode(raw.encode()).decode()
            else:
                out["nextSyncToken"] = self._token(cal, snapshot, window)
            return out

    def _select(self, cal: str, params: dict[str, str], since: int | None) -> list[dict]:
        single = params.get("singleEvents") == "true"
        show_deleted = params.get("showDeleted") == "true" or since is not None
        tmin = _instant(params["timeMin"]) if "timeMin" in params else None
        tmax = _instant(params["timeMax"]) if "timeMax" in params else None
        horizon = tmax or datetime.now(timezone.utc) + timedelta(days=400)
        events = self.events(cal)
        out: list[dict] = []

        def in_window(start: datetime, end: datetime) -> bool:
            return (tmin is None or end > tmin) and (tmax is None or start < tmax)

        for event in events.values():
            if since is not None and event["_version"] <= since:
                continue
            cancelled = event.get("status") == "cancelled"
            if event.get("recurrence") and not cancelled:
                if single:
                    out += [i for i in self._instances(cal, event, horizon) if in_window(*_bounds(i)) and (show_deleted or i.get("status") != "cancelled")]
                    continue
                if any(in_window(*_bounds({"start": s, "end": e})) for _, s, e in occurrences(event, horizon)):
                    out.append(self.public(event))
                continue
            if event.get("recurringEventId") and single:
                continue  # produced by _instances
            if cancelled:
                exception_listed = event.get("recurringEventId") and not single
                if not (show_deleted or exception_listed):
                    continue
                if event.get("originalStartTime"):
                    original = event["originalStartTime"]
                    moment = _instant(original["dateTime"]) if "dateTime" in original else datetime.fromisoformat(original["date"]).replace(tzinfo=timezone.utc)
                    if not in_window(moment, moment + timedelta(seconds=1)):
                        continue
                elif event.get("recurrence"):
                    if not any(in_window(*_bounds({"start": s, "end": e})) for _, s, e in occurrences(event, horizon)):
                        continue
                elif not in_window(*_bounds(event)):
                    continue
                out.append(self.public(event))
                continue
            if not in_window(*_bounds(event)):
                continue
            out.append(self.public(event))
        return out

    # Event ids are opaque (Event resource: "id: Opaque identifier of the
    # event"): an instance's id is learnt from a listing or events.instances,
    # never built from the series id and a time, so the fake's are unguessable.
    def instance_id(self, cal: str, master_id: str, key: str) -> str:
        """The id of the occurrence of ``master_id`` originally starting at
        ``key`` (``YYYY-MM-DD`` or a UTC ``...Z`` instant)."""
        iid = f"{master_id}_{hashlib.sha256(f'{cal}|{master_id}|{key}'.encode()).hexdigest()[:12]}"
        self.instance_keys[iid] = (master_id, key)
        return iid

    def _instances(self, cal: str, master: dict, horizon: datetime) -> list[dict]:
        events = self.events(cal)
        out = []
        for key, start, end in occurrences(master, horizon):
            iid = self.instance_id(cal, master["id"], key)
            if iid in events and events[iid].get("status") == "cancelled":
                out.append({**self._synth_instance(cal, master, key, start, end), **self.public(events[iid])})
            elif iid in events:
                out.append(self.public(events[iid]))
            else:
                out.append(self._synth_instance(cal, master, key, start, end))
        return out

    @staticmethod
    def _original(master: dict, key: str) -> dict:
        if "T" in key:
            return {"dateTime": key, **({"timeZone": master["start"]["timeZone"]} if master["start"].get("timeZone") else {})}
        return {"date": key}

    def _synth_instance(self, cal: str, master: dict, key: str, start: dict, end: dict) -> dict:
        instance = self.public(master)
        instance.pop("recurrence", None)
        instance.update(
            id=self.instance_id(cal, master["id"], key), recurringEventId=master["id"],
            originalStartTime=self._original(master, key), start=start, end=end,
        )
        return instance

    # -- single-event operations ----------------------------------------------
    def _new_event(self, cal: str, body: dict) -> dict:
        event_id = body.get("id")
        if event_id is not None and not ID_RE.match(event_id):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        event = _without_nulls(body)
        event.setdefault("id", uuid.uuid4().hex)
        event["kind"] = "calendar#event"
        event.setdefault("status", "confirmed")
        event["created"] = _now_text()
        event["iCalUID"] = body.get("iCalUID") or f"{event['id']}@google.com"
        event.setdefault("sequence", 0)
        event["organizer"] = event["creator"] = {"email": cal, "self": True}
        for attendee in event.get("attendees", []):
            attendee.setdefault("responseStatus", "needsAction")
        _validate_times(event)
        return event

    def insert(self, cal: str, body: dict) -> dict:
        with self.lock:
            if body.get("id"):
                self._check_permanent(body["id"])
                if body["id"] in self.events(cal):
                    raise ApiError(409, "duplicate", "The requested identifier already exists.")
            event = self._new_event(cal, body)
            self.events(cal)[event["id"]] = event
            self._bump(cal, event)
            self.writes["insert"] += 1
            return self.public(event)

    def _resolve(self, cal: str, event_id: str, *, materialize: bool) -> dict:
        """The stored event, or (for an instance id of a live series) a new
        exception materialised from the series when asked to."""
        events = self.events(cal)
        if event_id in events:
            return events[event_id]
        master_id, wanted = self.instance_keys.get(event_id, (None, None))
        master = events.get(master_id) if master_id else None
        if master is None or master.get("status") == "cancelled" or not master.get("recurrence"):
            raise ApiError(404, "notFound", "Not Found")
        for key, start, end in occurrences(master, datetime.now(timezone.utc) + timedelta(days=3650)):
            if key == wanted:
                instance = self._synth_instance(cal, master, key, start, end)
                if materialize:
                    instance["created"] = _now_text()
                    events[event_id] = instance
                return instance
        raise ApiError(404, "notFound", "Not Found")

    def instances(self, cal: str, event_id: str, params: dict[str, str]) -> dict:
        """events.instances: the occurrences of a series (404 for an unknown
        or non-recurring event), optionally the one at ``originalStart``."""
        with self.lock:
            master = self.events(cal).get(event_id)
            if master is None or master.get("status") == "cancelled" or not master.get("recurrence"):
                raise ApiError(404, "notFound", "Not Found")
            _check_list_bounds(params)
            tmax = _instant(params["timeMax"]) if "timeMax" in params else datetime.now(timezone.utc) + timedelta(days=3650)
            items = self._instances(cal, master, tmax)
            if "originalStart" in params:
                wanted = _original_key(params["originalStart"])
                items = [i for i in items if _original_key(i["originalStartTime"].get("dateTime") or i["originalStartTime"]["date"]) == wanted]
            if params.get("showDeleted") != "true":
                items = [i for i in items if i.get("status") != "cancelled"]
            return {"kind": "calendar#events", "summary": cal, "timeZone": self.time_zone, "items": items}

    def get(self, cal: str, event_id: str) -> dict:
        with self.lock:
            return self.public(self._resolve(cal, event_id, materialize=False))

    def _check_etag(self, event: dict, if_match: str | None) -> None:
        if if_match and if_match != "*" and if_match != event.get("etag"):
            raise ApiError(412, "conditionNotMet", "Precondition Failed")

    def patch(self, cal: str, event_id: str, body: dict, if_match: str | None, *, replace: bool = False, check_permanent: bool = True) -> dict:
        with self.lock:
            if check_permanent:
                self._check_permanent(event_id)
            event = self._resolve(cal, event_id, materialize=False)
            self._check_etag(event, if_match)
            updated = copy.deepcopy(event)
            if replace:
                keep = {k: updated[k] for k in ("kind", "id", "etag", "created", "iCalUID", "sequence", "organizer", "creator", "recurringEventId", "originalStartTime", "_version") if k in updated}
                updated = {**keep}
            for key, value in body.items():
                if key in ("id", "etag", "iCalUID", "created", "updated", "kind", "recurringEventId", "originalStartTime"):
                    continue
                _merge_field(updated, key, value, nested=not replace)
            for attendee in updated.get("attendees", []):
                attendee.setdefault("responseStatus", "needsAction")
            if updated.get("recurringEventId"):
                updated.pop("recurrence", None)
            _validate_times(updated)
            significant = any(updated.get(k) != event.get(k) for k in ("start", "end", "recurrence", "location"))
            self.events(cal)[event_id] = updated
            if updated.get("status") == "cancelled" and updated.get("recurrence"):
                self._cancel_exceptions(cal, event_id)
            self._bump(cal, updated, significant=significant)
            self.writes["patch"] += 1
            return self.public(updated)

    def delete(self, cal: str, event_id: str, if_match: str | None, *, check_permanent: bool = True) -> None:
        with self.lock:
            if check_permanent:
                self._check_permanent(event_id)
            event = self._resolve(cal, event_id, materialize=True)
            if event.get("status") == "cancelled":
                raise ApiError(410, "deleted", "Resource has been deleted")
            self._check_etag(event, if_match)
            event["status"] = "cancelled"
            self._bump(cal, event)
            if event.get("recurrence"):
                self._cancel_exceptions(cal, event_id)
            self.writes["delete"] += 1

    def _cancel_exceptions(self, cal: str, master_id: str) -> None:
        for other in self.events(cal).values():
            if other.get("recurringEventId") == master_id and other.get("status") != "cancelled":
                other["status"] = "cancelled"
                self._bump(cal, other)

    # -- channels -------------------------------------------------------------
    def watch(self, cal: str, body: dict) -> dict:
        with self.lock:
            if body.get("type") not in ("web_hook", "webhook"):
                raise ApiError(400, "invalid", "Channel type must be web_hook.")
            if not str(body.get("address", "")).startswith("https://"):
                raise ApiError(400, "push.webhookUrlNotHttps", "WebHook callback must be HTTPS.", "push")
            if body["id"] in self.channels:
                raise ApiError(400, "channelIdNotUnique", "Channel id not unique.", "push")
            ttl = int((body.get("params") or {}).get("ttl", "604800"))  # events.watch: params.ttl, default 604800 s
            expiration = self.now() + timedelta(seconds=ttl)
            channel = {
                "id": body["id"], "calendar_id": cal, "resourceId": f"res-{cal}", "token": body.get("token"),
                "address": body["address"], "messages": 1, "expiration": expiration,  # "always 1 for sync messages"
                "expiration_text": expiration.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            }
            self.channels[body["id"]] = channel
            self.notifications.append(self._message(channel, "sync"))
            return {
                "kind": "api#channel", "id": channel["id"], "resourceId": channel["resourceId"],
                "resourceUri": f"https://www.googleapis.com/calendar/v3/calendars/{cal}/events?alt=json",
                "token": channel["token"], "expiration": str(int(expiration.timestamp() * 1000)),
            }

    def stop(self, body: dict) -> None:
        with self.lock:
            channel = self.channels.get(body.get("id"))
            if channel is None or channel["resourceId"] != body.get("resourceId") or not self._live(channel):
                raise ApiError(404, "notFound", f"Channel '{body.get('id')}' not found for project")
            channel["stopped"] = True
