"""Verifying backups: are the stored bytes the ones we wrote, and do they
restore?

``verify_backup`` re-reads the dump once, computing its SHA-256 while
feeding it to ``pg_restore --list`` (which must parse its table of
contents), and compares size and digest with the manifest and the sidecar.
With ``restore_drill`` it then restores the dump into a scratch database on
the same server as the backed-up database, compares every table's row
count with the manifest, and drops the scratch database (also on failure).
The outcome is recorded in the manifest (an atomic rewrite), so ``list``
and the status page show when each backup was last proven good.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import ConfigError, JobFailed, NotFoundError, ObjectChanged, SafesyncError, StorageError
from safesync.shared.log import get_logger, redact
from safesync.shared.pgtools import PgTool, child_env, find_tool, found_tools, libpq_target, supports_compression
from safesync.shared.report import first_few, utcnow

from .archive import Archive, DamagedArchive, require_identity
from .catalog import get_backup, get_backup_versioned
from .compression import method_of
from .create import count_rows
from .manifest import BackupInfo, parse_sidecar, write_manifest
from .pgproc import PgProcess, restore_stream
from .restore_plan import plan_restore, unreadable_by_owner
from .toc import TocEntry, absent_tables, parse_toc, tables_outside, use_list

log = get_logger("backup")


@dataclass
class VerifyResult:
    """``problems``: the integrity check's; ``drill``: the restore drill's
    outcome (with its own problems), when one ran."""

    id: str
    problems: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    drill: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.all_problems

    @property
    def all_problems(self) -> list[str]:
        drill = [f"restore drill: {p}" for p in (self.drill or {}).get("problems", [])]
        return self.problems + drill

    def row(self) -> dict[str, Any]:
        drill = "" if self.drill is None else ("ok" if self.drill.get("ok") else "FAILED")
        return {
            "id": self.id,
            "ok": self.ok,
            # not computed (manifest unreadable, dump missing or unreadable): say nothing, not MISMATCH
            "sha256": "" if "sha256_ok" not in self.checks else "ok" if self.checks["sha256_ok"] else "MISMATCH",
            "toc_entries": self.checks.get("toc_entries"),
            "drill": drill,
            "problems": "; ".join(self.all_problems),
        }


def pg_restore_for(info: BackupInfo) -> PgTool:
    """pg_restore, new enough to read an archive made by ``info``'s pg_dump
    and built with its compression. One without it still lists the table of
    contents (with a warning) but restores no data, so it is never used."""
    dumped_by = int((info.pg_dump_version or "0").split(".")[0] or 0)
    method = method_of(info.compression)
    try:
        tool = find_tool("pg_restore", at_least=dumped_by, prefer=method)
    except ConfigError as exc:
        raise ConfigError(f"{info.id} was made by pg_dump {dumped_by}: {exc.message}") from None
    if not supports_compression(tool, method):
        raise ConfigError(
            f"{info.id} is compressed with {method} and {tool.label} cannot read it "
            f"(found: {', '.join(t.label for t in found_tools('pg_restore')) or 'none'}); "
            f"install a PostgreSQL {max(dumped_by, 16)}+ client built with {method}, or set PG_BIN to one"
        )
    return tool


class _ListReader(threading.Thread):
    """Collects ``pg_restore --list --verbose`` output as it comes;
    ``complete`` once it read to the end (a TOC cut short would plan a
    restore of part of the dump)."""

    def __init__(self, proc: PgProcess) -> None:
        super().__init__(name="backup-toc", daemon=True)
        self.proc = proc
        self.text = ""
        self.complete = False

    def run(self) -> None:
        assert self.proc.proc.stdout is not None
        try:
            self.text = self.proc.proc.stdout.read().decode("utf-8", errors="replace")
            self.complete = True
        except (ValueError, OSError):  # the pipe was closed under it: the read already failed
            pass


def read_toc(settings: Settings, info: BackupInfo) -> list[TocEntry]:
    """The dump's table of contents (it is at the head of the archive: only
    that much is read from storage). For an encrypted backup this is also
    the proof that the identity opens it: a missing or wrong one raises
    ConfigError here, before a restore has touched anything."""
    tool = pg_restore_for(info)
    chunks = iter(Archive(settings, info))
    proc = PgProcess([str(tool.path), "--list", "--verbose"], child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    reader = _ListReader(proc)
    reader.start()
    try:
        for chunk in chunks:
            if not proc.feed(chunk):
                break
        proc.close_stdin()
        code = proc.wait()
        reader.join(timeout=30)
    finally:
        chunks.close()  # type: ignore[attr-defined]
        proc.kill()
    if code != 0:
        raise JobFailed(f"pg_restore --list cannot read {info.id}: {proc.failure(code)}")
    if not reader.complete:
        raise JobFailed(f"pg_restore --list of {info.id} was not read to its end in time: its table of contents is unknown")
    return parse_toc(reader.text)


SIDECAR_MAX = 4096  # "<64 hex>  <name>\n": far less


def check_integrity(settings: Settings, info: BackupInfo) -> tuple[list[str], dict[str, Any]]:
    """One pass over the dump: SHA-256 + size of the stored bytes vs
    manifest and sidecar, every chunk of an encrypted dump decrypted and
    authenticated, and ``pg_restore --list`` parses the archive. Returns
    (problems, checks); a missing or wrong identity raises ConfigError."""
    storage = settings.storage
    problems: list[str] = []
    checks: dict[str, Any] = {}
    try:
        # Read, not get_bytes: an oversized sidecar is a damaged backup to
        # report, not an error that ends the verification of every backup.
        with storage.open(info.sha256_key) as stream:
            raw = stream.read(SIDECAR_MAX + 1)
    except NotFoundError:
        sidecar = None
        problems.append(f"sidecar {info.sha256_key} is missing")
    else:
        sidecar = parse_sidecar(raw) if len(raw) <= SIDECAR_MAX else None
        if sidecar is None:
            problems.append(f"sidecar {info.sha256_key} holds no SHA-256")
        elif sidecar != info.sha256:
            problems.append("sidecar and manifest disagree on the SHA-256")

    tool = pg_restore_for(info)
    source = Archive(settings, info)
    proc = PgProcess([str(tool.path), "--list", "--verbose"], child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    toc = _ListReader(proc)
    toc.start()
    feeding = True
    try:
        for chunk in source:
            # pg_restore --list stops reading after the table of contents.
            feeding = feeding and proc.feed(chunk)
        if feeding:
            proc.close_stdin()
        code = proc.wait()
        toc.join(timeout=30)
    except StorageError as exc:  # e.g. the GCS CRC32C check failed at the end of the read
        problems.append(f"reading the dump failed: {exc.message}")
        return problems, checks
    except DamagedArchive as exc:  # the whole object was read: its checksum is compared below too
        problems.append(exc.message)
        code = None
    finally:
        proc.kill()
    size, digest = source.size, source.sha256
    entries = parse_toc(toc.text) if code is not None else []
    checks.update(size=size, sha256=digest, sha256_ok=digest == info.sha256, toc_entries=len(entries))
    if info.encrypted:
        checks["decrypted"] = code is not None  # every chunk authenticated with the identity
    if size != info.size:
        problems.append(f"dump is {size} bytes, the manifest says {info.size}")
    if digest != info.sha256:
        problems.append(f"SHA-256 of the dump is {digest[:16]}…, the manifest says {info.sha256[:16]}…")
    if code is None:
        pass  # damaged: said above
    elif code != 0:
        problems.append(f"pg_restore --list cannot read it: {proc.failure(code)}")
    else:
        # Every table the manifest counted must be in the archive (an empty
        # database's dump has none, and its manifest lists none).
        absent = absent_tables(info.tables, entries)
        if absent:
            problems.append(f"{len(absent)} table(s) of the manifest are not in the dump: {', '.join(absent[:5])}")
        if not entries:
            problems.append("pg_restore --list found no entries in it")
        beyond = beyond_scope(info, entries)
        if beyond:
            problems.append(f"this partial backup's dump holds {len(beyond)} table(s) beyond its scope: {first_few(beyond)}")
    return problems, checks


def beyond_scope(info: BackupInfo, entries: list[TocEntry]) -> list[str]:
    """The tables a partial backup's dump holds that its manifest does not
    (a "content" backup written before 2026-12-04 held the whole database):
    verify names them, restore refuses."""
    return tables_outside(info.scope_tables, entries) if info.partial else []


DRILL_PREFIX = "safesync_drill_"
DRILL_MARK = "safesync restore drill started "  # + ISO time: the scratch database's comment
ABANDONED_AFTER = timedelta(hours=1)  # only for the moment between CREATE DATABASE and the keeper's connect


def drop_abandoned_drills(admin: psycopg.Connection, now: datetime | None = None) -> list[str]:
    """Drop the scratch databases of drills whose process died (SIGKILL, a
    platform's request timeout, OOM): ``drop database`` in the drill's own
    ``finally`` never ran, and each one may hold a full copy of production.

    A running drill keeps a connection to its scratch database from just
    after creating it to the end, so a drill database nobody is connected to
    is abandoned, once its comment (written at creation) is older than
    ``ABANDONED_AFTER``. Only databases this role owns and marked by a drill
    are considered, and the drop is a plain DROP DATABASE, which fails
    rather than disconnect a session that arrived meanwhile."""
    now = now or utcnow()
    rows = admin.execute(
        "select d.datname, shobj_description(d.oid, 'pg_database') from pg_database d "
        "where starts_with(d.datname, %s) and d.datdba = (select oid from pg_roles where rolname = current_user) "
        "and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)",
        [DRILL_PREFIX],
    ).fetchall()
    dropped = []
    for name, comment in rows:
        if not (comment or "").startswith(DRILL_MARK):
            continue
        try:
            started = datetime.fromisoformat(comment.removeprefix(DRILL_MARK))
        except ValueError:
            continue
        if started.tzinfo is None or now - started < ABANDONED_AFTER:
            continue
        try:
            admin.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            log.warning("abandoned drill database not dropped", database=name, error=redact(str(exc)).strip())
            continue
        dropped.append(name)
    return dropped


def restore_drill(settings: Settings, info: BackupInfo) -> dict[str, Any]:
    """Restore into a fresh scratch database beside the source, compare row
    counts with the manifest, drop the scratch database. Never raises for a
    failed drill: the result says what failed."""
    started = time.perf_counter()
    scratch = f"safesync_drill_{info.db.lower()[:20]}_{uuid.uuid4().hex[:10]}"
    result: dict[str, Any] = {"at": utcnow().isoformat(), "scratch_database": scratch, "ok": False}
    problems: list[str] = []
    try:
        source_url = settings.database_url(info.db)
        tool = pg_restore_for(info)
        admin = connect(source_url, autocommit=True, application_name="safesync-drill")
    except SafesyncError as exc:
        result["problems"] = [f"drill could not start: {exc.message}"]
        return result
    created = False
    keeper: psycopg.Connection | None = None
    try:
        try:
            abandoned = drop_abandoned_drills(admin)
        except psycopg.Error as exc:  # e.g. a platform hiding pg_stat_activity: the drill itself can still run
            abandoned = []
            log.warning("could not look for abandoned drill databases", error=redact(str(exc)).strip())
        if abandoned:
            result["dropped_abandoned"] = abandoned
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(scratch)))
        created = True
        admin.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(scratch), sql.Literal(DRILL_MARK + utcnow().isoformat())))
        scratch_url = make_conninfo(source_url, dbname=scratch)
        keeper = connect(scratch_url, autocommit=True, application_name="safesync-drill")  # "in use" to drop_abandoned_drills
        entries = read_toc(settings, info)
        with connect(scratch_url, application_name="safesync-drill") as conn:
            plan = plan_restore(conn, entries, drill=True)
            no_owner = plan.table_owners_lost  # then the data is drilled owned by the drill's role, as noted
            if no_owner:
                plan = plan_restore(conn, entries, drill=True, no_owner=True)
            for schema in plan.precreate_schemas:
                conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
                for owner in plan.schema_users(schema):
                    conn.execute(sql.SQL("grant usage, create on schema {} to {}").format(sql.Identifier(schema), sql.Identifier(owner)))
        result.update(restored_as=plan.role, owners_kept=not no_owner, not_restored=plan.blocked_rows(), kept=plan.kept_rows())
        if no_owner:
            result["note"] = f"{plan.role} may not assign some tables' owners: the drill restored everything owned by {plan.role}"
        conninfo, env = libpq_target(source_url, dbname=scratch, app="safesync-drill")
        with tempfile.NamedTemporaryFile("w", prefix="safesync-drill-", suffix=".list") as listing:
            listing.write(use_list(entries, plan.left_out))
            listing.flush()
            restore_stream(
                Archive(settings, info),
                argv=[str(tool.path), "--single-transaction", "--exit-on-error", *(["--no-owner"] if no_owner else []),
                      "--use-list", listing.name, "--dbname", conninfo],
                env=env,
            )
        with connect(scratch_url, application_name="safesync-drill") as conn:
            restored = count_rows(conn)
            unreadable = unreadable_by_owner(conn, entries, plan)
        if unreadable:
            problems.append(f"after the restore, these tables' owners cannot read them: {', '.join(unreadable[:5])}")
        mismatches = [
            {"table": t, "expected": info.tables.get(t), "restored": restored.get(t)}
            for t in sorted(set(info.tables) | set(restored))
            if info.tables.get(t) != restored.get(t)
        ]
        result.update(tables=len(restored), rows=sum(restored.values()), mismatches=mismatches)
        if mismatches:
            problems.append(
                f"{len(mismatches)} table(s) restored with other row counts than the manifest: "
                + ", ".join(m["table"] for m in mismatches[:5])
            )
    except SafesyncError as exc:
        problems.append(exc.message)
    except psycopg.Error as exc:
        problems.append(f"drill failed: {redact(str(exc)).strip()}")
    finally:
        if keeper is not None:
            keeper.close()
        if created:
            try:
                admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(scratch)))
            except psycopg.Error as exc:
                problems.append(f"scratch database {scratch} could not be dropped: {redact(str(exc)).strip()}")
        admin.close()
    result["ok"] = not problems
    result["problems"] = problems
    result["duration_s"] = round(time.perf_counter() - started, 3)
    return result


def verify_backup(
    settings: Settings, backup: str | BackupInfo, *, restore_drill_too: bool = False, record: bool = True
) -> VerifyResult:
    """Verify one backup (id or BackupInfo); with ``restore_drill_too`` also
    restore it into a scratch database. The result is recorded in the
    manifest unless ``record`` is False."""
    info = get_backup(settings, backup) if isinstance(backup, str) else backup
    require_identity(settings, info)
    problems, checks = check_integrity(settings, info)
    result = VerifyResult(info.id, problems, checks)
    if restore_drill_too:
        if problems:
            result.drill = {"at": utcnow().isoformat(), "ok": False, "problems": ["skipped: the dump failed its integrity check"]}
        else:
            result.drill = restore_drill(settings, info)
    if record:
        _record(settings, info, result)
    log.info("backup verified", backup=info.id, ok=result.ok, problems=len(result.all_problems))
    return result


RECORD_ATTEMPTS = 3  # rewrites raced by another verify's record before giving up


def _record(settings: Settings, info: BackupInfo, result: VerifyResult) -> None:
    """Set this verify's fields on the manifest as stored *now*, not on the
    one read when it started: another verify may have recorded a drill
    meanwhile (writing ours back would replace a failed drill with an older
    passing one), and prune may have deleted the manifest (its first step).
    The rewrite is conditional on the version re-read, so a change or a
    prune between the re-read and the write fails it instead of being
    overwritten or undone: a manifest must never come back without its
    dump. A change is re-read and the fields set again; a prune ends it."""
    for _attempt in range(RECORD_ATTEMPTS):
        try:
            current, version = get_backup_versioned(settings, info.id)
        except NotFoundError as exc:  # pruned meanwhile, or its manifest damaged: that stays as it is
            result.warnings.append(f"result not recorded, the backup changed while being verified: {exc.message}")
            return
        except SafesyncError as exc:
            result.warnings.append(f"could not record the result in {info.manifest_key}: {exc.message}")
            return
        manifest = dict(current.manifest)
        manifest["verification"] = {
            "at": utcnow().isoformat(),
            "ok": not result.problems,
            "problems": result.problems,
            "sha256_ok": bool(result.checks.get("sha256_ok")),
            "toc_entries": result.checks.get("toc_entries"),
        }
        if result.drill is not None:
            manifest["drill"] = result.drill
        try:
            write_manifest(settings.storage, info.name, manifest, if_version=version)
        except ObjectChanged:
            continue  # replaced or deleted since the re-read: look again
        except SafesyncError as exc:
            result.warnings.append(f"could not record the result in {info.manifest_key}: {exc.message}")
        return
    result.warnings.append(
        f"result not recorded: {info.manifest_key} kept changing while the result was written ({RECORD_ATTEMPTS} attempts)"
    )
