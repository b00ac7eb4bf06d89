"""What doctor checks for content sync: the content tables exist as tables
with primary keys on both sides, the sync role can read them and write only
them (least privilege), and which foreign keys cross between content and
protected tables. A job's own checks, so they live with the job; doctor
runs them through ``shared.preflight.run_all``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect, definer_routes, foreign_keys, list_tables, policy_filtered, primary_key, relation_kind, writable_tables
from safesync.shared.preflight import FAIL, OK, WARN, Check, DbFacts
from safesync.shared.report import first_few


def _privileges(conn: psycopg.Connection, table: TableRef, kinds: Iterable[str]) -> set[str]:
    return {
        kind
        for kind in kinds
        if conn.execute("select has_table_privilege(format('%%I.%%I', %s::text, %s::text), %s)", [table.schema, table.name, kind]).fetchone()[0]
    }


def check_content_sync(settings: Settings, facts: dict[str, DbFacts]) -> Iterator[Check]:
    section = settings.config.content_sync
    if not section.tables:
        return
    content = [TableRef.parse(t) for t in section.tables]
    for side, name in (("source", section.source), ("target", section.target)):
        if name not in facts:
            yield Check("content sync", f"{side} {name}", FAIL, "database not reachable: tables and privileges not checked")
            continue
        with connect(facts[name].url) as conn:
            present = set(list_tables(conn))
            for table in content:
                if table not in present:
                    kind = relation_kind(conn, table)
                    if kind is None:
                        yield Check("content sync", f"{side} {table.short}", FAIL, f"table missing in {name}", "create it (migrate) or remove it from content_sync.tables")
                    else:
                        yield Check("content sync", f"{side} {table.short}", FAIL, f"is a {kind} in {name}, not a table",
                                    "list the partitioned table itself" if kind.startswith("partition of") else "content sync writes tables: list the table(s) behind it")
                elif not primary_key(conn, table):
                    yield Check("content sync", f"{side} {table.short}", FAIL, "no primary key", "content sync matches rows by primary key: add one")
                elif side == "source" and not _privileges(conn, table, ["SELECT"]):
                    yield Check("content sync", f"{side} {table.short}", FAIL, f"{facts[name].user} cannot SELECT", "grant SELECT to the sync role")
                elif side == "target":
                    missing = {"SELECT", "INSERT", "UPDATE"} - _privileges(conn, table, ["SELECT", "INSERT", "UPDATE"])
                    if missing:
                        yield Check("content sync", f"target {table.short}", FAIL, f"{facts[name].user} lacks {', '.join(sorted(missing))}", "run `safesync roles sql` and apply it")
            filtered = policy_filtered(conn, content)
            if filtered:
                yield Check("content sync", f"{side} row-level security", FAIL,
                            f"policies would filter {', '.join(t.short for t in filtered)} for {facts[name].user}: compare and sync are refused",
                            "connect as a role with BYPASSRLS or the tables' owner (without FORCE ROW LEVEL SECURITY)")
            if side != "target":
                continue
            if conn.execute("select current_setting('session_replication_role')").fetchone()[0] == "replica":
                yield Check("content sync", "target triggers", FAIL, f"session_replication_role is replica for {facts[name].user} in {name}: a sync is refused",
                            "reset it (ALTER DATABASE / ROLE … RESET session_replication_role): triggers and foreign keys must fire")
            content_set = set(content)
            writable = [t.short for t in writable_tables(conn, content)]
            routes = definer_routes(conn, content)
            # as the sync treats it: a warning (the per-transaction protection proof still checks every write),
            # a failure once content_sync.require_least_privilege makes the sync refuse it
            status, enforced = (FAIL, " (content_sync.require_least_privilege is on: the sync refuses)") if section.require_least_privilege else (WARN, "")
            if writable:
                yield Check("content sync", "role least privilege", status, f"{facts[name].user} could write protected tables: {first_few(writable)}{enforced}",
                            "connect as a role that can only write content tables: apply `safesync roles sql` (it needs a superuser, or on PostgreSQL 16+ a CREATEROLE role with BYPASSRLS)")
            if routes:
                yield Check("content sync", "role least privilege: definer routines", status,
                            f"{facts[name].user} could write protected tables through SECURITY DEFINER routines, which run with their owner's rights: {first_few(routes)}{enforced}",
                            "revoke EXECUTE on them from PUBLIC and the role, or mark them STABLE if they only read")
            if not writable and not routes:
                yield Check("content sync", "role least privilege", OK, f"{facts[name].user} can write only content tables")
            for fk in foreign_keys(conn):
                if fk.table in content_set and fk.ref_table not in content_set:
                    yield Check("content sync", f"{fk.table.short} → {fk.ref_table.short}", WARN, f"content table references non-content table ({fk.name})", "a synced row may point at a row that exists only in dev: the sync fails and rolls back")
                elif fk.ref_table in content_set and fk.table not in content_set and fk.on_delete in ("CASCADE", "SET NULL", "SET DEFAULT"):
                    yield Check("content sync", f"{fk.table.short} → {fk.ref_table.short}", WARN, f"ON DELETE {fk.on_delete} from a content table into a protected one ({fk.name})", "deleting content would change user data: keep delete_missing off or change the FK")
