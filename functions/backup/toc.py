"""A dump's table of contents, as ``pg_restore --list --verbose`` prints it.

Each entry line is ``<id>; <catalog oid> <object oid> <type> <schema> <tag>
<owner>``, followed by ``;\tdepends on: <id> <id> …`` in verbose mode. The
type is one of pg_dump's fixed descriptions, some with spaces (``DEFAULT
ACL``, ``TABLE DATA``), so it is matched against the known list, longest
first; the schema is one token (``-`` for none) and the owner the last one
(empty for extensions). A restore plan (``restore_plan``) decides entry by
entry what the restoring role may restore, and writes the list back
(``pg_restore --use-list``) with the left-out entries commented out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

KNOWN = sorted(
    {
        "ACL", "AGGREGATE", "BLOB", "BLOB DATA", "BLOBS", "CAST", "CHECK CONSTRAINT", "COLLATION", "COMMENT",
        "CONSTRAINT", "CONVERSION", "DATABASE", "DATABASE PROPERTIES", "DEFAULT", "DEFAULT ACL", "DOMAIN",
        "ENCODING", "EVENT TRIGGER", "EXTENSION", "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER",
        "FOREIGN TABLE", "FUNCTION", "INDEX", "INDEX ATTACH", "LARGE OBJECT", "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "POLICY",
        "PROCEDURAL LANGUAGE", "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL", "SEQUENCE", "SEQUENCE OWNED BY",
        "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS", "STATISTICS DATA", "STDSTRINGS", "SUBSCRIPTION",
        "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE",
        "USER MAPPING", "VIEW",
    },
    key=len,
    reverse=True,
)
_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s+depends on:((?: \d+)*)\s*$")


@dataclass
class TocEntry:
    id: int
    catalog: int  # the catalog's oid (e.g. 1259 pg_class); 0 for entries without one
    oid: int
    type: str
    schema: str  # "-" for none
    tag: str
    owner: str  # "" when none
    depends: list[int] = field(default_factory=list)
    line: str = ""

    def __str__(self) -> str:
        where = f"{self.schema}." if self.schema != "-" else ""
        return f"{self.type.lower()} {where}{self.tag}"


def parse_entry(line: str) -> TocEntry | None:
    match = _ENTRY.match(line)
    if not match:
        return None
    entry_id, catalog, oid, rest = match.groups()
    kind = next((k for k in KNOWN if rest.startswith(k + " ")), None)
    if kind is None:
        return None
    schema, _, rest = rest[len(kind) + 1 :].partition(" ")
    tag, _, owner = rest.rpartition(" ")
    return TocEntry(int(entry_id), int(catalog), int(oid), kind, schema, tag, owner, line=line)


def parse_toc(text: str) -> list[TocEntry]:
    """Entries of a ``pg_restore --list --verbose`` output, with their dependencies."""
    entries: list[TocEntry] = []
    for line in text.splitlines():
        if line.startswith(";"):
            depends = _DEPENDS.match(line)
            if depends and entries:
                entries[-1].depends += [int(x) for x in depends.group(1).split()]
            continue
        entry = parse_entry(line)
        if entry is not None:
            entries.append(entry)
    return entries


def use_list(entries: list[TocEntry], left_out: set[int]) -> str:
    """The ``--use-list`` file: every entry, the left-out ones commented out."""
    return "".join((";" if e.id in left_out else "") + e.line + "\n" for e in entries)


def _listed(name: str) -> str:
    """A name as ``pg_restore --list`` prints it (its ``sanitize_line``:
    line breaks become spaces, so every entry stays on one line)."""
    return name.replace("\r", " ").replace("\n", " ")


def _table_entries(entries: list[TocEntry]) -> list[str]:
    """Each TABLE entry as listed: ``<schema> <table>``, the owner cut off."""
    return [e.line.split(" TABLE ", 1)[1].removesuffix(" " + e.owner) for e in entries if e.type == "TABLE" and " TABLE " in e.line]


def absent_tables(counted: Iterable[str], entries: list[TocEntry]) -> list[str]:
    """The manifest's tables (``schema.table`` keys) without a TABLE entry.

    An entry's schema, tag and owner are only separated by spaces, which a
    name may hold too (a schema ``my schema``), and a key's ``.`` may be in
    either name: so each way of splitting the key is tried against the
    entry text itself (``<schema> <table>`` before the owner, the last
    word) instead of trusting ``parse_entry``'s split, which would call a
    sound backup incomplete."""
    listed = set(_table_entries(entries))

    def present(key: str) -> bool:
        return any(f"{_listed(key[:i])} {_listed(key[i + 1 :])}" in listed for i, c in enumerate(key) if c == ".")

    return sorted(key for key in counted if not present(key))


def tables_outside(allowed: Iterable[str], entries: list[TocEntry]) -> list[str]:
    """TABLE entries (``<schema> <table>`` as listed) that are none of
    ``allowed`` (``schema.table`` keys, split every way as in
    ``absent_tables``): what a partial backup holds beyond its scope."""
    keys = {f"{_listed(k[:i])} {_listed(k[i + 1 :])}" for k in allowed for i, c in enumerate(k) if c == "."}
    return sorted(name for name in _table_entries(entries) if name not in keys)
