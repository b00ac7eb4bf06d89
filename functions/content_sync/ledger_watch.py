"""The ledger is the one non-content table a sync writes — rows always, its
definition when ``ledger.ensure`` creates it or migrates a first-format
ledger in place (ALTER TABLE, CLUSTER). The protection proof therefore lets
the ledger's rows and definition change; this watch makes sure only the
sync's own statements changed them.

A trigger on a content table that re-owns, grants, truncates or adds a
trigger to the ledger, or rewrites its entries (an entry saying "production
has not changed this row" lets the next sync overwrite a production edit),
is a change to user-visible state that safesync did not make. So the watch
reads the ledger's definition before ``ensure``, right after it and at the
proof, and its row counters around the sync's own ledger statements:

- after ``ensure`` nothing may change the definition (file node included:
  TRUNCATE), and rows may change only while ``_record`` writes them;
- ``ensure`` itself may change the layout (columns, constraints, indexes,
  file node) only: owner, privileges, RLS, options, triggers, policies and
  rules stay as they were (a ledger it created has no triggers, policies or
  rules, and RLS off); a ledger it left alone stays exactly as it was, rows
  included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from . import ledger
from .proof import catalog_path

LEDGER = "safesync.content_ledger"
# what ensure may change (creating or migrating), and what it never changes
LAYOUT = ("columns", "constraints", "indexes", "file node")
GUARD = ("name", "owner", "privileges", "row level security", "options", "triggers", "policies", "rules")

# The schema's name through regnamespace (the catalog cache), not a join on
# pg_namespace (the sync's snapshot): another request's runner may create
# schema safesync for its delivery log after that snapshot was taken, and
# the join would then lose the ledger ``ensure`` just created in it.
_DEFINITION = """
select c.relnamespace::regnamespace::text || '.' || c.relname || ' (' || c.relkind::text || c.relpersistence::text || ')', pg_get_userbyid(c.relowner), coalesce(c.relacl::text, ''),
       c.relrowsecurity::text || ' ' || c.relforcerowsecurity::text, coalesce(c.reloptions::text, '') || ' ' || c.relreplident::text,
       array(select t.tgname || ' ' || t.tgenabled::text || ' ' || pg_get_triggerdef(t.oid) from pg_trigger t
             where t.tgrelid = c.oid and not t.tgisinternal order by 1)::text,
       array(select p.polname || ' ' || p.polcmd::text || ' ' || p.polpermissive::text || ' ' || p.polroles::text || ' '
                    || coalesce(pg_get_expr(p.polqual, p.polrelid), '') || ' ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
             from pg_policy p where p.polrelid = c.oid order by 1)::text,
       array(select pg_get_ruledef(r.oid) from pg_rewrite r where r.ev_class = c.oid order by 1)::text,
       array(select a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' '
                    || coalesce(pg_get_expr(d.adbin, d.adrelid), '') from pg_attribute a
             left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum)::text,
       array(select k.conname || ' ' || pg_get_constraintdef(k.oid) from pg_constraint k where k.conrelid = c.oid order by 1)::text,
       array(select pg_get_indexdef(i.indexrelid) from pg_index i where i.indrelid = c.oid order by 1)::text,
       c.relfilenode::text
from pg_class c where c.oid = to_regclass(%s)
"""
_ROWS = """
select coalesce(sum(pg_stat_get_xact_tuples_inserted(c.oid)), 0)::bigint, coalesce(sum(pg_stat_get_xact_tuples_updated(c.oid)), 0)::bigint,
       coalesce(sum(pg_stat_get_xact_tuples_deleted(c.oid)), 0)::bigint
from pg_class c where c.oid = to_regclass(%(t)s) or c.oid = (select reltoastrelid from pg_class where oid = to_regclass(%(t)s))
"""

Definition = dict[str, str]


def definition(conn: psycopg.Connection) -> Definition | None:
    """The ledger's definition (GUARD and LAYOUT), or None while it does not exist."""
    with catalog_path(conn):  # the pg_get_*def texts qualify names the same way every time
        row = conn.execute(_DEFINITION, [LEDGER]).fetchone()
    return dict(zip(GUARD + LAYOUT, row)) if row else None


