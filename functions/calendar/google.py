"""The Calendar v3 client: real ``google-api-python-client`` against one root.

``SAFESYNC_GOOGLE_API_ROOT`` (default https://www.googleapis.com) is the root
of both the REST API (``<root>/calendar/v3/``) and the batch endpoint
(``<root>/batch/calendar/v3``): the client's own ``new_batch_http_request()``
ignores a custom endpoint, so batches are built here. The discovery document
is the static copy shipped with the library (no network at start-up).

Credentials come from the environment: ``SAFESYNC_GOOGLE_CREDENTIALS``
(inline service-account or OAuth authorized-user JSON) or
``GOOGLE_APPLICATION_CREDENTIALS`` (a path to one), with
``SAFESYNC_GOOGLE_SUBJECT`` for domain-wide delegation of a service account.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import google_auth_httplib2
import httplib2
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.http import BatchHttpRequest, HttpRequest

from safesync.shared.errors import ConfigError

DEFAULT_ROOT = "https://www.googleapis.com"
# Every method the sync calls (events list/get/insert/patch/delete/watch/
# instances, channels.stop) accepts calendar.events, per the discovery
# document the client library ships; ``calendar.scopes`` configures it.
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/calendar.events",)
BATCH_SIZE = 50


def api_root(env: Mapping[str, str]) -> str:
    root = (env.get("SAFESYNC_GOOGLE_API_ROOT") or DEFAULT_ROOT).strip().rstrip("/")
    if not root.startswith(("https://", "http://")):
        raise ConfigError("SAFESYNC_GOOGLE_API_ROOT must be an http(s) URL")
    return root


def _granted(info: dict[str, Any]) -> set[str] | None:
    """The scopes an authorized-user file says were consented, if it says."""
    scopes = info.get("scopes")
    if isinstance(scopes, str):
        return set(scopes.split())
    return set(scopes) if isinstance(scopes, list) else None


def load_credentials(env: Mapping[str, str], scopes: Sequence[str] = DEFAULT_SCOPES):
    """google.auth credentials from the environment (never logged), asking
    for exactly ``scopes``: a refresh token may only ask for what its user
    consented to (RFC 6749 section 6), so a wider request fails."""
    inline = (env.get("SAFESYNC_GOOGLE_CREDENTIALS") or "").strip()
    path = (env.get("GOOGLE_APPLICATION_CREDENTIALS") or "").strip()
    if inline:
        source = "SAFESYNC_GOOGLE_CREDENTIALS"
        try:
            info = json.loads(inline)
        except ValueError:
            raise ConfigError(f"{source} is not valid JSON") from None
    elif path:
        source = "GOOGLE_APPLICATION_CREDENTIALS"
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"{source}: {path} is not valid JSON") from None
    else:
        raise ConfigError("no Google credentials: set SAFESYNC_GOOGLE_CREDENTIALS (JSON) or GOOGLE_APPLICATION_CREDENTIALS (path)")
    if not isinstance(info, dict):
        raise ConfigError(f"{source} must hold a JSON object")
    kind = info.get("type")
    subject = (env.get("SAFESYNC_GOOGLE_SUBJECT") or "").strip() or None
    try:
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(info, scopes=list(scopes), subject=subject)
        if kind == "authorized_user":
            if subject:
                raise ConfigError("SAFESYNC_GOOGLE_SUBJECT only applies to service-account credentials")
            granted = _granted(info)
            if granted is not None and not set(scopes) <= granted:
                raise ConfigError(
                    f"{source}: calendar.scopes asks for {', '.join(sorted(set(scopes) - granted))}, which this refresh token "
                    f"was not granted ({', '.join(sorted(granted)) or 'none'}): set calendar.scopes to what was granted, or consent again"
                )
            # Built directly: from_authorized_user_info ignores the file's token_uri.
            return user_credentials.Credentials(
                token=None,
                refresh_token=info["refresh_token"],
                client_id=info["client_id"],
                client_secret=info["client_secret"],
                token_uri=info.get("token_uri") or user_credentials._GOOGLE_OAUTH2_TOKEN_ENDPOINT,
                scopes=list(scopes),
                quota_project_id=info.get("quota_project_id"),
            )
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{source}: incomplete {kind} credentials ({exc.__class__.__name__})") from None
    raise ConfigError(f"{source}: unsupported credential type {kind!r} (service_account or authorized_user)")


class CalendarClient:
    """The calls the sync makes, each counted by kind (``list``, ``get``,
    ``batch``, ``watch``, ``stop``) for reports and benchmarks."""

    def __init__(self, env: Mapping[str, str], *, timeout: float = 30.0, scopes: Sequence[str] = DEFAULT_SCOPES) -> None:
        self.root = api_root(env)
        self.batch_uri = f"{self.root}/batch/calendar/v3"
        self.http = google_auth_httplib2.AuthorizedHttp(load_credentials(env, scopes), http=httplib2.Http(timeout=timeout))
        self.service = build(
            "calendar",
            "v3",
            http=self.http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": f"{self.root}/calendar/v3/"},
        )
        self.calls: Counter[str] = Counter()

    def _run(self, kind: str, request: HttpRequest) -> Any:
        self.calls[kind] += 1
        return request.execute()

    def list_events(self, calendar_id: str, **params: Any) -> dict[str, Any]:
        return self._run("list", self.service.events().list(calendarId=calendar_id, **params))

    def get_event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        return self._run("get", self.service.events().get(calendarId=calendar_id, eventId=event_id))

    def watch(self, calendar_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._run("watch", self.service.events().watch(calendarId=calendar_id, body=body))

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        self._run("stop", self.service.channels().stop(body={"id": channel_id, "resourceId": resource_id}))

    # Requests for batches (not executed here).
    def insert_request(self, calendar_id: str, body: dict[str, Any]) -> HttpRequest:
        return self.service.events().insert(calendarId=calendar_id, body=body, conferenceDataVersion=1, sendUpdates="none")

    def patch_request(self, calendar_id: str, event_id: str, body: dict[str, Any], etag: str | None) -> HttpRequest:
        request = self.service.events().patch(
            calendarId=calendar_id, eventId=event_id, body=body, conferenceDataVersion=1, sendUpdates="none"
        )
        if etag:
            request.headers["If-Match"] = etag
        return request

    def delete_request(self, calendar_id: str, event_id: str, etag: str | None = None) -> HttpRequest:
        """events.delete; with ``etag``, only if the event is still that
        version (If-Match: 412 otherwise)."""
        request = self.service.events().delete(calendarId=calendar_id, eventId=event_id, sendUpdates="none")
        if etag:
            request.headers["If-Match"] = etag
        return request

    def get_request(self, calendar_id: str, event_id: str) -> HttpRequest:
        return self.service.events().get(calendarId=calendar_id, eventId=event_id)

    def instances_request(self, calendar_id: str, series_id: str, original_start: str) -> HttpRequest:
        """The series' instance at ``original_start`` (hidden ones too)."""
        return self.service.events().instances(
            calendarId=calendar_id, eventId=series_id, originalStart=original_start, showDeleted=True
        )

    def execute_batch(self, requests: list[tuple[str, HttpRequest]]) -> dict[str, tuple[Any, Exception | None]]:
        """One batch HTTP call (≤ 50 requests); per-item (response, error).
        A failure of the whole call raises (every item then failed alike)."""
        if len(requests) > BATCH_SIZE:
            raise ValueError(f"batch of {len(requests)} exceeds {BATCH_SIZE}")
        results: dict[str, tuple[Any, Exception | None]] = {}

        def collect(request_id: str, response: Any, exception: Exception | None) -> None:
            results[request_id] = (response, exception)

        batch = BatchHttpRequest(callback=collect, batch_uri=self.batch_uri)
        for request_id, request in requests:
            batch.add(request, request_id=request_id)
        self.calls["batch"] += 1
        batch.execute(http=self.http)
        return results


ClientFactory = Callable[[Mapping[str, str]], CalendarClient]
