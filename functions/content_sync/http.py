"""The ``content_sync`` HTTP target: ``{"mode": "compare" | "dry-run" |
"sync", "expect_plan": "<digest>", "adopt": true}``, or (admin token only:
it rewrites production content, like a restore) ``{"mode": "undo", "run":
"<run id>", "dry_run": true, "expect_plan": …}``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictBool

from safesync.shared.errors import BadRequest
from safesync.shared.http import Call, validate_body
from safesync.shared.report import Answer

from .jobs import content_sync, content_undo


class Body(BaseModel):
    """Fields and their types only: what the values may be (mode, digest,
    run id) the runs check, once, for HTTP, the CLI and library callers."""

    model_config = ConfigDict(extra="forbid")

    mode: str
    expect_plan: str | None = None
    adopt: StrictBool = False
    run: str | None = None  # undo: the run to undo
    dry_run: StrictBool = False  # undo: do it and roll back


def handle_http(call: Call) -> Answer:
    body = validate_body(Body, call.body)
    if body.mode == "undo":
        call.require_admin()  # it rewrites production content, like a restore
        if body.run is None:
            raise BadRequest('mode undo needs "run": the run id of the sync (or undo) to undo')
        if body.adopt:
            raise BadRequest('mode undo takes "run", "dry_run" and "expect_plan", not "adopt"')
        return content_undo(call.settings, body.run, dry_run=body.dry_run, expect_plan=body.expect_plan, trigger=call.trigger(), delivery=call.delivery)
    if body.run is not None or body.dry_run:
        raise BadRequest('"run" and "dry_run" only apply to mode undo')
    return content_sync(
        call.settings,
        body.mode,
        expect_plan=body.expect_plan,
        adopt=body.adopt,
        trigger=call.trigger(),
        delivery=call.delivery,
    )
