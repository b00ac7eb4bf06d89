"""Creating a backup: pg_dump → (age) → SHA-256 → storage, then sidecar,
then manifest.

The dump streams through this process in chunks of at most 1 MiB (constant
memory, no temp file); with ``backup.encrypt = "age"`` it is encrypted on
the way (``archive.seal``) and the checksum is that of the stored
ciphertext. Row counts come from the same snapshot as the dump: a
REPEATABLE READ transaction exports its snapshot, ``pg_dump --snapshot``
imports it, and the counts run in that transaction on a second thread while
the dump streams. If pg_dump or the counting fails, the stream raises before
its end, so storage aborts the upload and nothing of the backup is visible;
the manifest is written only after the dump and its sidecar are stored.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from contextlib import nullcontext
from datetime import timedelta
from importlib import metadata
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import POLICY_FILTERED, TableRef, connect, row_count, server_version, user_schema
from safesync.shared.errors import JobFailed, Refused, StorageError
from safesync.shared.log import get_logger, redact
from safesync.shared.pgtools import libpq_target
from safesync.shared.report import Report, first_few, utcnow
from safesync.shared.storage import Storage

from . import archive
from .compression import choose
from .layout import DUMP_SUFFIXES, SUFFIXES, BackupName
from .manifest import MANIFEST_VERSION, PLAIN_MANIFEST_VERSION, SCOPE_FULL, SCOPE_TABLES, BackupInfo, sidecar_text, write_manifest
from .pgproc import CHUNK, PgProcess, Progress, dbname_of

if TYPE_CHECKING:
    from safesync.shared.agefile import Recipient

log = get_logger("backup")

LOCK_WAIT = "300s"  # pg_dump and the counts give up rather than queue forever behind a migration

# Every table whose rows pg_dump writes: user schemas (ours included), not
# partitions twice (the parent's count covers them), not extension members
# (their contents belong to the extension, not to the dump).
SNAPSHOT_TABLES_SQL = f"""
select n.nspname, c.relname
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and not c.relispartition and c.relpersistence <> 't'
  and {user_schema(ours=True)}
  and not exists (select 1 from pg_depend d
                  where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
order by 1, 2
"""


# What pg_dump will be refused: a schema it cannot enter, a table or sequence
# it cannot read, a table whose row-level security would filter its rows
# (pg_dump sets row_security off and then fails on such a table). Asked
# before the dump, so the user reads PostgreSQL's own words for the cause —
# not pg_dump's "could not import the requested snapshot", which is what is
# left once the exporting transaction has failed.
UNREADABLE_SQL = f"""
select format('permission denied for schema %I', n.nspname)
from pg_namespace n
where {user_schema(ours=True)}
  and not has_schema_privilege(n.oid, 'USAGE')
union all
select format('permission denied for %s %s', case c.relkind when 'S' then 'sequence' else 'table' end,
              format('%I.%I', n.nspname, c.relname))
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'S') and c.relpersistence <> 't'
  and {user_schema(ours=True)}
  and has_schema_privilege(n.oid, 'USAGE') and not has_table_privilege(c.oid, 'SELECT')
union all
select format('row-level security would filter table %I.%I (the role needs BYPASSRLS)', n.nspname, c.relname)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
join pg_roles r on r.rolname = current_user
where c.relkind in ('r', 'p') and {POLICY_FILTERED}
  and {user_schema(ours=True)}
order by 1
"""


# The tables given (``%s``, one regclass array) and their partitions. Not
# pg_partition_tree alone: it lists nothing for a table that is not
# partitioned, and with no --table left pg_dump dumped the whole database
# into a backup whose manifest said "only these tables".
DUMPED_RELIDS = """
select distinct tree.relid from unnest(%s::regclass[]) as t(relid),
  lateral (select t.relid union all select p.relid from pg_partition_tree(t.relid) p) as tree(relid)
