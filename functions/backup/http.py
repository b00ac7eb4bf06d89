"""The ``backup`` HTTP target.

Bodies (POST, JSON):

- ``{"action":"create","db":"prod"}`` — from a QStash schedule this is the
  ``daily`` backup (then prune); from a bearer caller ``manual`` unless
  ``"kind"`` says ``predeploy`` (with ``"deployment"`` to tag it).
- ``{"action":"list"[,"db":"prod"]}``
- ``{"action":"verify"[,"id":"…" | "all":true][,"restore_drill":true]}``
- ``{"action":"restore","id":"…"|"latest","db":"prod","to":"staging"[,"confirm":"staging"][,"no_owner":true]}``
  (admin token only: it overwrites a database)
- ``{"action":"prune"[,"db":"prod"][,"dry_run":true]}``

A request signed by Vercel (``x-vercel-signature``) is a deploy webhook,
whatever its body says: see ``vercel.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from safesync.shared.errors import BadRequest
from safesync.shared.http import Call, validate_body
from safesync.shared.report import Answer

from .jobs import run_create, run_list, run_prune, run_restore, run_verify
from .vercel import handle_webhook

# pydantic matches patterns with Rust's regex, where "$" is the end of the text
# only (never before a final "\n"); unanchored, a pattern would match anywhere.
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Body(BaseModel):
    # strict: "dry_run": "no" must be an error, never a real prune
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateBody(_Body):
    action: Literal["create"]
    db: str = Field(pattern=_NAME)
    kind: Literal["manual", "daily", "predeploy"] | None = None
    deployment: str | None = Field(None, min_length=1, max_length=300)


class ListBody(_Body):
    action: Literal["list"]
    db: str | None = Field(None, pattern=_NAME)


class VerifyBody(_Body):
    action: Literal["verify"]
    id: str | None = Field(None, max_length=200)
    all: bool = False
    restore_drill: bool = False


class RestoreBody(_Body):
    action: Literal["restore"]
    id: str = Field(max_length=200)
    db: str | None = Field(None, pattern=_NAME)
    to: str = Field(pattern=_NAME)
    confirm: str | None = Field(None, max_length=200)
    no_owner: StrictBool = False  # the restoring role owns everything: only when asked for explicitly


class PruneBody(_Body):
    action: Literal["prune"]
    db: str | None = Field(None, pattern=_NAME)
    dry_run: bool = False


_MODELS: dict[str, type[_Body]] = {
    "create": CreateBody,
    "list": ListBody,
    "verify": VerifyBody,
    "restore": RestoreBody,
    "prune": PruneBody,
}


def handle_http(call: Call) -> Answer:
    if call.principal.kind == "vercel":
        return handle_webhook(call)
    action = call.body.get("action")
    if not isinstance(action, str) or action not in _MODELS:
        # the unknown word echoed back, within reason: a body may hold up to 1 MB of it
        got = (action if len(action) <= 64 else action[:64] + "…") if isinstance(action, str) else None
        raise BadRequest(f"action: must be one of {', '.join(_MODELS)}", {"got": got})
    body = validate_body(_MODELS[action], call.body)
    settings = call.settings
    trigger = call.trigger()
    delivery = call.delivery
    if isinstance(body, CreateBody):
        kind = body.kind or ("daily" if call.principal.is_qstash else "manual")
        return run_create(settings, body.db, kind, trigger=trigger, deployment=body.deployment, delivery=delivery)
    if isinstance(body, ListBody):
        return run_list(settings, body.db)
    if isinstance(body, VerifyBody):
        return run_verify(settings, body.id, all_backups=body.all, restore_drill=body.restore_drill, trigger=trigger)
    if isinstance(body, RestoreBody):
        call.require_admin()
        return run_restore(
            settings, body.id, db=body.db, to=body.to, confirm=body.confirm, trigger=trigger, delivery=delivery,
            no_owner=body.no_owner,
        )
    assert isinstance(body, PruneBody)
    return run_prune(settings, body.db, dry_run=body.dry_run, trigger=trigger, delivery=delivery)
