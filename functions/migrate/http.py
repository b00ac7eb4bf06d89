"""The ``migrate`` HTTP target (admin token only): POST ``{"action":
"plan"|"rehearse"|"apply", "skip_rehearsal": false}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from safesync.shared.errors import BadRequest
from safesync.shared.http import Call, validate_body
from safesync.shared.runner import Answer

from .jobs import apply, plan, rehearse


class MigrateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "skip_rehearsal": "no" is an error, not True
    action: Literal["plan", "rehearse", "apply"]
    skip_rehearsal: bool = False


def handle_http(call: Call) -> Answer:
    call.require_admin()
    body = validate_body(MigrateBody, call.body)
    if body.skip_rehearsal and body.action != "apply":
        raise BadRequest("skip_rehearsal only applies to action \"apply\"")
    trigger = call.trigger()
    if body.action == "plan":
        return plan(call.settings, trigger=trigger)
    if body.action == "rehearse":
        return rehearse(call.settings, trigger=trigger)
    return apply(call.settings, skip_rehearsal=body.skip_rehearsal, trigger=trigger)