"""

# The same, for a dump of only some tables (``--table``): their schemas,
# the tables and their partitions; what else the database holds is not read.
UNREADABLE_OF_TABLES_SQL = f"""
with dumped as ({DUMPED_RELIDS})
select format('permission denied for schema %%I', n.nspname)
from pg_namespace n
where n.oid in (select c.relnamespace from pg_class c where c.oid in (select relid from dumped))
  and not has_schema_privilege(n.oid, 'USAGE')
union all
select format('permission denied for table %%s', c.oid::regclass)
from pg_class c
where c.oid in (select relid from dumped) and not has_table_privilege(c.oid, 'SELECT')
union all
select format('row-level security would filter table %%s (the role needs BYPASSRLS)', c.oid::regclass)
from pg_class c join pg_roles r on r.rolname = current_user
where c.oid in (select relid from dumped) and {POLICY_FILTERED}
order by 1
"""


def check_readable(conn: psycopg.Connection, db: str, tables: Sequence[TableRef] | None = None) -> None:
    """Refuse (nothing written) when pg_dump could not read everything it
    would dump: the whole database, or only ``tables`` (a content sync's
    ``presync_backup = "content"``, which a role that cannot read the
    platform's own schemas — Supabase's storage, to its postgres — may take)."""
    if tables is None:
        problems = [r[0] for r in conn.execute(UNREADABLE_SQL).fetchall()]
    else:
        names = [t.ident.as_string(conn) for t in tables]
        problems = [r[0] for r in conn.execute(UNREADABLE_OF_TABLES_SQL, [names]).fetchall()]
    if problems:
        user = conn.execute("select current_user").fetchone()[0]
        shown = first_few(problems, "; ")
        raise Refused(
            f"backup of {db} refused, nothing written: role {user} cannot read everything pg_dump must dump: {shown} "
            "(grant it, e.g. with `safesync roles sql`)",
            {"database": db, "role": user, "problems": problems},
        )


def snapshot_tables(conn: psycopg.Connection) -> list[TableRef]:
    return [TableRef(s, n) for s, n in conn.execute(SNAPSHOT_TABLES_SQL).fetchall()]


def count_rows(conn: psycopg.Connection, tables: Sequence[TableRef] | None = None) -> dict[str, int]:
    """Exact row count of every dumped table (``tables``, else all), in the connection's snapshot."""
    return {str(table): row_count(conn, table) for table in (snapshot_tables(conn) if tables is None else tables)}


def dumped_tables(conn: psycopg.Connection, tables: Sequence[TableRef]) -> list[TableRef]:
    """Exactly these tables and their partitions: what a ``--table`` dump
    of them holds (the manifest's ``dumped_tables``, which verify and
    restore hold the dump to)."""
    names = [t.ident.as_string(conn) for t in tables]
    rows = conn.execute(
        f"select distinct n.nspname, c.relname from ({DUMPED_RELIDS}) d join pg_class c on c.oid = d.relid "
        "join pg_namespace n on n.oid = c.relnamespace order by 1, 2",
        [names],
    ).fetchall()
    if not rows:  # no --table at all would dump the whole database as a "partial" backup
        raise JobFailed(f"no table to dump among {', '.join(names)}")
    return [TableRef(schema, name) for schema, name in rows]


def _table_arguments(dumped: Sequence[TableRef]) -> list[str]:
    """pg_dump ``--table`` arguments (names quoted: a pattern character in a
    name is literal)."""
    quoted = ['"' + part.replace('"', '""') + '"' for t in dumped for part in (t.schema, t.name)]
    return [f"--table={quoted[i]}.{quoted[i + 1]}" for i in range(0, len(quoted), 2)]


def _version() -> str:
    try:
        return metadata.version("safesync")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def free_name(storage: Storage, db: str, kind: str) -> BackupName:
    """A name no object uses yet (two backups in one second get the next second)."""
    at = utcnow()
    for _ in range(120):
        name = BackupName.new(db, at, kind)
        if not any(storage.exists(name.key(suffix)) for suffix in SUFFIXES):
            return name
        at += timedelta(seconds=1)
    raise JobFailed(f"no free backup name for {db}/{kind}: too many backups in two minutes")


