"""The undo point taken before a sync writes anything.

The backup job's ``create_backup(kind="presync")`` when it is installed
(a full, verified, listed backup restorable with ``safesync backup
restore``); otherwise a ``pg_dump`` custom-format dump of just the content
tables (schema and data), streamed to
``presync/<db>/<YYYYMMDDTHHMMSSZ>-<run_id>.dump`` with a ``.sha256`` and a
``.json`` written last, restorable with ``pg_restore``. Either way nothing
is written to the target unless the undo point is complete.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from typing import Any, Iterator, Sequence

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import connect, server_version
from safesync.shared.errors import JobFailed
from safesync.shared.log import redact
from safesync.shared.pgtools import require_for_server
from safesync.shared.report import Report, stamp, utcnow

from .plan import TableSpec


def take_safety_backup(settings: Settings, db: str, tables: Sequence[TableSpec], report: Report, trigger: dict[str, Any] | None) -> dict[str, Any]:
    try:
        from safesync.functions.backup import create_backup
    except ImportError:
        return dump_content_tables(settings, db, tables, report)
    info = create_backup(settings, db, "presync", trigger=trigger, report=report)
    return {"via": "backup", "id": info.id, "kind": "presync"}


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """Conninfo without the password (it goes to PGPASSWORD, never argv)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()}), env


def _stream(proc: subprocess.Popen, hasher: "hashlib._Hash", sizes: list[int]) -> Iterator[bytes]:
    assert proc.stdout is not None
    while chunk := proc.stdout.read(1 << 20):
        hasher.update(chunk)
        sizes[0] += len(chunk)
        yield chunk
    if proc.wait() != 0:
        error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise JobFailed(f"safety dump failed, nothing synced: {redact(error.strip())}")


def dump_content_tables(settings: Settings, db: str, tables: Sequence[TableSpec], report: Report) -> dict[str, Any]:
    url = settings.database_url(db)
    with connect(url, autocommit=True, application_name="safesync-presync") as conn:
        pg_dump = require_for_server("pg_dump", server_version(conn))
    conninfo, env = _libpq(url)
    base = f"presync/{db}/{stamp(utcnow())}-{report.run_id}"
    argv = [str(pg_dump.path), "--format=custom", "--no-password", "--dbname", conninfo]
    for spec in tables:
        argv += ["--table", ".".join('"' + part.replace('"', '""') + '"' for part in (spec.table.schema, spec.table.name))]
    hasher, sizes = hashlib.sha256(), [0]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        with report.timed("safety_dump"):
            settings.storage.put(f"{base}.dump", _stream(proc, hasher, sizes))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    digest = hasher.hexdigest()
    settings.storage.put(f"{base}.sha256", f"{digest}  {base.rsplit('/', 1)[1]}.dump\n".encode())
    settings.storage.put_json(
        f"{base}.json",
        {"database": db, "kind": "presync-content", "tables": [str(s.table) for s in tables], "bytes": sizes[0],
         "sha256": digest, "run_id": report.run_id,
         "restore": "schema and rows of the content tables before the sync; pg_restore --data-only puts the rows back"},
    )
    return {"via": "content-dump", "key": f"{base}.dump", "bytes": sizes[0], "sha256": digest}
