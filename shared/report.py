"""The Report every job returns: one shape for HTTP JSON, CLI tables and the
run files stored under ``runs/``."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def first_few(items: list[str], sep: str = ", ", limit: int = 5) -> str:
    """The first ``limit`` of ``items`` and how many more ("a, b and 3
    more"; with ``sep="; "``: "a; b; and 3 more"): a refusal names what is
    in the way without growing with it."""
    more = len(items) - limit
    tail = f"{'' if sep.strip() == ',' else sep.rstrip()} and {more} more" if more > 0 else ""
    return sep.join(items[:limit]) + tail


def stamp(moment: datetime) -> str:
    """Compact UTC timestamp used in object names: ``20261125T120000Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Report:
    """What a job did.

    ``status`` is one of:

    - ``ok``: done, everything healthy (HTTP 200, exit 0);
    - ``problems``: the job ran and found problems, nothing changed (200 with
      ``ok: false``, exit 1) — e.g. validation failures;
    - ``refused``: the job declined to act because acting would be unsafe;
      nothing changed (422, exit 1);
    - ``failed``: the job broke (a dependency failed) and rolled back
      (503, retryable; exit 1).

    ``details`` is job specific; ``tables`` holds rows a CLI renders as
    tables (lists of flat dicts). ``error`` carries the error body when the
    run ended in an exception.
    """

    job: str
    action: str
    status: str = "ok"
    summary: str = ""
    run_id: str = field(default_factory=new_run_id)
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def problems(self, summary: str) -> "Report":
        self.status, self.summary = "problems", summary
        return self

    def refuse(self, summary: str) -> "Report":
        self.status, self.summary = "refused", summary
        return self

    def fail(self, summary: str) -> "Report":
        self.status, self.summary = "failed", summary
        return self

    @property
    def http_status(self) -> int:
        if self.error is not None:
            return int(self.error.get("status", 500))
        return {"ok": 200, "problems": 200, "refused": 422}.get(self.status, 503)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def finish(self) -> "Report":
        if self.finished_at is None:
            self.finished_at = utcnow()
        self.timings.setdefault(
            "total_s", round((self.finished_at - self.started_at).total_seconds(), 3)
        )
        return self

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Record the wall time of one step in ``timings`` (seconds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[f"{step}_s"] = round(time.perf_counter() - start, 3)

    def to_dict(self) -> dict[str, Any]:
        data = {"ok": self.ok, **asdict(self)}
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


@dataclass(frozen=True)
class Answer:
    """What a run answers: HTTP status, JSON body, CLI exit code, and whether
    a failure is permanent (QStash must not retry it)."""

    status: int
    body: dict[str, Any]
    exit_code: int = 0
    permanent: bool = False

    @classmethod
    def of(cls, report: Report) -> "Answer":
        from .log import redact_obj

        data = redact_obj(report.to_dict())
        if report.error:
            body = {"error": report.error["error"], "detail": report.error["detail"], "report": data}
            return cls(report.http_status, body, report.error.get("exit_code", 1), report.error["permanent"])
        return cls(report.http_status, data, report.exit_code, report.status == "refused")