class _Counter(threading.Thread):
    """Counts rows in the exporting transaction while the dump streams."""

    def __init__(self, conn: psycopg.Connection, tables: Sequence[TableRef] | None) -> None:
        super().__init__(name="backup-row-counts", daemon=True)
        self.conn, self.tables = conn, tables
        self.counts: dict[str, int] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.counts = count_rows(self.conn, self.tables)
        except BaseException as exc:  # noqa: BLE001 - reported by the stream
            self.error = exc

    def result(self) -> dict[str, int]:
        self.join()
        if self.error is not None or self.counts is None:
            raise JobFailed(f"counting rows for the manifest failed: {redact(str(self.error))}")
        return self.counts


class _DumpStream:
    """pg_dump's stdout as stored (sealed for ``recipients``), hashed on the
    way. Raises (so storage aborts the upload) unless pg_dump exits 0 and
    the counts succeeded."""

    def __init__(
        self, proc: PgProcess, counter: _Counter, progress: Progress | None, recipients: list[Recipient]
    ) -> None:
        self.proc, self.counter, self.progress, self.recipients = proc, counter, progress, recipients
        self.hasher = hashlib.sha256()
        self.size = 0  # stored bytes
        self.archive_size = 0  # pg_dump's bytes
        self.counts: dict[str, int] = {}

    def __iter__(self) -> Iterator[bytes]:
        sealed = archive.seal(self._archive(), self.recipients)
        try:
            for chunk in sealed:
                self.hasher.update(chunk)
                self.size += len(chunk)
                if self.progress:
                    self.progress(self.size)
                yield chunk
        finally:
            sealed.close()  # storage failed: stop the encryption now, not when collected

    def _archive(self) -> Iterator[bytes]:
        assert self.proc.proc.stdout is not None
        fd = self.proc.proc.stdout.fileno()
        try:
            while chunk := os.read(fd, CHUNK):
                self.archive_size += len(chunk)
                yield chunk
            code = self.proc.wait()
            if code != 0:
                self.counter.join(5)
                if self.counter.error is not None:  # the exporting transaction failed first: that is the cause
                    raise JobFailed(f"backup aborted, nothing stored: {redact(str(self.counter.error)).strip()} ({self.proc.failure(code)})")
                raise JobFailed(f"backup aborted, nothing stored: {self.proc.failure(code)}")
            if self.archive_size == 0:
                raise JobFailed("backup aborted, nothing stored: pg_dump wrote nothing")
            self.counts = self.counter.result()
        finally:
            self.proc.kill()  # storage failed or we raised: never leave pg_dump blocked on a pipe


