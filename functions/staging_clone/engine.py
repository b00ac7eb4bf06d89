"""The atomic swap: dev's schemas replace the target's in ONE transaction.

    pg_dump (plain SQL, dev's snapshot) ──► this process ──► psql ──► target
                                     BEGIN; guard; DROP SCHEMA … CASCADE;
                                     <the dump, streamed; its matview refreshes held back>
                                     masks; the refreshes; schema grants; publications;
                                     verify every relation is there;
                                     COMMIT  ← written only after pg_dump exited 0
                                               and its "dump complete" trailer was seen

Why this shape: ``pg_restore --single-transaction`` cannot also drop what
the dump does not contain (extra tables), and ``psql --single-transaction``
would COMMIT whatever it had read when pg_dump died. Here COMMIT is the last
thing we send, and only when everything before it succeeded; any failure —
an object that fails to restore (``ON_ERROR_STOP``), pg_dump dying, this
process being killed (its children get SIGKILL via PDEATHSIG, and psql sees
end of input without COMMIT anyway), a lost connection — ends the session
with the transaction open, and PostgreSQL rolls it back: the target is
exactly as before.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from psycopg import sql

from safesync.shared.db import TableRef
from safesync.shared.errors import JobFailed
from safesync.shared.log import redact
from safesync.shared.pgerrors import failure
from safesync.shared.pgtools import libpq_target, require_for_server, spawn_client, stop_client

from .carry import carry_post, carry_pre
from .dumpfilter import DumpFilter, DumpFilterError, Entry
from .plan import EXTERNAL_DEPENDENTS, CloneOptions, ClonePlan, DumpScope, Mask

CHUNK = 1 << 20
DUMP_TRAILER = b"-- PostgreSQL database dump complete"


@dataclass
class CloneStats:
    bytes_streamed: int
    dump_s: float


def _pattern(name: str) -> str:
    """A pg_dump pattern matching exactly ``name`` (no wildcards)."""
    return '"' + name.replace('"', '""') + '"'


def dump_command(pg_dump: str, conninfo: str, options: CloneOptions, scope: DumpScope, snapshot: str | None) -> list[str]:
    argv = [pg_dump, "--format=plain", "--lock-wait-timeout=" + options.lock_timeout, "--dbname", conninfo]
    if snapshot:
        argv.append("--snapshot=" + snapshot)
    for schema in options.schemas:
        argv += ["--schema", _pattern(schema)]
    for ext in scope.extensions:
        argv += ["--extension", _pattern(ext)]
    for table in scope.without_data:
        argv.append(f"--exclude-table-data={_pattern(table.schema)}.{_pattern(table.name)}")
    return argv


class Client:
    """A client process of the swap — pg_dump of the source or psql on the
    target — its stderr kept for the report; leaving one (``close``) kills
    it if it still runs."""

    def __init__(self, argv: list[str], env: dict[str, str], **pipes: Any) -> None:
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = spawn_client(argv, env, stderr=self.stderr, **pipes)
        except BaseException:
            self.stderr.close()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def said(self) -> bytes:
        self.stderr.seek(0)
        return self.stderr.read()

    def close(self) -> None:
        stop_client(self.proc)
        self.stderr.close()


def start_dump(source_url: str, options: CloneOptions, scope: DumpScope, snapshot: str | None, server_version: int) -> Client:
    """pg_dump of the source's snapshot into a pipe, started as soon as its
    scope is known: its own catalog reads (on a small database most of a
    clone's time) overlap the plan; then it waits on the full pipe (its
    server session busy in a COPY, not idle) until the swap reads it.
    Nothing reaches the target unless the plan passed."""
    pg_dump = str(require_for_server("pg_dump", server_version).path)
    conninfo, env = libpq_target(source_url, app="safesync-clone-dump", server_version=server_version)
    return Client(dump_command(pg_dump, conninfo, options, scope, snapshot), env, stdout=subprocess.PIPE)


def start_restore(target_url: str, server_version: int) -> Client:
    """psql on the target, reading the swap's script on stdin."""
    psql = str(require_for_server("psql", server_version).path)
    conninfo, env = libpq_target(target_url, app="safesync-clone-restore", server_version=server_version)
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "--dbname", conninfo, "-f", "-"]
    return Client(argv, env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def _q(conn: psycopg.Connection, composable: sql.Composable) -> str:
    return composable.as_string(conn)


# Empties one schema on the target, object by object, keeping the schema
# itself (the restoring role may not own it) and the extensions kept in
# place; then checks nothing else is left (an object kind the loop missed
# would make the dump fail on "already exists", so it fails here, named).
EMPTY_SCHEMA = """DO $safesync_empty$ DECLARE o record; left_over text; BEGIN
  FOR o IN SELECT i.type, i.identity FROM pg_catalog.pg_depend d,
                  LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, 0) i
           WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = {schema}::pg_catalog.regnamespace
             AND d.deptype = 'n' AND NOT (d.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                 AND (SELECT x.extname FROM pg_catalog.pg_extension x WHERE x.oid = d.objid) = ANY({kept}::text[]))
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid
                 AND (e.deptype = 'e' OR e.deptype = 'i' AND NOT (e.refclassid = e.classid AND e.refobjid = e.objid)))
           ORDER BY d.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass DESC, d.objid
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE o.type WHEN 'statistics object' THEN 'statistics' ELSE o.type END, o.identity);
  END LOOP;
  SELECT string_agg(pg_catalog.pg_describe_object(d.classid, d.objid, 0), ', ') INTO left_over
  FROM pg_catalog.pg_depend d
  WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = {schema}::pg_catalog.regnamespace
    AND d.deptype = 'n' AND d.classid <> 'pg_catalog.pg_extension'::pg_catalog.regclass
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid
                 AND (e.deptype = 'e' OR e.deptype = 'i' AND NOT (e.refclassid = e.classid AND e.refobjid = e.objid)));
  IF left_over IS NOT NULL THEN RAISE EXCEPTION 'could not empty schema %: % remain', {schema}, left_over; END IF;
END $safesync_empty$;"""


# After the data, the swap builds every primary key, index and FK (pg_dump's
# order); those sorts are most of its time past the COPYs. With the stock
# 64MB each one spills to disk, and PostgreSQL gives a build one parallel
# worker at most (it wants 32MB per participant). So the swap's session asks
# for MAINTENANCE_WORK_MEM — raised, never lowered, and never above the
# server's shared_buffers (a server that gives its buffer cache that much can
# afford one sort that size; a parallel build shares the budget among its
# workers, so it is the session's total).
MAINTENANCE_WORK_MEM = "256MB"
MAINTENANCE_MEMORY = (
    "SELECT pg_catalog.set_config('maintenance_work_mem', (GREATEST(m.have, LEAST(m.wanted, m.buffers)) / 1024)::text || 'kB', false)"
    " FROM (SELECT pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem')) AS have,"
    f" pg_catalog.pg_size_bytes('{MAINTENANCE_WORK_MEM}') AS wanted,"
    " pg_catalog.pg_size_bytes(pg_catalog.current_setting('shared_buffers')) AS buffers) m;"
)


def pre_script(conn: psycopg.Connection, options: CloneOptions, plan: ClonePlan) -> str:
    """BEGIN, the guard against cascading outside the schemas, the schemas
    emptied (or created) and given dev's owner and comment."""
    guard_sql = EXTERNAL_DEPENDENTS.replace("%(schemas)s", _q(conn, sql.Literal(list(options.schemas))) + "::text[]")
    lines = [
        "BEGIN;",
        _q(conn, sql.SQL("SET lock_timeout = {};").format(sql.Literal(options.lock_timeout))),
        "SET client_connection_check_interval = '1s';",
        MAINTENANCE_MEMORY,
        "DO $safesync_guard$ DECLARE found text; BEGIN",
        f"  SELECT string_agg(dependent || ' (depends on ' || depends_on || ')', ', ') INTO found FROM ({guard_sql}) g;",
        "  IF found IS NOT NULL THEN RAISE EXCEPTION 'objects outside the cloned schemas depend on them: %', found; END IF;",
        "END $safesync_guard$;",
    ]
    for name, schema in plan.create_extensions:
        lines.append(_q(conn, sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {};").format(sql.Identifier(name), sql.Identifier(schema))))
    kept = _q(conn, sql.Literal(list(plan.carry.kept_extensions)))
    for schema in options.schemas:
        if schema not in plan.carry.missing_schemas:
            lines.append(EMPTY_SCHEMA.format(schema=_q(conn, sql.Literal(schema)), kept=kept))
    lines += carry_pre(conn, plan.carry)
    return "\n".join(lines) + "\n"


def dump_filter(plan: ClonePlan) -> DumpFilter:
    """Leaves out of the dump what the clone carries itself (the schemas'
    own properties), the default privileges of roles it may not act as
    (equal on both sides) and the extensions it keeps in place; loads the
    tables it creates with COPY FREEZE; holds back the materialized views'
    refreshes, which run after the masks (refreshed before, a view of a
    masked column kept dev's real values on staging)."""
    foreign = set(plan.carry.foreign_roles)
    kept = set(plan.carry.kept_extensions)

    def drop(entry: Entry) -> bool:
        if entry.type == "SCHEMA" or (entry.type in ("COMMENT", "ACL") and entry.name.startswith("SCHEMA ")):
            return True
        if entry.type == "DEFAULT ACL":
            return entry.owner in foreign
        if entry.type == "EXTENSION":
            return entry.name in kept
        return entry.type == "COMMENT" and entry.name.startswith("EXTENSION ") and entry.name[10:].strip('"') in kept

    return DumpFilter(
        drop, freeze=lambda entry: (entry.schema, entry.name) in plan.freezable, hold=lambda entry: entry.type == "MATERIALIZED VIEW DATA"
    )


def _mask_expression(conn: psycopg.Connection, mask: Mask, col_type: str, salt: str) -> sql.Composable:
    col = sql.Identifier(mask.column)
    if mask.strategy == "null":
        return sql.SQL("NULL")
    if mask.strategy == "fixed":
        return sql.Literal(mask.value)
    digest = sql.SQL("md5({} || {}::text)").format(sql.Literal(salt), col)
    if col_type == "uuid":
        return sql.SQL("{}::uuid").format(digest)
    return sql.SQL("{} || {}").format(digest, sql.Literal(mask.value or ""))


def mask_script(conn: psycopg.Connection, options: CloneOptions, plan: ClonePlan, salt: str) -> str:
    """One UPDATE per masked table, user triggers off during it on every
    table it rewrites — the table, its partitions and inheritance children,
    whose own triggers would otherwise stamp the rows it masks — and put back
    exactly as they were (enabled, disabled, ALWAYS or REPLICA), parents
    first, so a partition's state wins over its parent's recursing ALTER."""
    by_table: dict[TableRef, list[Mask]] = {}
    for mask in options.masks:
        if mask.table not in plan.without_data:
            by_table.setdefault(mask.table, []).append(mask)
    parts = []
    for table, masks in sorted(by_table.items()):
        update = sql.SQL("UPDATE {} SET {}").format(
            table.ident,
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(m.column), _mask_expression(conn, m, plan.mask_types[(table, m.column)], salt))
                for m in masks
            ),
        )
        parts.append(
            "DO $safesync_mask$ DECLARE t regclass := "
            + _q(conn, sql.Literal(str(table.ident.as_string(conn))))
            + "; trg record; BEGIN\n"
            "  CREATE TEMP TABLE safesync_triggers ON COMMIT DROP AS\n"
            "    WITH RECURSIVE tree(relid, depth) AS (SELECT t::pg_catalog.oid, 0 UNION ALL\n"
            "      SELECT i.inhrelid, tree.depth + 1 FROM tree JOIN pg_catalog.pg_inherits i ON i.inhparent = tree.relid)\n"
            "    SELECT tree.relid::pg_catalog.regclass AS rel, tree.depth, g.tgname, g.tgenabled\n"
            "    FROM tree JOIN pg_catalog.pg_trigger g ON g.tgrelid = tree.relid AND NOT g.tgisinternal;\n"
            "  FOR trg IN SELECT DISTINCT rel, depth FROM safesync_triggers ORDER BY depth LOOP\n"
            "    EXECUTE format('ALTER TABLE %s DISABLE TRIGGER USER', trg.rel);\n"
            "  END LOOP;\n"
            "  EXECUTE " + _q(conn, sql.Literal(_q(conn, update))) + ";\n"
            "  FOR trg IN SELECT * FROM safesync_triggers ORDER BY depth LOOP\n"
            "    EXECUTE format('ALTER TABLE %s %s TRIGGER %I', trg.rel, CASE trg.tgenabled WHEN 'D' THEN 'DISABLE'\n"
            "      WHEN 'A' THEN 'ENABLE ALWAYS' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE' END, trg.tgname);\n"
            "  END LOOP;\n"
            "  DROP TABLE safesync_triggers;\n"
            "END $safesync_mask$;"
        )
    return "\n".join(parts) + ("\n" if parts else "")


def post_script(conn: psycopg.Connection, options: CloneOptions, plan: ClonePlan) -> str:
    """After the masks and the matviews' refreshes: the schemas' exact
    grants, kept publication memberships, and a final check that every
    source relation exists (COMMIT follows)."""
    lines = []
    for schema in options.schemas:
        if not plan.carry.manage_schema.get(schema):
            continue  # equal on both sides, and ours to keep (plan)
        ident = sql.Identifier(schema)
        # Reset the schema's grants, then grant exactly what dev has.
        lines.append(
            "DO $safesync_acl$ DECLARE g oid; BEGIN\n"
            "  FOR g IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n,\n"
            "           pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a\n"
            f"           WHERE n.nspname = {_q(conn, sql.Literal(schema))} AND a.grantee <> n.nspowner LOOP\n"
            f"    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %s', {_q(conn, sql.Literal(schema))},\n"
            "      CASE WHEN g = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(g)) END);\n"
            "  END LOOP;\n"
            "END $safesync_acl$;"
        )
        for grantee, privilege, grantable in plan.schema_grants.get(schema, []):
            who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
            lines.append(
                _q(
                    conn,
                    sql.SQL("GRANT {} ON SCHEMA {} TO {}{};").format(
                        sql.SQL(privilege), ident, who, sql.SQL(" WITH GRANT OPTION" if grantable else "")
                    ),
                )
            )
    lines += carry_post(conn, plan.carry)
    expected = _q(conn, sql.Literal(sorted(plan.source_relations)))
    schemas = _q(conn, sql.Literal(list(options.schemas)))
    lines.append(
        "DO $safesync_verify$ DECLARE missing text; BEGIN\n"
        f"  SELECT string_agg(r, ', ') INTO missing FROM unnest({expected}::text[]) r WHERE to_regclass(r) IS NULL;\n"
        "  IF missing IS NOT NULL THEN RAISE EXCEPTION 'clone incomplete, missing: %', missing; END IF;\n"
        f"  PERFORM 1 FROM pg_catalog.pg_namespace WHERE nspname = ANY({schemas}::text[]) HAVING count(*) = {len(options.schemas)};\n"
        "  IF NOT FOUND THEN RAISE EXCEPTION 'clone incomplete: a schema is missing'; END IF;\n"
        "END $safesync_verify$;"
    )
    return "\n".join(lines) + "\n"


def _tail(said: bytes, lines: int = 6) -> str:
    text = said[-8000:].decode(errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and "NOTICE" not in line and not line.startswith(("DETAIL:  drop cascades", "drop cascades"))]
    return redact("\n".join(kept[-lines:]))


def stream_clone(
    dump: Client,
    restore: Client,
    options: CloneOptions,
    plan: ClonePlan,
    *,
    target_conn: psycopg.Connection,
    on_chunk: Callable[[bytes, int], None] | None = None,
) -> CloneStats:
    """Run the swap: ``dump`` (started with ``plan.scope``) through this
    process into ``restore``. Returns when the target committed; raises
    JobFailed (the target rolled back) otherwise. The caller closes both."""
    salt = secrets.token_hex(16)
    pre = pre_script(target_conn, options, plan).encode()
    masks = mask_script(target_conn, options, plan, salt).encode()
    post = post_script(target_conn, options, plan).encode() + b"COMMIT;\n"
    started = time.perf_counter()
    streamed = _pump(dump.proc, restore.proc, pre, (masks, post), dump_filter(plan), on_chunk)
    if isinstance(streamed, str):
        said = restore.said()
        detail = {"pg_dump": _tail(dump.said()), "psql": _tail(said)}
        if streamed.startswith("restore failed"):
            raise failure("clone failed, staging unchanged (rolled back)", redact(said[-20000:].decode(errors="replace")), streamed, detail)
        raise JobFailed(f"clone failed, staging unchanged (rolled back): {streamed}", detail)
    return CloneStats(streamed, round(time.perf_counter() - started, 3))


def _pump(
    dump: subprocess.Popen, restore: subprocess.Popen, pre: bytes, post: tuple[bytes, bytes], keep: DumpFilter,
    on_chunk: Callable[[bytes, int], None] | None,
) -> int | str:
    """Copy pre + dump (filtered) + masks + the entries the filter held
    back + the rest of post into psql; COMMIT (post's end) only if the dump
    is whole. Returns the bytes streamed, or a reason string after rolling back."""
    out, src = restore.stdin, dump.stdout
    assert out is not None and src is not None
    total, tail = 0, b""
    try:
        out.write(pre)
        while True:
            chunk = os.read(src.fileno(), CHUNK)
            if not chunk:
                break
            out.write(keep.feed(chunk))
            total += len(chunk)
            tail = (tail + chunk)[-256:]
            if on_chunk:
                on_chunk(chunk, total)
        out.write(keep.finish())
        code = dump.wait()
        if code != 0 or DUMP_TRAILER not in tail:
            restore.kill()  # session ends without COMMIT: rolled back
            restore.wait()
            return f"pg_dump exited with code {code}" if code else "pg_dump output was incomplete"
        masks, rest = post
        out.write(masks + bytes(keep.held) + rest)
        out.close()
    except DumpFilterError as exc:
        for proc in (dump, restore):
            proc.kill()
            proc.wait()
        return f"the dump could not be filtered: {exc}"
    except BrokenPipeError:
        dump.kill()
        dump.wait()
        code = restore.wait()
        return f"restore failed (psql exit code {code})"
    code = restore.wait()
    if code != 0:
        return f"restore failed (psql exit code {code})"
    return total