def rows(conn: psycopg.Connection) -> tuple[int, int, int]:
    """Rows of the ledger (and its TOAST table) this transaction inserted, updated and deleted so far."""
    with catalog_path(conn):
        return tuple(conn.execute(_ROWS, {"t": LEDGER}).fetchone())


@dataclass
class LedgerWatch:
    """The ledger as the sync found it, as ``ensure`` left it, and its
    row counters at each edge of the sync's own ledger statements."""

    found: Definition | None
    migrating: bool = False  # ``ensure`` migrates a first-format ledger
    schema_found: bool = True  # schema safesync existed before ``ensure``
    ensured: Definition | None = None
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @classmethod
    def before_ensure(cls, conn: psycopg.Connection) -> "LedgerWatch":
        """The ledger as found, and its row counters' starting point: they
        are not zero at a transaction's start when the backend wrote the
        ledger in an earlier transaction whose counts it has not flushed yet
        (PostgreSQL flushes them at most once a second) — the backend a
        pooler hands over from the sync just before, or this connection's
        own previous transaction."""
        found = definition(conn)
        schema = conn.execute("select to_regnamespace('safesync') is not null").fetchone()[0]
        watch = cls(found, found is not None and ledger.first_format(conn), schema)
        watch.counts["start"] = rows(conn)
        return watch

    @property
    def own_schema(self) -> str | None:
        """The schema ``ensure`` created for the ledger, if it did: the proof allows writing its catalog row."""
        return None if self.schema_found else LEDGER.partition(".")[0]

    def after_ensure(self, conn: psycopg.Connection) -> None:
        self.ensured = definition(conn)
        self.counts["ensured"] = rows(conn)

    def before_record(self, conn: psycopg.Connection) -> None:
        self.counts["before record"] = rows(conn)

    def after_record(self, conn: psycopg.Connection) -> None:
        self.counts["recorded"] = rows(conn)

    def changes(self, conn: psycopg.Connection) -> list[str]:
        """What changed in the ledger that the sync's own statements did not
        change (read at the proof, after the last statement)."""
        now, rows_now = definition(conn), rows(conn)
        out = []
        if now is None or self.ensured is None:
            return ["the ledger was dropped"]
        out += [f"{what} changed after the ledger was opened (not by safesync)" for what in GUARD + LAYOUT if now[what] != self.ensured[what]]
        migrated = self.migrating
        if self.found is None:
            fresh = {"row level security": "false false", "triggers": "{}", "policies": "{}", "rules": "{}"}
            out += [f"{what} set while safesync created it" for what, value in fresh.items() if self.ensured[what] != value]
        else:
            kept = GUARD if migrated else GUARD + LAYOUT
            out += [f"{what} changed while safesync {'migrated' if migrated else 'opened'} it" for what in kept if self.ensured[what] != self.found[what]]
        if not migrated and self.counts["ensured"] != self.counts["start"]:
            out.append(f"rows written before the sync recorded anything ({_delta(self.counts['start'], self.counts['ensured'])})")
        if self.counts["before record"] != self.counts["ensured"]:
            out.append(f"rows written while the content tables were written ({_delta(self.counts['ensured'], self.counts['before record'])})")
        if rows_now != self.counts["recorded"]:
            out.append(f"rows written after the sync recorded its own ({_delta(self.counts['recorded'], rows_now)})")
        return out


def _counted(counts: tuple[int, int, int]) -> str:
    return ", ".join(f"{n} {what}" for n, what in zip(counts, ("inserted", "updated", "deleted")) if n) or "none"


def _delta(was: tuple[int, int, int], now: tuple[int, int, int]) -> str:
    return _counted(tuple(b - a for a, b in zip(was, now)))
