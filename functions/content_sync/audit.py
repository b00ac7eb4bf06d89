"""The static side-channel audit: code the target would run during a sync
whose effects the in-transaction protection proof cannot see, found by
reading the catalog before compare, dry-run or sync execute anything.

What runs on the target during a sync: the triggers (enabled ones) and
rules of the content tables, their partitions and the ledger; their column
defaults, CHECK and domain constraints, index expressions and RLS policies;
the same of tables an FK action from them reaches (reported under the
content table); event triggers that fire on the DDL the sync itself runs
(``CREATE TABLE AS`` of its staging tables; ``CREATE SCHEMA``/``CREATE
TABLE`` of the ledger; ``ALTER TABLE``/``CLUSTER`` when it migrates a
first-format ledger). From each, the audit follows every function it
calls — transitively through SQL and PL/pgSQL bodies (``sqltext``), stored
expressions (``pg_node_tree``), operators and casts — and the same of every
table those bodies and expressions name.

The catalog is read in a few batched queries (one per level of the walk,
expressions pre-digested in SQL), so a database with hundreds of tables is
audited in tens of milliseconds; each function is read once however many
paths reach it.

A finding is code whose effect escapes the transaction or the proof:

- another connection or server: ``dblink``, foreign tables (``postgres_fdw``
  pointing back at the database commits its writes with ours, out of the
  proof's sight), ``pg_background``, HTTP extensions;
- files, programs, messages: ``COPY`` in a body (server files or
  ``PROGRAM``), ``lo_*`` large-object calls (``lo_export`` writes files),
  ``NOTIFY``/``pg_notify`` (delivered at COMMIT), ``pg_logical_emit_message``,
  server signals and settings (``pg_terminate_backend``, ``pg_reload_conf``…);
- what blinds the proof: ``SET``/``RESET``/``set_config`` (``track_counts``,
  ``session_replication_role``, ``SET CONSTRAINTS … DEFERRED``,
  ``search_path``), a function's own ``SET`` clause (``search_path`` alone
  excepted), ``SECURITY DEFINER`` (runs with its owner's rights, beyond least
  privilege); ``nextval``/``setval`` called on a sequence that is not a
  content table's (sequence values survive ROLLBACK; a column default's own
  sequence is left to the proof, which sees its use);
- any trigger or rule on the ledger itself: it runs inside the sync's own
  ledger writes, where neither the proof nor ``ledger_watch`` can tell its
  rows from the sync's;
- what cannot be read: dynamic SQL (``EXECUTE``), ``DO`` blocks, ``LOAD``,
  code created at run time (``CREATE FUNCTION/TRIGGER/RULE/POLICY …``,
  ``ALTER … ENABLE TRIGGER``), and every function in a language other than
  SQL, PL/pgSQL or the server's own C/internal code (plpython3u, plperl,
  pltcl, plv8…: they can open connections and files).

C and internal functions are trusted unless they belong to a side-channel
extension or are one of the built-ins listed below: a C function needs a
superuser to install, and its code is not in the database to read.

The audit over-approximates (any identifier that names a table makes that
table's triggers part of the audit; every overload of a called name is
read): a finding may be code that would not run this time, never the
reverse for what it reads. A table listed in
``content_sync.acknowledge_side_channels`` (a content table or the ledger;
what FK actions from a content table reach counts for it) or an event
trigger in ``acknowledge_event_triggers`` turns its findings into
warnings: someone reviewed that code and accepts that dry-run and sync run
it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Iterable

import psycopg

from safesync.shared.db import TableRef

from . import sqltext
from .proof import FIRST_NORMAL_OID, catalog_path

SIDE_CHANNEL_EXTENSIONS = {
    "dblink": "opens another connection (dblink): what it writes is not part of this transaction",
    "postgres_fdw": "reaches another server (postgres_fdw), outside this transaction",
    "pg_background": "runs SQL in a background worker (pg_background): its own transaction",
    "http": "makes HTTP requests (http extension)",
    "pg_net": "queues HTTP requests (pg_net), sent after COMMIT",
    "adminpack": "writes server files (adminpack)",
    "file_fdw": "reads server files or programs (file_fdw)",
    "aws_lambda": "invokes AWS Lambda",
    "aws_s3": "reads or writes S3",
    "pg_cron": "schedules jobs (pg_cron) that run outside this transaction",
}
_FILES = "reads or writes server files"
_SEQUENCE = "moves a sequence (values survive ROLLBACK)"
SIDE_CHANNEL_BUILTINS = {
    **dict.fromkeys(
        ["lo_create", "lo_creat", "lo_unlink", "lo_open", "lowrite", "lo_put", "lo_truncate", "lo_truncate64", "lo_from_bytea", "lo_get", "loread", "lo_lseek", "lo_lseek64", "lo_tell", "lo_tell64", "lo_close"],
        "large object call (lo_*)",
    ),
    "lo_import": "large object call (lo_import reads a server file)",
    "lo_export": "large object call (lo_export writes a server file)",
    "pg_notify": "pg_notify: a message delivered at COMMIT to listeners outside the transaction",
    "set_config": "set_config: changes a setting (track_counts, session_replication_role, search_path…) the proof relies on",
    "pg_logical_emit_message": "pg_logical_emit_message: a WAL message outside the transaction's rollback",
    "pg_terminate_backend": "signals other sessions",
    "pg_cancel_backend": "signals other sessions",
    "pg_reload_conf": "reloads the server configuration",
    "pg_rotate_logfile": "rotates the server log",
    "pg_switch_wal": "forces a WAL switch",
    "pg_create_restore_point": "writes a WAL restore point",
    "pg_stat_reset": "resets statistics counters",
    "pg_stat_reset_single_table_counters": "resets statistics counters",
    "pg_stat_reset_shared": "resets statistics counters",
    "pg_stat_clear_snapshot": "resets statistics counters",
    "pg_file_write": _FILES,
    "pg_file_rename": _FILES,
    "pg_file_unlink": _FILES,
    "pg_read_file": _FILES,
    "pg_read_binary_file": _FILES,
    "pg_advisory_lock": "takes a session-level advisory lock (outlives ROLLBACK)",
    "pg_advisory_lock_shared": "takes a session-level advisory lock (outlives ROLLBACK)",
    "pg_try_advisory_lock": "takes a session-level advisory lock (outlives ROLLBACK)",
    "pg_try_advisory_lock_shared": "takes a session-level advisory lock (outlives ROLLBACK)",
    **dict.fromkeys(["pg_create_logical_replication_slot", "pg_create_physical_replication_slot", "pg_drop_replication_slot", "pg_replication_slot_advance"], "changes replication slots (not transactional)"),
}
SEQUENCE_FUNCTIONS = frozenset({"nextval", "setval"})
AUDITED_LANGUAGES = frozenset({"sql", "plpgsql"})
TRUSTED_LANGUAGES = frozenset({"internal", "c"})  # the server's own code and installed C extensions
# what the sync's own DDL fires, as (event, command tag): staging tables, the ledger on a first run ...
SYNC_DDL = [(event, tag) for event in ("ddl_command_start", "ddl_command_end") for tag in ("CREATE TABLE AS", "CREATE TABLE", "CREATE SCHEMA")]
# ... and the in-place migration of a first-format ledger (ALTER TABLE … DROP COLUMN fires sql_drop too)
MIGRATION_DDL = [(event, tag) for event in ("ddl_command_start", "ddl_command_end", "sql_drop", "table_rewrite") for tag in ("ALTER TABLE", "CLUSTER")]


_ACTIONS = ("CASCADE", "SET NULL", "SET DEFAULT")


# The functions, operators and relations a piece of code uses are its normal dependencies in pg_depend
# (recorded for every stored expression and SQL-standard body) — except built-in functions, which are
# pinned and never recorded: those the audit flags are looked for in the expression itself, behind a
# cheap match. What runs with a relation depends on how the sync reaches it: "all" (content tables,
# the ledger, tables code names), "update" (an FK action that updates: SET NULL/DEFAULT, ON UPDATE
# CASCADE — triggers, rules, CHECK and domain constraints, index expressions, defaults) or "delete"
# (ON DELETE CASCADE only — triggers and rules; RI runs as the owner, so no policies).
_CODE = r"""
with piece(relid, via, read, is_default, func, tree, classid, objid) as materialized (
  select t.tgrelid, 'trigger ' || t.tgname, false, false, t.tgfoid, coalesce(t.tgqual::text, ''), 'pg_trigger'::regclass, t.oid from pg_trigger t
   where t.tgrelid = any(%(any)s) and not t.tgisinternal and t.tgenabled <> 'D'
  union all select r.ev_class, case when r.rulename = '_RETURN' then 'view query' else 'rule ' || r.rulename end, false, false, null,
                   concat(r.ev_action::text, ' ', r.ev_qual::text), 'pg_rewrite'::regclass, r.oid from pg_rewrite r where r.ev_class = any(%(any)s)
  union all select p.polrelid, 'policy ' || p.polname, true, false, null, concat(p.polqual::text, ' ', p.polwithcheck::text),
                   'pg_policy'::regclass, p.oid from pg_policy p where p.polrelid = any(%(all)s)
  union all select d.adrelid, 'default of column ' || a.attname, false, true, null, d.adbin::text, 'pg_attrdef'::regclass, d.oid from pg_attrdef d
   join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum where d.adrelid = any(%(update)s)
  union all select k.conrelid, 'check constraint ' || k.conname, false, false, null, k.conbin::text, 'pg_constraint'::regclass, k.oid
   from pg_constraint k where k.conrelid = any(%(update)s) and k.contype = 'c'
  union all select a.attrelid, 'domain ' || t.typname, false, false, null, k.conbin::text, 'pg_constraint'::regclass, k.oid
   from pg_constraint k join pg_type t on t.oid = k.contypid join pg_attribute a on a.atttypid = t.oid
   where a.attrelid = any(%(update)s) and a.attnum > 0 and not a.attisdropped
  union all select i.indrelid, 'index ' || x.relname, false, false, null, concat(i.indexprs::text, ' ', i.indpred::text), 'pg_class'::regclass, i.indexrelid
   from pg_index i join pg_class x on x.oid = i.indexrelid where i.indrelid = any(%(update)s) and (i.indexprs is not null or i.indpred is not null)
), uses as (
  select d.classid, d.objid,
         array_agg(d.refobjid) filter (where d.refclassid = 'pg_proc'::regclass) as funcs,
         array_agg(o.oprcode::oid) filter (where d.refclassid = 'pg_operator'::regclass) as opfuncs,
         array_agg(d.refobjid) filter (where d.refclassid = 'pg_class'::regclass and d.refobjid >= {first}) as rels
  from pg_depend d join (select distinct classid, objid from piece) p on p.classid = d.classid and p.objid = d.objid
  left join pg_operator o on d.refclassid = 'pg_operator'::regclass and o.oid = d.refobjid
  where d.deptype = 'n'  -- what the code uses; its automatic dependency on its own table is not a use
  group by 1, 2
)
select p.relid, p.via, p.read, p.is_default, p.func, coalesce(u.funcs, '{{}}'), coalesce(u.opfuncs, '{{}}'), coalesce(u.rels, '{{}}'),
       case when p.tree ~ %(flagged)s then array(select distinct m[1]::oid from regexp_matches(p.tree, ':funcid (\d+) ', 'g') m
            where m[1]::oid = any(%(builtins)s)) else '{{}}' end,
       case when strpos(p.tree, ':utilityStmt {{') > 0 then array(select distinct m[1] from regexp_matches(p.tree, ':utilityStmt \{{([A-Z]+)', 'g') m)
            else '{{}}' end
