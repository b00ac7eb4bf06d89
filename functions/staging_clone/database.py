"""``clone_database``: replace schemas of one database with another's in
one transaction, then compare both — the library call behind the staging
clone, also used by migrate's rehearsal (through the face).
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from psycopg import sql

from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect
from safesync.shared.log import get_logger
from safesync.shared.pgerrors import database_failure
from safesync.shared.progress import Meter
from safesync.shared.report import Report

from .engine import CloneStats, start_dump, start_restore, stream_clone
from .plan import CloneOptions, ClonePlan, Mask, dump_scope, plan_clone

log = get_logger("staging_clone")
PROGRESS_EVERY = 256 << 20


@dataclass
class CloneResult:
    plan: ClonePlan
    stats: CloneStats | None  # None: dry run
    comparison: Any = None  # validate.Comparison, when compared

    @property
    def identical(self) -> bool:
        return self.comparison is not None and self.comparison.identical


def options_from_config(settings: Settings) -> CloneOptions:
    cfg = settings.config.staging_clone
    return CloneOptions(
        schemas=tuple(cfg.schemas),
        exclude_table_data=tuple(TableRef.parse(t) for t in cfg.exclude_table_data),
        masks=tuple(Mask(TableRef.parse(m.table), m.column, m.strategy, m.value) for m in cfg.mask),
    )


class _Streamed:
    """What the clone's dump stream has carried: bytes, and tables whose data
    is complete (each COPY block of pg_dump's plain format ends in a line
    ``\\.``). Logs every 256 MiB; tells a terminal meter as it goes."""

    END = b"\n\\.\n"

    def __init__(self, tables: int, meter: Meter | None) -> None:
        self.tables, self.meter = tables, meter
        self.done, self.tail, self.logged = 0, b"", 0

    def __call__(self, chunk: bytes, total: int) -> None:
        if total - self.logged >= PROGRESS_EVERY:
            self.logged = total
            log.info("clone progress", streamed_mb=total >> 20)
        if self.meter is None:
            return
        data = self.tail + chunk  # a marker may straddle two chunks; the 3-byte tail never holds a whole one
        self.done += data.count(self.END)
        self.tail = data[-3:]
        self.meter(tables=(min(self.done, self.tables), self.tables), bytes=total)


def clone_database(
    source_url: str,
    target_url: str,
    options: CloneOptions,
    *,
    report: Report | None = None,
    dry_run: bool = False,
    before_swap: Callable[[], Any] | None = None,
    compare_after: bool = True,
    progress: Meter | None = None,
    snapshot: str | None = None,
) -> CloneResult:
    """Replace ``options.schemas`` of the target with the source's, in one
    transaction; then compare both (unless ``compare_after`` is False).
    ``snapshot``: one the caller exported on the source and holds open —
    the clone copies exactly that state (else it exports its own).

    ``before_swap`` runs after planning, before anything is written (the
    safety backup). Raises Refused (nothing done), JobFailed (target rolled
    back), DatabaseError.
    """
    from safesync.functions.validate import compare

    timed = report.timed if report is not None else (lambda step: nullcontext())
    meter = progress or (lambda **_: None)
    with connect(source_url, application_name="safesync-clone-source") as src, connect(
        target_url, autocommit=True, application_name="safesync-clone-target"
    ) as dst:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        if snapshot is None:
            snapshot = src.execute("select pg_export_snapshot()").fetchone()[0]
        else:
            src.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
        with ExitStack() as running:
            meter(phase="planning")
            with timed("plan"):
                scope = dump_scope(src, options)
                if not dry_run:  # pg_dump starts now: its catalog reads overlap the plan
                    dump = running.enter_context(start_dump(source_url, options, scope, snapshot, src.info.server_version))
                plan = plan_clone(src, dst, options, scope)
            if dry_run:
                with timed("compare"):
                    comparison = compare(src, dst, options.schemas) if compare_after else None
                return CloneResult(plan, None, comparison)
            if before_swap is not None:
                before_swap()
            with_data = len(plan.source_tables) - len(set(plan.without_data) & set(plan.source_tables))
            meter(phase="copying", tables=(0, with_data), bytes=0)
            with timed("swap"):
                # psql connects only now: an idle session through the safety backup could meet an idle_session_timeout
                restore = running.enter_context(start_restore(target_url, dst.info.server_version))
                stats = stream_clone(dump, restore, options, plan, target_conn=dst, on_chunk=_Streamed(with_data, progress))
        result = CloneResult(plan, stats)
        if compare_after:
            meter(phase="comparing source and target")
            with timed("compare"):
                try:
                    result.comparison = compare(src, dst, options.schemas, exclude_columns=plan.masked, count_only=plan.uncompared)
                except psycopg.Error as exc:  # the swap is committed: the report must not read as "nothing happened"
                    raise database_failure("clone committed, but comparing it with the source failed, so it is not proven identical", exc) from None
        return result
