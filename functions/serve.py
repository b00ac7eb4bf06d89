"""``safesync serve``: every HTTP target on one local server, at ``/<target>``.

``create_app()`` is also the WSGI app for a production server, e.g.
``gunicorn -w 4 'safesync.functions.serve:create_app()'``.
"""

from __future__ import annotations

import argparse
import re

# A request target's query, up to where the access line's quoting, a space
# or Werkzeug's colour codes begin.
_QUERY = re.compile(r"\?[^\s'\"\x1b]*")


def create_app():
    import flask
    from werkzeug.exceptions import HTTPException

    from safesync.functions import main
    from safesync.shared.http import json_response

    app = flask.Flask(__name__)

    # What never reaches a target — a path that is none (404), a method no
    # route lists such as TRACE (405) — is answered in JSON too, not with
    # Flask's HTML page: every answer of this server is {"error": ...}.
    def http_error(exc: HTTPException):
        if exc.code == 404:
            message = f"no target at this path; targets: {', '.join('/' + t for t in main.TARGETS)}"
        elif exc.code == 405:
            message = "method not allowed"
        else:
            message = (exc.name or "error").lower()
        allow = dict(exc.get_headers()).get("Allow")
        return json_response(exc.code or 500, {"error": message}, {"Allow": allow} if allow else None)

    app.register_error_handler(HTTPException, http_error)
    for target in main.TARGETS:
        function = getattr(main, target)
        app.add_url_rule(
            f"/{target}",
            endpoint=target,
            view_func=lambda function=function: function(flask.request),
            # Every method reaches the target, which answers a JSON 405 for
            # the ones it does not take (Flask's automatic OPTIONS would not).
            methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            provide_automatic_options=False,
        )
    return app


def _queryless_log_handler():
    """Werkzeug's request handler, logging every line without the query.

    Its access line is the whole request target, and a query can hold a
    secret — the status page's one-time ``?link=`` code, a token a caller
    put in a URL — that must never reach a log; a malformed request's
    "Bad request syntax ('…')" line quotes it too. So every text a log line
    interpolates has its queries cut to ``?…``: method, path and status stay."""
    from werkzeug.serving import WSGIRequestHandler

    class QuerylessLog(WSGIRequestHandler):
        def log(self, type: str, message: str, *args) -> None:
            super().log(type, message, *(_QUERY.sub("?…", a) if isinstance(a, str) else a for a in args))

    return QuerylessLog


def _run(args: argparse.Namespace, settings) -> None:
    from werkzeug.serving import run_simple

    from safesync.functions.main import TARGETS

    print(f"safesync: serving {', '.join('/' + t for t in TARGETS)} on http://{args.host}:{args.port}")
    run_simple(args.host, args.port, create_app(), threaded=True, request_handler=_queryless_log_handler())


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", help="run every HTTP target on one local server", parents=[parent])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_run, needs_settings=False)