from piece p left join uses u on u.classid = p.classid and u.objid = p.objid
""".format(first=FIRST_NORMAL_OID)
_FUNCTIONS = r"""
select p.oid, n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', l.lanname, p.prosecdef,
       pg_get_userbyid(p.proowner), coalesce(p.proconfig, '{{}}'), case when l.lanname in ('sql', 'plpgsql') then p.prosrc else '' end,
       {sqlbody} is not null, (select e.extname from pg_depend d join pg_extension e on e.oid = d.refobjid
        where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e' limit 1),
       case when n.nspname = 'pg_catalog' then p.proname::text end,
       array(select d.refobjid from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.refclassid = 'pg_proc'::regclass),
       array(select o.oprcode::oid from pg_depend d join pg_operator o on o.oid = d.refobjid
             where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.refclassid = 'pg_operator'::regclass),
       array(select d.refobjid from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.refclassid = 'pg_class'::regclass
             and d.refobjid >= {first}),
       case when coalesce({sqlbody}, '') ~ %(flagged)s then array(select distinct m[1]::oid from regexp_matches({sqlbody}, ':funcid (\d+) ', 'g') m
            where m[1]::oid = any(%(builtins)s)) else '{{}}' end,
       '{{}}'::text[]
from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
where p.oid = any(%(f)s)
"""
# Code on the ledger runs inside the sync's own ledger statements, where the proof cannot tell its rows
# from the sync's: whatever it is, it could rewrite the history the next sync trusts.
_LEDGER_CODE = """
select 'trigger ' || t.tgname from pg_trigger t where t.tgrelid = %(ledger)s and not t.tgisinternal and t.tgenabled <> 'D'
union all select 'rule ' || r.rulename from pg_rewrite r where r.ev_class = %(ledger)s
"""
LEDGER_CODE_REASON = (
    "code on safesync's own ledger runs inside the sync's ledger writes, where the proof cannot tell its rows from the sync's "
    "(it could rewrite the history the next sync trusts)"
)
_EVENT_TRIGGERS = """
select e.evtname, e.evtfoid from pg_event_trigger e where e.evtenabled <> 'D' and exists (
  select from unnest(%(events)s::text[], %(tags)s::text[]) as f(event, tag) where f.event = e.evtevent and (e.evttags is null or f.tag = any(e.evttags)))
"""


@dataclass(frozen=True)
class Finding:
    table: str  # what it hangs off: a content table, the ledger, "event trigger x"
    via: str  # the path: "trigger t → public.f() → table audit_log → trigger u"
    function: str  # where the reason is ("" for a stored expression)
    reason: str
    read: bool = False  # runs when the table is only read (an RLS policy): compare would run it too
    acknowledged: bool = False

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "read"}

    def describe(self) -> str:
        return f"{self.table}: {self.via}{' in ' + self.function if self.function else ''}: {self.reason}"


@dataclass
class _Code:
    """A piece of code that runs with a relation (a trigger, a rule, a
    default…) or a function: what it does itself, what it uses."""

    label: str
    read: bool = False
    reasons: list[str] = field(default_factory=list)
    functions: set[int] = field(default_factory=set)
    relations: set[int] = field(default_factory=set)


class Audit:
    """One audit of one target database: ``load`` the code reachable from
    the entry points, then ``walk`` each entry to its findings."""

    def __init__(self, conn: psycopg.Connection, allowed_sequences: set[int], ddl: list[tuple[str, str]]) -> None:
        self.conn = conn
        self.allowed_sequences = allowed_sequences
        names = sorted({*SIDE_CHANNEL_BUILTINS, *SEQUENCE_FUNCTIONS})
        with conn.pipeline():  # one round trip for the lot
            builtins = conn.execute("select p.oid, p.proname::text from pg_proc p where p.pronamespace = 'pg_catalog'::regnamespace and p.proname = any(%s)", [names])
            relations = conn.execute(
                "select c.oid, n.nspname, c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') and c.oid >= %s",
                [FIRST_NORMAL_OID],
            )
            foreign = conn.execute(
                "select t.ftrelid, s.srvname, w.fdwname from pg_foreign_table t join pg_foreign_server s on s.oid = t.ftserver "
                "join pg_foreign_data_wrapper w on w.oid = s.srvfdw"
            )
            operators = conn.execute("select o.oid, o.oprname::text, o.oprcode::oid from pg_operator o where o.oid >= %s and o.oprcode <> 0", [FIRST_NORMAL_OID])
            events = conn.execute(_EVENT_TRIGGERS, {"events": [e for e, _ in ddl], "tags": [t for _, t in ddl]})
        self.builtins: dict[int, str] = dict(builtins.fetchall())
        self.relations: dict[int, tuple[str, str, str]] = {oid: (schema, name, kind) for oid, schema, name, kind in relations.fetchall()}
        self.foreign: dict[int, str] = {oid: f"server {server}, foreign data wrapper {wrapper}" for oid, server, wrapper in foreign.fetchall()}
        self.operators: dict[int, tuple[str, int]] = {oid: (symbol, code) for oid, symbol, code in operators.fetchall()}
        self.event_triggers: list[tuple[str, int]] = events.fetchall()  # those that fire on the sync's own DDL
        self.code: dict[int, list[_Code]] = {}
        self.scope: dict[int, str] = {}  # relid -> what of its code was read ("all", "update", "delete")
        self.functions: dict[int, _Code | None] = {}
        self.findings: list[Finding] = []
        # what names in bodies resolve to, learned as bodies are read
        self.by_name: dict[tuple[str | None, str], list[int]] = {}  # (schema or None, name) -> overloads
        self.arity: dict[int, tuple[int, int, bool]] = {}  # oid -> (arguments, defaulted, variadic)
        self._learned: set[str] = set()
        self.casts: dict[str, list[int]] | None = None  # target type name -> user cast functions
        self.rel_by_name: dict[tuple[str | None, str], list[int]] = {}
        self.seq_by_name: dict[str, int] = {}  # "name" and "schema.name" -> oid
        for oid, (schema, name, kind) in self.relations.items():
            if kind == "S":
                self.seq_by_name[name] = self.seq_by_name[f"{schema}.{name}"] = oid
            else:
                self.rel_by_name.setdefault((None, name), []).append(oid)
                self.rel_by_name.setdefault((schema, name), []).append(oid)

    # -- reading the catalog, a level of the walk per query ------------------------------

    def load(self, scopes: dict[int, str], funcs: set[int]) -> None:
        """Read the code of the relations in ``scopes`` (relid -> "all",
        "update" or "delete": what runs depends on how the sync reaches it)
        and of ``funcs``, and of everything they reach: one query per kind
        and level of the walk."""
        params = {"builtins": sorted(self.builtins), "flagged": ":funcid (?:" + "|".join(map(str, sorted(self.builtins))) + ") "}
        sqlbody = "p.prosqlbody::text" if self.conn.info.server_version >= 140000 else "null::text"
        functions_sql = _FUNCTIONS.format(sqlbody=sqlbody, first=FIRST_NORMAL_OID)
        while scopes or funcs:
            found_rel: set[int] = set()
            found_fun: set[int] = set(funcs)
            if scopes:
                for relid, scope in scopes.items():
                    self.code[relid] = []
                    self.scope[relid] = scope
                wanted = {
                    "any": sorted(scopes),
                    "update": sorted(r for r, s in scopes.items() if s != "delete"),
                    "all": sorted(r for r, s in scopes.items() if s == "all"),
                }
                for relid, via, read, is_default, func, *uses in self.conn.execute(_CODE, {**params, **wanted}):
                    piece = self._piece(via, read, is_default, *uses)
                    if func is not None:
                        piece.functions.add(func)
                    if piece.functions or piece.relations or piece.reasons:
                        self.code[relid].append(piece)
                        found_fun |= piece.functions
                        found_rel |= piece.relations
            todo = sorted(found_fun - self.functions.keys())
            if todo:
                rows = self.conn.execute(functions_sql, {**params, "f": todo}).fetchall()
                # bodies first: every name they call is then looked up in one query
                bodies = {row[0]: sqltext.read(row[6]) for row in rows if row[2] in AUDITED_LANGUAGES and not row[7]}
                self._learn({call.name for body in bodies.values() for call in body.calls})
                for oid, *row in rows:
                    fn = self.functions[oid] = self._function(*row, body=bodies.get(oid))
                    found_fun |= fn.functions
                    found_rel |= fn.relations
                for oid in todo:
                    self.functions.setdefault(oid, None)  # dropped meanwhile
            # a relation named by code may be written by it: everything of it runs
            scopes = {r: "all" for r in found_rel if self.scope.get(r) != "all" and self.relations.get(r, ("", "", "S"))[2] != "S"}
            funcs = found_fun - self.functions.keys()

    def _piece(self, via: str, read: bool, is_default: bool, funcs: list[int], opfuncs: list[int], rels: list[int], builtins: list[int], utilities: list[str]) -> _Code:
        piece = _Code(via, read, functions={*funcs, *opfuncs}, relations=set(rels))
        for utility in utilities:
            piece.reasons.append(
                "NOTIFY: a message delivered at COMMIT to listeners outside the transaction"
                if utility == "NOTIFYSTMT"
                else f"{utility.removesuffix('STMT')} statement: runs outside what the proof can see"
            )
        for fid in builtins:
            if self.builtins[fid] in SEQUENCE_FUNCTIONS:
                if not is_default:  # a default's nextval: the table's own sequence, which the proof watches
                    piece.reasons.append(f"{self.builtins[fid]}(): {_SEQUENCE}")
            else:
                piece.functions.add(fid)
        return piece

    def _function(self, label: str, language: str, secdef: bool, owner: str, config: list[str], source: str, has_sqlbody: bool, extension: str | None, builtin: str | None, *uses, body: sqltext.Body | None) -> _Code:
        fn = self._piece(label, False, False, *uses) if has_sqlbody else _Code(label)
        if extension in SIDE_CHANNEL_EXTENSIONS:
            fn.reasons.append(SIDE_CHANNEL_EXTENSIONS[extension])
        if builtin in SIDE_CHANNEL_BUILTINS:
            fn.reasons.append(SIDE_CHANNEL_BUILTINS[builtin])
        if secdef:
            fn.reasons.append(f"SECURITY DEFINER: runs with the rights of {owner}, not the sync role's")
        fn.reasons += [f"sets {setting} while it runs (changes what the proof can see)" for setting in config if not setting.lower().startswith("search_path=")]
        if body is not None:
            self._resolve(fn, body)
        elif language not in AUDITED_LANGUAGES and language not in TRUSTED_LANGUAGES:
            fn.reasons.append(f"written in {language}: safesync cannot read what it runs (connections, files, SQL of its own)")
        return fn

    def _resolve(self, fn: _Code, body: sqltext.Body) -> None:
        """What a body read as text uses: the functions it calls (the
        overloads its argument count fits), the tables and cast types it
        names, the user operators that appear in it."""
        fn.reasons += body.reasons
        for call in body.calls:
            for oid in _overloads(self.by_name.get((call.schema, call.name), []), self.arity, call.arguments):
                if self.builtins.get(oid) in SEQUENCE_FUNCTIONS:
                    reason = self._sequence_call(call)
                    if reason and reason not in fn.reasons:
                        fn.reasons.append(reason)
                else:
                    fn.functions.add(oid)
        for name in body.names:
            fn.relations |= set(self.rel_by_name.get((None, name), []))
            fn.functions |= set(self.casts.get(name, []))
        for pair in body.qualified:
            fn.relations |= set(self.rel_by_name.get(pair, []))
        fn.functions |= {code for symbol, code in self.operators.values() if symbol in body.code}

    def _learn(self, names: set[str]) -> None:
        """Look up the functions called ``names`` not looked up yet (and, the
        first time, the user casts): one query."""
        new = sorted(names - self._learned)
        self._learned |= set(new)
        with self.conn.pipeline():
            found = self.conn.execute(
                "select p.oid, n.nspname, p.proname::text, p.pronargs, p.pronargdefaults, p.provariadic <> 0 "
                "from pg_proc p join pg_namespace n on n.oid = p.pronamespace where p.proname = any(%s)",
                [new],
            )
            casts = None if self.casts is not None else self.conn.execute(
                "select t.typname::text, c.castfunc from pg_cast c join pg_type t on t.oid = c.casttarget where c.castfunc >= %s", [FIRST_NORMAL_OID]
            )
        for oid, schema, name, nargs, defaults, variadic in found.fetchall():
            self.by_name.setdefault((None, name), []).append(oid)
            self.by_name.setdefault((schema, name), []).append(oid)
            self.arity[oid] = (nargs, defaults, variadic)
        if casts is not None:
            self.casts = {}
            for typname, func in casts.fetchall():
                self.casts.setdefault(typname, []).append(func)

    def _sequence_call(self, call: sqltext.Call) -> str | None:
        """``nextval('name')`` on a content table's sequence is fine;
        another sequence, or one chosen at run time, is a finding."""
        if call.literal is None:
            return f"{call.name}() on a sequence chosen at run time: {_SEQUENCE}"
        name = call.literal.strip().replace('"', "")
        oid = self.seq_by_name.get(name) or self.seq_by_name.get(f"public.{name}")
        if oid in self.allowed_sequences:
            return None
        return f"{call.name}('{name}'): {_SEQUENCE}, and it is not a content table's sequence"

    # -- walking from an entry point ----------------------------------------------------

    def walk(self, entry: str, starts: list[tuple[str, int, str]]) -> None:
        """Every finding reachable from ``starts`` — ("relation" | "function",
        oid, path so far) — attributed to ``entry`` with its first path."""
        queue = deque((kind, oid, path, False) for kind, oid, path in starts)
        seen: set[tuple[str, int, bool]] = set()
        while queue:
            kind, oid, path, read = queue.popleft()
            if (kind, oid, read) in seen:
                continue
            seen.add((kind, oid, read))
            if kind == "relation":
                if oid in self.foreign:
                    schema, name, _ = self.relations[oid]
                    self._add(entry, path or "the table itself", "", f"uses foreign table {TableRef(schema, name).short} ({self.foreign[oid]}): another server, outside this transaction", read)
                    continue
                for piece in self.code.get(oid, []):
                    via = f"{path} → {piece.label}" if path else piece.label
                    self._follow(queue, entry, via, "", piece, read or piece.read)
            else:
                fn = self.functions.get(oid)
                if fn is not None:
                    self._follow(queue, entry, path, fn.label, fn, read, f"{path} → {fn.label}")

    def _follow(self, queue: deque, entry: str, via: str, function: str, code: _Code, read: bool, onward: str | None = None) -> None:
        for reason in code.reasons:
            self._add(entry, via, function, reason, read)
        onward = onward or via
        queue.extend(("function", f, onward, read) for f in sorted(code.functions))
        for r in sorted(code.relations):
            if r in self.relations:
                schema, name, _ = self.relations[r]
                queue.append(("relation", r, f"{onward} → table {TableRef(schema, name).short}", read))

    def _add(self, entry: str, via: str, function: str, reason: str, read: bool) -> None:
        """Record a finding once; the overloads a call could resolve to count once."""
        name = function.partition("(")[0]
        if not any((f.table, f.via, f.reason, f.function.partition("(")[0]) == (entry, via, reason, name) for f in self.findings):
            self.findings.append(Finding(entry, via, function, reason, read))


def _overloads(oids: list[int], arity: dict[int, tuple[int, int, bool]], given: int | None) -> list[int]:
    """The overloads a call with ``given`` arguments can resolve to (all of
    them when the count is unknown or none fits)."""
    if given is None:
        return oids
    fits = [o for o in oids if (lambda n, d, v: n - d <= given <= n or (v and given >= n - 1))(*arity[o])]
    return fits or oids


def fk_reach(table: TableRef, fks: Iterable, content: set[TableRef]) -> dict[TableRef, str]:
    """Protected tables an FK action from ``table`` reaches, transitively:
    their code runs inside the sync — "delete" when only ON DELETE CASCADE
    reaches them (rows are deleted: triggers and rules run), "update" when
    an action updates their rows (SET NULL/DEFAULT, ON UPDATE …)."""
    fks = list(fks)
    reached: dict[TableRef, str] = {}
    frontier = {table}
    while frontier:
        step: dict[TableRef, str] = {}
        for fk in fks:
            if fk.ref_table not in frontier or fk.table in content:
                continue
            if fk.on_delete in ("SET NULL", "SET DEFAULT") or fk.on_update in _ACTIONS:
                step[fk.table] = "update"
            elif fk.on_delete == "CASCADE":
                step.setdefault(fk.table, "delete")
        frontier = {t for t, scope in step.items() if reached.get(t) not in (scope, "update")}
        for t in frontier:
            reached[t] = "update" if "update" in (step[t], reached.get(t)) else step[t]
    return reached


def run(
    conn: psycopg.Connection,
    content: dict[TableRef, set[int]],
    *,
    ledger: int | None,
    fks: Iterable,
    allowed_sequences: set[int],
    acknowledged_tables: Iterable[str],
    acknowledged_event_triggers: Iterable[str],
    migrating: bool = False,
) -> list[Finding]:
    """Every side channel a sync of ``content`` (each table with its
    partitions' relids) could run on ``conn``'s database; ``fks``: the
    target's foreign keys; ``migrating``: the sync will migrate a
    first-format ledger (ALTER TABLE, CLUSTER: more event triggers fire)."""
    fks = list(fks)
    with catalog_path(conn):
        audit = Audit(conn, allowed_sequences, SYNC_DDL + (MIGRATION_DDL if migrating else []))
        oids = {TableRef(s, n): oid for oid, (s, n, _) in audit.relations.items()}
        entries: dict[str, list[tuple[str, int, str]]] = {}
        scopes: dict[int, str] = {}
        for table, relids in content.items():
            starts = [("relation", r, "") for r in sorted(relids)]  # a partition's code counts for its content table
            scopes.update(dict.fromkeys(relids, "all"))
            for t, scope in sorted(fk_reach(table, fks, set(content)).items()):
                if t in oids:
                    starts.append(("relation", oids[t], f"FK action → table {t.short}"))
                    if scopes.get(oids[t]) not in ("all", "update"):
                        scopes[oids[t]] = scope
            entries[table.short] = starts
        if ledger is not None:
            entries["safesync.content_ledger"] = [("relation", ledger, "")]
            scopes[ledger] = "all"
            for (via,) in conn.execute(_LEDGER_CODE, {"ledger": ledger}):
                audit._add("safesync.content_ledger", via, "", LEDGER_CODE_REASON, False)
        for name, func in audit.event_triggers:
            entries[f"event trigger {name}"] = [("function", func, "fires on the sync's own DDL")]
        audit.load(scopes, {oid for group in entries.values() for kind, oid, _ in group if kind == "function"})
        for entry, first in entries.items():
            audit.walk(entry, first)
    tables = {TableRef.parse(t).short for t in acknowledged_tables}
    events = {f"event trigger {name}" for name in acknowledged_event_triggers}
    return [Finding(f.table, f.via, f.function, f.reason, f.read, f.table in tables or f.table in events) for f in audit.findings]
