"""The ``staging_clone`` HTTP target: POST ``{}`` (clone) or
``{"dry_run": true}`` (plan and show differences; change nothing)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictBool

from safesync.shared.http import Call, validate_body
from safesync.shared.runner import Answer

from .jobs import clone


class CloneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: StrictBool = False  # "no" or 0 must be a 400, never a real clone


def handle_http(call: Call) -> Answer:
    body = validate_body(CloneBody, call.body)
    return clone(call.settings, dry_run=body.dry_run, trigger=call.trigger(), delivery=call.delivery)