def create_backup(
    settings: Settings,
    db: str,
    kind: str,
    trigger: dict[str, Any] | None = None,
    report: Report | None = None,
    progress: Progress | None = None,
    tables: Sequence[TableRef] | None = None,
) -> BackupInfo:
    """Back up database ``db`` (a configured name) as a ``kind`` backup —
    only ``tables`` (and their partitions) when given: content sync's
    ``presync_backup = "content"``; the manifest lists what was dumped.

    Other jobs call this for their undo points (``presync``, ``premigrate``,
    ``safety``). It takes no lock itself: callers run it inside their own
    job. Returns the complete backup; raises ConfigError (e.g. pg_dump older
    than the server: nothing written), JobFailed, StorageError, DatabaseError.
    """
    BackupName.new(db, utcnow(), kind)  # validates the kind before any work
    url = settings.database_url(db)
    storage = settings.storage
    asked = settings.config.backup.compression
    recipients = archive.recipients(settings)
    conn = connect(url, autocommit=True, application_name="safesync-backup")
    try:
        server_num = server_version(conn)
        server_text = conn.execute("show server_version").fetchone()[0]
        choice = choose(asked, server_num)
        pg_dump = choice.pg_dump
        conn.execute("set statement_timeout = 0")
        conn.execute("set idle_in_transaction_session_timeout = 0")
        conn.execute(f"set lock_timeout = '{LOCK_WAIT}'")
        check_readable(conn, db, tables)
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = conn.execute("select pg_export_snapshot()").fetchone()[0]
        name = free_name(storage, db, kind)
        started = utcnow()
        conninfo, env = libpq_target(url)
        dumped = dumped_tables(conn, tables) if tables is not None else None
        argv = [
            str(pg_dump.path), "--format=custom", choice.argument, f"--snapshot={snapshot}",
            f"--lock-wait-timeout={LOCK_WAIT}", "--no-password", "--dbname", conninfo,
            *(_table_arguments(dumped) if dumped is not None else []),
        ]
        log.info("backup started", db=db, kind=kind, backup=name.id)
        proc = PgProcess(argv, env, stdout=subprocess.PIPE)
        counter = _Counter(conn, tables)
        counter.start()
        stream = _DumpStream(proc, counter, progress, recipients)
        dump_key = name.key(DUMP_SUFFIXES[bool(recipients)])
        try:
            with report.timed("dump") if report is not None else nullcontext():
                # Create-only: a backup of the same name made meanwhile by
                # another process (its manifest names its own checksum) wins.
                stored = storage.put(dump_key, stream, overwrite=False)
        finally:
            proc.kill()
            if counter.is_alive():  # the dump failed: stop counting a big table for nothing
                conn.cancel_safe()
            counter.join()
        if stored.size != stream.size:
            storage.delete(dump_key)
            raise StorageError(f"storage kept {stored.size} of {stream.size} bytes of {dump_key}")
    except psycopg.Error as exc:
        raise JobFailed(f"backup of {db} failed: {redact(str(exc)).strip()}") from None
    finally:
        _close_quietly(conn)
    finished = utcnow()
    digest = stream.hasher.hexdigest()
    storage.put(name.sha256_key, sidecar_text(digest, dump_key), content_type="text/plain", overwrite=False)
    counts = stream.counts
    encryption = archive.encryption_record(recipients)
    manifest = {
        "manifest_version": MANIFEST_VERSION if encryption else PLAIN_MANIFEST_VERSION,
        "id": name.id,
        "database": db,
        "database_name": dbname_of(url),
        "kind": kind,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 3),
        "size": stream.size,
        "sha256": digest,
        "format": "custom",
        "compression": choice.spec,
        **({"encryption": encryption} if encryption else {}),
        "pg_dump_version": ".".join(map(str, pg_dump.version)),
        "server_version": server_text,
        "server_version_num": server_num,
        "tables": counts,
        "table_count": len(counts),
        "scope": SCOPE_TABLES if tables is not None else SCOPE_FULL,
        **({"dumped_tables": [str(t) for t in dumped]} if dumped is not None else {}),
        "rows_total": sum(counts.values()),
        "trigger": trigger or {"via": "library"},
        "keys": {"dump": dump_key, "sha256": name.sha256_key, "manifest": name.manifest_key},
        "created_by": f"safesync {_version()}",
    }
    info = write_manifest(storage, name, manifest, overwrite=False)
    log.info("backup complete", db=db, kind=kind, backup=name.id, bytes=stream.size)
    if report is not None:
        report.details.setdefault("backups", []).append(
            {"id": info.id, "db": db, "kind": kind, "bytes": info.size, "manifest": info.manifest_key,
             "compression": choice.spec, "pg_dump": pg_dump.facts()}
            | ({"compression_note": choice.note} if choice.note else {})
        )
        if choice.note and asked != "auto":  # an explicit zstd not honoured; auto's fallback is only noted
            report.warnings.append(f"backup {info.id} {choice.note}")
        if settings.config.backup.compress_level is not None:
            report.warnings.append(
                f"backup.compress_level = {settings.config.backup.compress_level} is the old key (still gzip level N); "
                'set backup.compress instead (default "auto": zstd:1, faster and smaller)'
            )
    return info


def _close_quietly(conn: psycopg.Connection) -> None:
    """End the exporting transaction. Errors here cannot spoil a dump that
    already finished (pg_dump imported the snapshot at its start)."""
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass

