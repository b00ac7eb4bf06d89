"""``safesync schedules plan | apply``: the QStash schedules as code.

``infra/schedules.toml`` lists what should run when; QStash holds what does.
``plan`` compares the two, ``apply`` makes QStash match through the official
``qstash`` SDK, idempotently: a second apply only lists.

Identity: every managed schedule has the QStash schedule id
``safesync-<name>`` (QStash's ``Upstash-Schedule-Id``; creating with an
existing id replaces that schedule, so an update is one create call). A
schedule is ours to update or delete only when it has that prefix AND its
destination lies under one of our base URLs: nothing else in the account is
ever touched, and an id collision with a foreign destination refuses the
whole apply before any call.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from safesync.functions import registry
from safesync.shared.config import Settings
from safesync.shared.errors import ConfigError, JobFailed, Refused
from safesync.shared.log import redact
from safesync.shared.parsing import read_toml_file
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

DEFAULT_FILE = "infra/schedules.toml"
ID_PREFIX = "safesync-"
TARGETS = registry.TARGETS  # the HTTP targets a schedule may call

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # fullmatch
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (what a field is, lowest, highest, names for lowest…, whether "?" may stand for "*")
_CRON_FIELDS = (
    ("minute", 0, 59, (), False),
    ("hour", 0, 23, (), False),
    ("day of month", 1, 31, (), True),
    ("month", 1, 12, _MONTHS, False),
    ("day of week", 0, 7, _DAYS, True),  # 7 is Sunday too
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    base_url: str = "${SAFESYNC_PUBLIC_URL}"
    retries: int = Field(3, ge=0, le=20)
    failure_callback: str = ""


class Entry(_Strict):
    target: str
    cron: str
    body: dict[str, Any] = Field(default_factory=dict)
    retries: int | None = Field(None, ge=0, le=20)
    failure_callback: str | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v not in TARGETS:
            raise ValueError(f"unknown target {v!r}; known: {', '.join(TARGETS)}")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        check_cron(v)
        return v


class SchedulesFile(_Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    targets: dict[str, str] = Field(default_factory=dict)
    schedules: dict[str, Entry] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(TARGETS))
        if unknown:
            raise ValueError(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
        return v

    @field_validator("schedules")
    @classmethod
    def _names(cls, v: dict[str, Entry]) -> dict[str, Entry]:
        for name in v:
            if not _NAME.fullmatch(name):
                raise ValueError(f"schedule name {name!r} must be lowercase letters, digits and '-'")
        return v


def check_cron(expr: str) -> None:
    """Five cron fields, optionally after ``CRON_TZ=<zone>`` (what QStash
    takes), each a list of ``*``, values and ranges, with an optional
    ``/step``, within the field's range (the crontab.guru syntax QStash's
    docs point to). Checked here so that ``plan`` says what is wrong: with
    only the field count checked, ``0 24 * * *`` passed the plan and QStash
    refused it half-way through an apply."""
    parts = expr.split()
    if parts and parts[0].startswith("CRON_TZ="):
        parts = parts[1:]
    if len(parts) != 5:
        raise ValueError(f"{expr!r} is not a 5-field cron expression")
    for text, field_spec in zip(parts, _CRON_FIELDS):
        try:
            _check_cron_field(text, *field_spec)
        except ValueError as exc:
            raise ValueError(f"{expr!r}: {exc}") from None


def _check_cron_field(text: str, what: str, low: int, high: int, names: tuple[str, ...], any_mark: bool) -> None:
    """ValueError saying what is wrong with one cron field."""
    if any_mark and text == "?":
        return

    def value(word: str) -> int:
        if word.upper() in names:
            return low + names.index(word.upper())
        if not (word.isascii() and word.isdigit()):
            raise ValueError(f"{what} {word!r} is not a number" + (f" or a name ({names[0]}-{names[-1]})" if names else ""))
        if not low <= int(word) <= high:
            raise ValueError(f"{what} {word} is not in {low}-{high}")
        return int(word)

    for item in text.split(","):
        span, slash, step = item.partition("/")
        if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
            raise ValueError(f"{what} step {step!r} must be a whole number above 0")
        if span == "*":
            continue
        first, dash, last = span.partition("-")
        if dash and value(first) > value(last):
            raise ValueError(f"{what} range {span} runs backwards")
        value(first)


def expand_env(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace ``${VAR}`` (must be set) and ``${VAR:-default}``."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name, "").strip()
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _ENV_REF.sub(one, text)


def _url(value: str, where: str) -> str:
    value = value.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(f"{where}: {value!r} is not an http(s) URL")
    return value


@dataclass(frozen=True)
class Desired:
    """One schedule as the file wants it, resolved against the environment."""

    name: str
    schedule_id: str
    target: str
    destination: str
    cron: str
    body: dict[str, Any]
    retries: int
    failure_callback: str | None


@dataclass
class Desires:
    schedules: list[Desired]
    base_urls: list[str]
    warnings: list[str] = field(default_factory=list)


def load_schedules(path: Path, env: Mapping[str, str]) -> Desires:
    """Read and resolve a schedules file; every problem is a ConfigError."""
    data = read_toml_file(path, what="schedules file")
    try:
        spec = SchedulesFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {loc}: {msg}") from None

    bases: dict[str, str] = {}
    for target, text in spec.targets.items():
        value = expand_env(text, env, f"{path}: targets.{target}").strip()
        if value:  # empty (e.g. "${SAFESYNC_BACKUP_BASE_URL:-}" unset): defaults.base_url
            bases[target] = _url(value, f"{path}: targets.{target}")

    def base_for(target: str) -> str:
        if target not in bases:
            where = f"{path}: defaults.base_url"
            bases[target] = _url(expand_env(spec.defaults.base_url, env, where), where)
        return bases[target]

    no_callback: list[str] = []
    schedules = []
    for name, entry in spec.schedules.items():
        where = f"{path}: schedules.{name}"
        callback_text = entry.failure_callback if entry.failure_callback is not None else spec.defaults.failure_callback
        callback = expand_env(callback_text, env, f"{where}.failure_callback").strip() or None
        if callback:
            callback = _url(callback, f"{where}.failure_callback")
        else:
            no_callback.append(name)
        schedules.append(
            Desired(
                name=name,
                schedule_id=ID_PREFIX + name,
                target=entry.target,
                destination=f"{base_for(entry.target)}/{entry.target}",
                cron=entry.cron,
                body=entry.body,
                retries=entry.retries if entry.retries is not None else spec.defaults.retries,
                failure_callback=callback,
            )
        )
    warnings = [f"no failure callback for {', '.join(no_callback)} (set SAFESYNC_FAILURE_CALLBACK_URL)"] if no_callback else []
    return Desires(schedules, sorted(set(bases.values())), warnings)


def our_bases(desires: Desires, env: Mapping[str, str]) -> list[str]:
    """Base URLs whose schedules are ours: those of the file plus SAFESYNC_PUBLIC_URL."""
    public = env.get("SAFESYNC_PUBLIC_URL", "").strip().rstrip("/")
    return sorted({*desires.base_urls, *([public] if public else [])})


def is_ours(destination: str, bases: list[str]) -> bool:
    return any(destination == b or destination.startswith(b + "/") for b in bases)


def _remote_body(schedule: Any) -> Any:
    raw = schedule.body
    if raw is None and schedule.body_base64:
        import base64

        raw = base64.b64decode(schedule.body_base64).decode("utf-8", "replace")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def differences(want: Desired, have: Any) -> list[str]:
    """Human-readable differences between a wanted and an existing schedule."""
    pairs = [
        ("destination", want.destination, have.destination),
        ("cron", want.cron, have.cron),
        ("body", want.body, _remote_body(have)),
        ("method", "POST", have.method),
        ("retries", want.retries, have.retries),
        ("failure_callback", want.failure_callback, have.failure_callback or None),
    ]
    return [f"{name}: {json.dumps(old)} → {json.dumps(new)}" for name, new, old in pairs if new != old]


@dataclass
class Change:
    kind: Literal["create", "update", "delete", "unchanged", "conflict", "unmanaged"]
    schedule_id: str
    destination: str
    cron: str
    want: Desired | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def changes_qstash(self) -> bool:
        return self.kind in ("create", "update", "delete")

    def row(self) -> dict[str, Any]:
        return {
            "change": self.kind,
            "schedule_id": self.schedule_id,
            "cron": self.cron,
            "destination": self.destination,
            "notes": "; ".join(self.notes),
        }


def compute_plan(desired: list[Desired], remote: list[Any], bases: list[str]) -> list[Change]:
    """Match file entries and QStash schedules by schedule id.

    Only ``safesync-`` schedules under our base URLs are updated or deleted;
    a wanted id held by a foreign destination is a conflict; a schedule that
    calls one of our targets without our id is reported, never touched.
    """
    wanted = {d.schedule_id: d for d in desired}
    seen: set[str] = set()
    changes: list[Change] = []
    for have in sorted(remote, key=lambda s: s.schedule_id):
        managed = have.schedule_id.startswith(ID_PREFIX)
        ours = is_ours(have.destination, bases)
        want = wanted.get(have.schedule_id)
        if want is not None:
            seen.add(have.schedule_id)
        if managed and ours and want is not None:
            diff = differences(want, have)
            if have.paused:
                diff.append("paused in QStash (an update resumes it)")
            kind = "update" if diff else "unchanged"
            changes.append(Change(kind, want.schedule_id, want.destination, want.cron, want, diff))
        elif managed and ours:
            changes.append(Change("delete", have.schedule_id, have.destination, have.cron, notes=["not in the schedules file"]))
        elif want is not None:
            changes.append(
                Change("conflict", have.schedule_id, have.destination, have.cron, want,
                       [f"id taken by a schedule calling {have.destination}, which is not under {', '.join(bases)}"])
            )
        elif ours:
            changes.append(
                Change("unmanaged", have.schedule_id, have.destination, have.cron,
                       notes=["calls a safesync target but is not in the schedules file; left alone"])
            )
    for want in desired:
        if want.schedule_id not in seen:
            changes.append(Change("create", want.schedule_id, want.destination, want.cron, want))
    order = {"conflict": 0, "create": 1, "update": 2, "delete": 3, "unchanged": 4, "unmanaged": 5}
    return sorted(changes, key=lambda c: (order[c.kind], c.schedule_id))


def qstash_client(settings: Settings):
    """The official SDK client; ``QSTASH_URL`` points it at another API root."""
    from qstash import QStash

    token = settings.secret("QSTASH_TOKEN")
    if not token:
        raise ConfigError("QSTASH_TOKEN is not set (safesync schedules needs the QStash API token)")
    return QStash(token, base_url=settings.public("QSTASH_URL"))


def _qstash_error(exc: Exception, doing: str, done: list[str] | None = None) -> JobFailed:
    detail: dict[str, Any] = {"error": redact(str(exc))}
    if done is not None:
        detail["done"] = done
    return JobFailed(f"QStash {doing} failed: {redact(str(exc))}", detail)


def _summary(changes: list[Change], verb: dict[str, str]) -> str:
    counts = {k: sum(1 for c in changes if c.kind == k) for k in ("create", "update", "delete", "unchanged", "unmanaged")}
    parts = [f"{counts[k]} {verb[k]}" for k in ("create", "update", "delete") if counts[k]]
    text = ", ".join(parts) if parts else "nothing to change"
    text += f"; {counts['unchanged']} unchanged"
    if counts["unmanaged"]:
        text += f"; {counts['unmanaged']} unmanaged left alone"
    return text


def run(settings: Settings, action: Literal["plan", "apply"], path: Path, *, delete_all: bool = False) -> Answer:
    """Plan or apply ``path`` against the QStash account of QSTASH_TOKEN.

    A file that defines no schedule at all would delete every one of ours —
    the backups and the status checks that would notice them missing — which
    is far likelier an empty mount or a truncated file than a wish: apply
    refuses it unless ``delete_all`` says so."""

    def job(report: Report) -> None:
        desires = load_schedules(path, settings.env)
        report.warnings.extend(desires.warnings)
        bases = our_bases(desires, settings.env)
        client = qstash_client(settings)
        with report.timed("list"):
            try:
                remote = client.schedule.list()
            except Exception as exc:
                raise _qstash_error(exc, "list") from None
        changes = compute_plan(desires.schedules, remote, bases)
        report.details.update(file=str(path), base_urls=bases, foreign_untouched=len(remote) - sum(c.kind != "create" for c in changes))
        report.tables["schedules"] = [c.row() for c in changes]
        conflicts = [c for c in changes if c.kind == "conflict"]
        if conflicts:
            raise Refused(
                f"{len(conflicts)} schedule id(s) already used by schedules that are not ours: "
                + ", ".join(c.schedule_id for c in conflicts)
                + " (rename the entry or delete that schedule in the QStash console); nothing changed",
                {"conflicts": [c.row() for c in conflicts]},
            )
        if action == "plan":
            report.summary = "plan: " + _summary(changes, {"create": "to create", "update": "to update", "delete": "to delete"})
            return
        deletes = [c.schedule_id for c in changes if c.kind == "delete"]
        if deletes and not desires.schedules and not delete_all:
            raise Refused(
                f"{path} defines no schedule, so apply would delete all {len(deletes)} of ours ({', '.join(deletes)}): "
                "an empty or truncated file? Nothing changed; to remove them all, run apply --delete-all"
            )
        with report.timed("apply"):
            _apply(client, changes)
        report.summary = "applied: " + _summary(changes, {"create": "created", "update": "updated", "delete": "deleted"})

    return execute(settings, Report("schedules", action), job, needs_storage=False, record=action == "apply")


def _apply(client: Any, changes: list[Change]) -> None:
    """Creates and updates first, deletes last: a failure half-way leaves the
    new schedules in place; re-running apply converges."""
    done: list[str] = []
    for change in changes:
        if not change.changes_qstash:
            continue
        try:
            if change.kind == "delete":
                client.schedule.delete(change.schedule_id)
            else:
                want = change.want
                assert want is not None
                client.schedule.create_json(
                    destination=want.destination,
                    cron=want.cron,
                    body=want.body,
                    method="POST",
                    retries=want.retries,
                    failure_callback=want.failure_callback,
                    schedule_id=want.schedule_id,
                )
        except Exception as exc:
            raise _qstash_error(exc, f"{change.kind} of {change.schedule_id}", done) from None
        done.append(f"{change.kind} {change.schedule_id}")


def default_path(settings: Settings) -> Path:
    """``$SAFESYNC_SCHEDULES``, else ``infra/schedules.toml`` next to the config."""
    explicit = settings.env.get("SAFESYNC_SCHEDULES")
    return Path(explicit) if explicit else settings.resolve_path(DEFAULT_FILE)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("schedules", help="QStash schedules as code (infra/schedules.toml)", parents=[parent])
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action, text in (("plan", "show what apply would change in QStash"), ("apply", "make QStash match the file")):
        p = actions.add_parser(action, help=text, parents=[parent])
        p.add_argument("--file", metavar="PATH", help=f"schedules file (default: $SAFESYNC_SCHEDULES or {DEFAULT_FILE})")
        if action == "apply":
            p.add_argument("--delete-all", action="store_true", help="allow a file without schedules to delete every one of ours")
        p.set_defaults(
            func=lambda args, settings, action=action: run(
                settings, action, Path(args.file) if args.file else default_path(settings), delete_all=getattr(args, "delete_all", False)
            )
        )
