"""Schema diff of two databases: every described object, side by side.

``schema_diff(conn_a, conn_b, schemas)`` → ``SchemaDiff`` listing each
object present on one side only or described differently (with the first
differing attribute named), plus the kinds that were *not* compared and how
many such objects each side has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import psycopg

from safesync.shared.rowdiff import Sides

from .catalog import ObjectMap, count_not_compared, describe_schema


@dataclass(frozen=True)
class Difference:
    kind: str
    name: str
    change: str  # "only in A" | "only in B" | "differs"
    attribute: str | None = None
    a: Any = None
    b: Any = None

    def row(self, a_name: str, b_name: str) -> dict[str, Any]:
        change = self.change.replace("A", a_name).replace("B", b_name)
        row: dict[str, Any] = {"kind": self.kind, "object": self.name, "change": change}
        if self.attribute:
            row.update({"attribute": self.attribute, a_name: _short(self.a), b_name: _short(self.b)})
        return row


@dataclass
class SchemaDiff:
    differences: list[Difference] = field(default_factory=list)
    compared: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (count A, count B)
    not_compared: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not self.differences

    def rows(self, a_name: str, b_name: str) -> list[dict[str, Any]]:
        return [d.row(a_name, b_name) for d in self.differences]

    def not_compared_rows(self, a_name: str, b_name: str) -> list[dict[str, Any]]:
        return [{"kind": k, a_name: a, b_name: b, "compared": "no"} for k, (a, b) in self.not_compared.items()]


def _short(value: Any, limit: int = 200) -> Any:
    text = value if isinstance(value, str) else repr(value) if value is not None else None
    if text is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def compare_maps(a: ObjectMap, b: ObjectMap) -> list[Difference]:
    """Differences between two descriptions, in kind then name order."""
    out: list[Difference] = []
    for kind in a.keys() | b.keys():
        left, right = a.get(kind, {}), b.get(kind, {})
        for name in sorted(left.keys() | right.keys()):
            if name not in right:
                out.append(Difference(kind, name, "only in A"))
            elif name not in left:
                out.append(Difference(kind, name, "only in B"))
            elif left[name] != right[name]:
                out.append(_first_difference(kind, name, left[name], right[name]))
    order = list(a.keys())
    out.sort(key=lambda d: (order.index(d.kind) if d.kind in order else len(order), d.name))
    return out


def _first_difference(kind: str, name: str, x: Any, y: Any) -> Difference:
    if isinstance(x, dict) and isinstance(y, dict):
        for attr in sorted(x.keys() | y.keys()):
            if x.get(attr) != y.get(attr):
                return Difference(kind, name, "differs", attr, x.get(attr), y.get(attr))
    return Difference(kind, name, "differs", "value", x, y)


def schema_diff(
    conn_a: psycopg.Connection,
    conn_b: psycopg.Connection,
    schemas: Sequence[str],
) -> SchemaDiff:
    """Compare the objects of ``schemas`` in two databases (both sides read
    at the same time: each connection is used by one thread)."""

    def read(conn: psycopg.Connection) -> tuple[ObjectMap, dict[str, int]]:
        return describe_schema(conn, schemas), count_not_compared(conn, schemas)

    sides = Sides(conn_a, conn_b)  # the one way both databases run at once (shared.rowdiff)
    try:
        (a, na), (b, nb) = sides.both(read)
    finally:
        sides.close()
    low, high = sorted(conn.info.server_version // 10000 for conn in (conn_a, conn_b))
    moved = {m.what: (m.drop(a), m.drop(b)) for m in ACROSS_MAJORS if low < m.since <= high}
    diff = SchemaDiff(differences=compare_maps(a, b))
    diff.compared = {k: (len(a.get(k, {})), len(b.get(k, {}))) for k in a}
    diff.not_compared = {k: (na[k], nb[k]) for k in na} | moved
    return diff


def _drop_not_null_rows(side: ObjectMap) -> int:
    """PostgreSQL 17 keeps a domain's NOT NULL, and 18 a column's, as a row
    of pg_constraint (``users_email_not_null``); older servers only as a
    flag, which is still compared (a column's or domain's ``not_null``)."""
    constraints = side.get("constraints", {})
    names = [name for name, d in constraints.items() if isinstance(d, dict) and d.get("type") == "n"]
    for name in names:
        del constraints[name]
    return len(names)


def _drop_maintain(side: ObjectMap) -> int:
    """PostgreSQL 17's MAINTAIN privilege, which every table owner holds
    there (``acldefault``) and no older server knows."""
    dropped = 0
    for objects in side.values():
        for description in objects.values():
            grants = description.get("grants") if isinstance(description, dict) else None
            if isinstance(grants, list):
                kept = [g for g in grants if not str(g).endswith((":MAINTAIN", ":MAINTAIN*"))]
                dropped += len(grants) - len(kept)
                description["grants"] = kept
    return dropped


@dataclass(frozen=True)
class _Moved:
    """What a newer major describes that an older one cannot: between majors
    on both sides of ``since`` it is taken out of both descriptions (and
    listed as not compared, with how many each side had) — else every such
    object is a difference between two equal databases."""

    since: int
    what: str
    drop: Callable[[ObjectMap], int]


ACROSS_MAJORS = (
    _Moved(17, "NOT NULL constraints as named objects (major versions differ: nullability is compared per column and domain)", _drop_not_null_rows),
    _Moved(17, "the MAINTAIN privilege (PostgreSQL 17+; major versions differ)", _drop_maintain),
)
