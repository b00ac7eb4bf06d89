"""The ``validate`` HTTP target: POST ``{}`` (the default database),
``{"db": NAME}``, or ``{"db": NAME, "against": NAME}`` (diff two)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from safesync.shared.http import Call, validate_body
from safesync.shared.runner import Answer

from .jobs import validate


class ValidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db: str | None = None
    against: str | None = None


def handle_http(call: Call) -> Answer:
    body = validate_body(ValidateBody, call.body)
    return validate(call.settings, body.db, body.against, trigger=call.trigger())
