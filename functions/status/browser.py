"""The status page for a person in a browser.

``GET`` without a session answers 401 with a login form. The form POSTs the
token once (a body: never in a URL, so never in an access log); a valid one
becomes a session cookie (``__Host-``, HttpOnly, Secure, SameSite=Strict,
12 h; see ``safesync.shared.sessions``) and a 303 back to the page. ``GET
?link=<code>`` does the same for a one-time code printed by ``safesync
status --link``: the code is used up on the first visit, and the redirect
drops it from the address bar. A POST of ``action=logout`` ends the session.

A login from another site is refused (``Sec-Fetch-Site`` / ``Origin``), so
no page elsewhere can log a browser in; the cookie is never sent cross-site.
API callers (a bearer token or a QStash signature, JSON) never come here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from safesync.shared import sessions
from safesync.shared.errors import AuthError, BadRequest, Forbidden, ObjectExists, PayloadTooLarge, SafesyncError
from safesync.shared.log import get_logger, redact

from .page import HEADERS, render_error, render_login, render_status

if TYPE_CHECKING:
    import flask

log = get_logger("status")

COOKIE = "__Host-safesync-status"
FORM_LIMIT = 4096
SIGNED_OUT = "Log in with the API token to see the status."


def _html(text: str, status: int) -> "flask.Response":
    import flask

    response = flask.Response(text, status=status, mimetype="text/html")
    response.headers.update(HEADERS)
    return response


def _path(request: "flask.Request") -> str:
    """The page's own path, as a redirect and the forms use it: with one
    leading slash. A function answers every path, and ``//evil.example/x``
    as a Location is another site (a protocol-relative URL): the page would
    send a person who just logged in there."""
    return "/" + request.path.lstrip("/\\")


def _to_page(request: "flask.Request") -> "flask.Response":
    """303 to the page itself, without any query (a link code stays out of
    the address bar and the history)."""
    response = _html("", 303)
    response.headers["Location"] = _path(request)
    return response


def _start_session(response: "flask.Response", kind: str) -> "flask.Response":
    response.set_cookie(
        COOKIE, sessions.issue(sessions.SESSION, kind), max_age=sessions.TTL_S[sessions.SESSION],
        path="/", secure=True, httponly=True, samesite="Strict",
    )
    return response


def handle(request: "flask.Request") -> "flask.Response":
    try:
        if request.method == "POST":
            return _form(request)
        if "link" in request.args:
            return _link(request)
        value = request.cookies.get(COOKIE)
        if not value:
            return _html(render_login(_path(request), SIGNED_OUT, error=False), 401)
        try:
            sessions.verify(sessions.SESSION, value)
        except AuthError as exc:
            return _html(render_login(_path(request), f"{exc.message}: log in again."), 401)
        return _page(request)
    except SafesyncError as exc:
        if exc.status >= 500:
            log.warning("status page failed", error=redact(exc.message))
        return _html(render_error(redact(exc.message)), exc.status)
    except Exception:
        log.exception("unhandled error on the status page")
        return _html(render_error("internal error"), 500)


def _same_origin(request: "flask.Request") -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def _form(request: "flask.Request") -> "flask.Response":
    if not _same_origin(request):
        raise Forbidden("a status login must come from the status page itself")
    if (request.content_length or 0) > FORM_LIMIT:
        raise PayloadTooLarge(f"login form over {FORM_LIMIT} bytes")
    raw = request.stream.read(FORM_LIMIT + 1)
    if len(raw) > FORM_LIMIT:
        raise PayloadTooLarge(f"login form over {FORM_LIMIT} bytes")
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the login form is not valid form data") from None
    if fields.get("action") == ["logout"]:
        response = _to_page(request)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return response
    token = (fields.get("token") or [""])[0].strip()
    if not token:
        return _html(render_login(_path(request), "Enter the token."), 400)
    from safesync.shared.auth import authenticate

    try:
        principal = authenticate({"Authorization": f"Bearer {token}"}, b"", path=request.path)
    except AuthError:
        log.info("status login refused")
        return _html(render_login(_path(request), "That token is not valid."), 401)
    log.info("status login", caller=principal.identity)
    return _start_session(_to_page(request), sessions.kind_of(principal))


def _link(request: "flask.Request") -> "flask.Response":
    try:
        grant = sessions.verify(sessions.LINK, request.args.get("link", ""))
    except AuthError as exc:
        return _html(render_login(_path(request), f"{exc.message}: run `safesync status --link` for a new one."), 401)
    from safesync.shared.config import load_settings
    from safesync.shared.report import utcnow

    try:  # create-only: the first visit uses the link up
        load_settings().storage.put_json(f"status/links/{grant.nonce}.json", {"used_at": utcnow(), "kind": grant.kind}, overwrite=False)
    except ObjectExists:
        return _html(render_login(_path(request), "That link was already used: run `safesync status --link` for a new one."), 401)
    log.info("status link used", caller=grant.principal.identity)
    return _start_session(_to_page(request), grant.kind)


def _page(request: "flask.Request") -> "flask.Response":
    from safesync.shared.config import load_settings

    from . import status

    answer = status(load_settings())
    return _html(render_status(answer.body, logout_path=_path(request)), 200 if answer.status < 500 else answer.status)
