"""Columns that a target's BEFORE triggers rewrite as rows are written.

Real schemas stamp rows on write: the ``moddatetime`` extension
(``updated_at``), pagila's ``last_updated()`` (``NEW.last_update =
CURRENT_TIMESTAMP``), tsvector triggers. Rows are compared *after* the
trigger ran — the post-sync check re-hashes every written row on the
target — so a trigger that derives a column from the row (a tsvector of the
title) passes, and one that stamps the clock makes the written rows differ
from the source. That difference recurs on every run, so it is a refusal,
and ``explain`` says which column differs, which trigger writes it, and the
``ignore_columns`` option that leaves the column out of comparison and write.
A trigger that returns NULL skips the write instead (``unequal``): that is
named as a skipped write, never blamed on a column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import psycopg
from psycopg import sql

from safesync.shared import rowhash
from safesync.shared.rowdiff import hashes_by_key

from .plan import TableSpec

SAMPLE = 20
_ASSIGNS = re.compile(r"\bnew\s*\.\s*\"?([A-Za-z_][A-Za-z0-9_$]*)\"?\s*:?=(?!=)", re.I)
# C trigger functions that say in their arguments which column they set
_ARG_SETS_COLUMN = {"moddatetime", "tsvector_update_trigger", "tsvector_update_trigger_column", "insert_username"}


@dataclass(frozen=True)
class BeforeTrigger:
    name: str
    function: str
    events: str  # "INSERT OR UPDATE"
    columns: tuple[str, ...]  # the columns it is seen to set (from its arguments or body)


def before_triggers(conn: psycopg.Connection, spec: TableSpec) -> list[BeforeTrigger]:
    """Enabled BEFORE row triggers on INSERT or UPDATE of the table."""
    rows = conn.execute(
        """select t.tgname, quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                  p.proname, p.prosrc,
                  concat_ws(' OR ', case when t.tgtype & 4 <> 0 then 'INSERT' end, case when t.tgtype & 16 <> 0 then 'UPDATE' end),
                  t.tgargs
           from pg_trigger t join pg_proc p on p.oid = t.tgfoid join pg_namespace n on n.oid = p.pronamespace
           where t.tgrelid = %s::regclass and not t.tgisinternal and t.tgenabled in ('O', 'A')
             and t.tgtype & 1 = 1 and t.tgtype & 2 = 2 and t.tgtype & (4 | 16) <> 0
           order by t.tgname""",
        [spec.table.ident.as_string(conn)],
    ).fetchall()
    found = []
    for name, function, proname, source, events, raw_args in rows:
        args = [a.decode("utf-8", errors="replace") for a in bytes(raw_args or b"").split(b"\x00") if a]
        if proname in _ARG_SETS_COLUMN and args:
            columns = (args[0].lower(),)
        else:
            columns = tuple(dict.fromkeys(m.group(1).lower() for m in _ASSIGNS.finditer(source or "")))
        found.append(BeforeTrigger(name, function, events, columns))
    return found


def differing_columns(src: psycopg.Connection, tgt: psycopg.Connection, spec: TableSpec, keys: Sequence[tuple]) -> dict[str, int]:
    """column → how many of ``keys`` (a sample) differ in it between source and target."""
    keys = list(keys)[:SAMPLE]
    if not keys:
        return {}
    relation, params = rowhash.keys_relation(spec, keys)
    query = sql.SQL("select {}, {} from {} join {} on {}").format(
        rowhash.key_text(spec),
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in spec.columns),
        spec.from_item(),
        relation,
        rowhash.keys_match(spec),
    )
    n = len(spec.key)
    a = {tuple(r[:n]): r[n:] for r in src.execute(query, params).fetchall()}
    b = {tuple(r[:n]): r[n:] for r in tgt.execute(query, params).fetchall()}
    counts: dict[str, int] = {}
    for key in a.keys() & b.keys():
        for column, x, y in zip(spec.columns, a[key], b[key]):
            if x != y:
                counts[column] = counts.get(column, 0) + 1
    return counts


def explain(src: psycopg.Connection, tgt: psycopg.Connection, spec: TableSpec, keys: Sequence[tuple]) -> str:
    """Why written rows of ``spec`` differ from the source: the columns, the
    trigger that writes them, and the option that leaves them out."""
    columns = differing_columns(src, tgt, spec, keys)
    if not columns:
        return ""
    triggers = before_triggers(tgt, spec)
    parts = []
    for column in sorted(columns):
        by = [t for t in triggers if column.lower() in t.columns]
        if by:
            parts.append(
                f"column {column} is rewritten by " + ", ".join(f"BEFORE {t.events} trigger {t.name} ({t.function})" for t in by)
            )
        elif triggers:
            parts.append(f"column {column} differs (BEFORE triggers on the table: {', '.join(t.name for t in triggers)})")
        else:
            parts.append(f"column {column} differs")
    names = ", ".join(f'"{c}"' for c in sorted(columns))
    return (
        f"{spec.table}: " + "; ".join(parts)
        + f" — the same happens on every run; to leave the column out of comparison and write, set"
        f" [content_sync.options.{spec.table.short}] ignore_columns = [{names}]"
    )


@dataclass(frozen=True)
class Unequal:
    """Written keys whose target row does not hash as the source's, by what
    happened to the write: ``missing`` — no row (the insert was skipped: a
    BEFORE INSERT trigger returned NULL, or a rule); ``skipped`` — the row
    still hashes as the target had it before (the update was skipped);
    ``rewritten`` — the row changed, but not into the source's (a BEFORE
    trigger set columns: ``explain``). Only the last is what
    ``ignore_columns`` can help with."""

    missing: list[tuple]
    skipped: list[tuple]
    rewritten: list[tuple]


def unequal(d, now: dict[tuple, int], keys: Sequence[tuple]) -> Unequal:
    """Sort the written ``keys`` of ``d`` (conflicts.TableDecisions) by
    their target hashes after the write (``now``)."""
    before = d.diff.changed  # key -> (source, target hash) as compared, before the write
    out = Unequal([], [], [])
    for key in sorted(keys):
        if now.get(key) == d.writes[key]:
            continue
        if key not in now:
            out.missing.append(key)
        elif key in before and before[key][1] == now[key]:
            out.skipped.append(key)
        else:
            out.rewritten.append(key)
    return out


def explain_all(src: psycopg.Connection, tgt: psycopg.Connection, decisions) -> str:
    """``explain`` for every table whose written rows differ (decisions:
    conflicts.TableDecisions, with the source hash of each written key);
    for writes the target skipped, the BEFORE triggers that could have."""
    parts = []
    for d in decisions:
        if not d.writes:
            continue
        sample = sorted(d.writes)[: SAMPLE * 50]
        found = unequal(d, hashes_by_key(tgt, d.spec, sample), sample)
        if found.missing or found.skipped:
            names = ", ".join(t.name for t in before_triggers(tgt, d.spec)) or "none"
            parts.append(f"{d.spec.table}: the target skipped writes (BEFORE INSERT/UPDATE row triggers on the table: {names}; or a rule)")
        text = explain(src, tgt, d.spec, found.rewritten)
        if text:
            parts.append(text)
    return "; ".join(parts)
