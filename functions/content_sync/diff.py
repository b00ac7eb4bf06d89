"""Table comparison by key-range checksums, data-diff style.

Both sides compute ``count(*)`` and ``sum(row hash)`` per key range in SQL;
only ranges whose checksums differ are split further, and only small
differing ranges (or ranges that exist on one side only) are fetched as
``(key, row hash)`` pairs. Identical tables therefore cost one aggregate
query per side, and rows never travel to be compared.

Ranges are split by key *value*, never by text collation: one integer or
uuid key column is split arithmetically between the smallest and largest
key of both sides; any other key (composite, text, dates, ...) by quantiles
of the actual keys of the side holding more rows in the range. Text-like key
columns are ordered in "C" (byte) order on both servers. Each level of the
descent is one query per side covering every differing range: ranges are
joined from arrays (integer and uuid keys then use the primary key index),
or — many small ranges over much of the table — assigned by ``width_bucket``
in one pass. When nearly every range differs the changes are dense and the
next split goes straight to ranges of a few rows, so dense changes reach row
level in four passes over the data whatever the table size.

Source and target queries of each step run concurrently (one thread per
side). The source connection is expected to be inside one REPEATABLE READ
transaction so every query sees the same snapshot.
"""

from __future__ import annotations

import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Sequence, TypeVar

import psycopg
from psycopg import sql

from . import rowhash
from .plan import TableSpec

Key = tuple[str, ...]
Bound = Key | None  # key values as text; None = unbounded
T = TypeVar("T")

LEAF_ROWS = 32  # a differing range this small is fetched as (key, hash) pairs
FIRST_BRANCH = 32  # ranges per split while differences look sparse
MAX_BRANCH = 4096  # ... and up to this many when nearly every range differs
MIN_CHILD_ROWS = 8  # never split into ranges smaller than this (on average)
SCAN_MIN_RANGES = 256  # this many ranges covering ...
SCAN_MIN_SHARE = 0.25  # ... this share of the table: one bucketed pass, not a scan per range
_INT8_MAX = 2**63 - 1
_UUID_MAX = 2**128 - 1


@dataclass(frozen=True)
class Segment:
    """A key range [lo, hi) ; None bounds are open."""

    lo: Bound
    hi: Bound


@dataclass
class TableDiff:
    """How one table differs; hashes are the 64-bit row hashes."""

    spec: TableSpec
    source_rows: int
    target_rows: int
    new: dict[Key, int] = field(default_factory=dict)  # key -> source hash
    changed: dict[Key, tuple[int, int]] = field(default_factory=dict)  # key -> (source, target hash)
    extra: dict[Key, int] = field(default_factory=dict)  # key -> target hash
    queries: int = 0  # queries per side
    rows_fetched: int = 0  # (key, hash) pairs fetched, both sides

    @property
    def unchanged(self) -> int:
        return self.source_rows - len(self.new) - len(self.changed)

    @property
    def differs(self) -> bool:
        return bool(self.new or self.changed or self.extra)


class Sides:
    """Runs one function per side concurrently: the source in the calling
    thread, the target in a worker (each connection used by one thread)."""

    def __init__(self, source: psycopg.Connection, target: psycopg.Connection) -> None:
        self.source, self.target = source, target
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="content-sync-target")

    def both(self, on_source: Callable[[psycopg.Connection], T], on_target: Callable[[psycopg.Connection], T] | None = None) -> tuple[T, T]:
        future = self._pool.submit(on_target or on_source, self.target)
        try:
            first = on_source(self.source)
        finally:
            second_error = future.exception()  # always wait: the target connection stays ours
        if second_error is not None:
            raise second_error
        return first, future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# -- SQL builders ----------------------------------------------------------


def _bound_type(spec: TableSpec, index: int) -> str:
    """Type bounds are cast to: bigint for integer keys (a range end may be
    max + 1, beyond the column's own type), else the key column's type."""
    return "bigint" if spec.arithmetic == "int" else spec.key_types[index]


def _bound_row(spec: TableSpec, values: Sequence[sql.Composable]) -> sql.Composable:
    cols = []
    for i, value in enumerate(values):
        cast = sql.SQL("{}::{}").format(value, sql.SQL(_bound_type(spec, i)))
        cols.append(sql.Composed([sql.SQL("("), cast, sql.SQL(")"), rowhash.C_COLLATION]) if spec.key_collatable[i] else cast)
    return cols[0] if len(cols) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(cols))


def segment_rows(spec: TableSpec, segments: Sequence[Segment], select: sql.Composable) -> tuple[sql.Composable, list]:
    """``select seg, <select>`` over the rows of every segment (``seg`` is the
    segment's index in ``segments``; ``t`` is the table alias)."""
    n = len(spec.key)
    key = rowhash.key_row(spec, "t")
    parts: list[sql.Composable] = []
    params: list = []
    bounded = [(i, s) for i, s in enumerate(segments) if s.lo is not None and s.hi is not None]
    if bounded:
        names = [sql.Identifier(f"l{j}") for j in range(n)] + [sql.Identifier(f"h{j}") for j in range(n)]
        lo = _bound_row(spec, [sql.Identifier("r", f"l{j}") for j in range(n)])
        hi = _bound_row(spec, [sql.Identifier("r", f"h{j}") for j in range(n)])
        parts.append(
            sql.SQL(
                "select r.seg, {select} from unnest(%s::int[], {arrays}) as r(seg, {names}) "
                "join {table} as t on {key} >= {lo} and {key} < {hi}"
            ).format(
                select=select,
                arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in range(2 * n)),
                names=sql.SQL(", ").join(names),
                table=spec.table.ident,
                key=key,
                lo=lo,
                hi=hi,
            )
        )
        params.append([i for i, _ in bounded])
        params += [[s.lo[j] for _, s in bounded] for j in range(n)]
        params += [[s.hi[j] for _, s in bounded] for j in range(n)]
    for i, s in enumerate(segments):
        if s.lo is not None and s.hi is not None:
            continue
        conds: list[sql.Composable] = []
        if s.lo is not None:
            conds.append(sql.SQL("{} >= {}").format(key, _bound_row(spec, [sql.Placeholder()] * n)))
            params += list(s.lo)
        if s.hi is not None:
            conds.append(sql.SQL("{} < {}").format(key, _bound_row(spec, [sql.Placeholder()] * n)))
            params += list(s.hi)
        parts.append(
            sql.SQL("select {seg}::int as seg, {select} from {table} as t where {conds}").format(
                seg=sql.Literal(i),
                select=select,
                table=spec.table.ident,
                conds=sql.SQL(" and ").join(conds) if conds else sql.SQL("true"),
            )
        )
    return sql.SQL(" union all ").join(parts), params


def checksums(
    conn: psycopg.Connection, spec: TableSpec, segments: Sequence[Segment], *, scan: bool = False
) -> dict[int, tuple[int, Decimal]]:
    """segment index -> (count, sum of row hashes); empty segments absent.

    ``scan``: many small ranges covering much of the table (an arithmetic
    key). One pass over their span, each row assigned to its range by
    ``width_bucket`` (a binary search), beats one index range scan per range.
    """
    if not segments:
        return {}
    if scan and spec.arithmetic and all(s.lo is not None and s.hi is not None for s in segments):
        return _bucketed_checksums(conn, spec, segments)
    rows, params = segment_rows(spec, segments, sql.SQL("{} as h").format(rowhash.row_hash(spec)))
    query = sql.SQL("select seg, count(*), coalesce(sum(h), 0) from ({}) as x group by seg").format(rows)
    return {seg: (count, total) for seg, count, total in conn.execute(query, params)}


def _bucketed_checksums(conn: psycopg.Connection, spec: TableSpec, segments: Sequence[Segment]) -> dict[int, tuple[int, Decimal]]:
    ordered = sorted(range(len(segments)), key=lambda i: _to_int(spec, segments[i].lo[0]))
    thresholds: list[str] = []
    owner: dict[int, int] = {}  # width_bucket number -> segment index (gaps between ranges: none)
    for i in ordered:
        seg = segments[i]
        if not thresholds or thresholds[-1] != seg.lo[0]:
            thresholds.append(seg.lo[0])
        owner[len(thresholds)] = i
        thresholds.append(seg.hi[0])
    type_ = sql.SQL(_bound_type(spec, 0))
    key = sql.Identifier("t", spec.key[0])
    query = sql.SQL(
        "select width_bucket({key}, %s::{type}[]) as b, count(*), coalesce(sum({h}), 0) from {table} as t "
        "where {key} >= %s::{type} and {key} < %s::{type} group by 1"
    ).format(key=key, type=type_, h=rowhash.row_hash(spec), table=spec.table.ident)
    found = {}
    for bucket, count, total in conn.execute(query, [thresholds, thresholds[0], thresholds[-1]]):
        if bucket in owner:
            found[owner[bucket]] = (count, total)
    return found


def row_hashes(conn: psycopg.Connection, spec: TableSpec, segments: Sequence[Segment]) -> list[tuple[Key, int]]:
    """(key, row hash) of every row in the segments."""
    if not segments:
        return []
    select = sql.SQL("{}, {}").format(rowhash.key_text(spec), rowhash.row_hash(spec))
    rows, params = segment_rows(spec, segments, select)
    n = len(spec.key)
    return [(tuple(r[1 : 1 + n]), r[1 + n]) for r in conn.execute(rows, params)]


def quantiles(conn: psycopg.Connection, spec: TableSpec, segments: Sequence[Segment], parts: Sequence[int]) -> dict[int, list[Key]]:
    """Up to ``parts[i] - 1`` inner boundaries of segment i, from its keys."""
    if not segments:
        return {}
    n = len(spec.key)
    select = sql.SQL(", ").join(sql.SQL("{} as {}").format(sql.Identifier("t", k), sql.Identifier(f"k{j}")) for j, k in enumerate(spec.key))
    rows, params = segment_rows(spec, segments, select)
    order = sql.SQL(", ").join(
        sql.Composed([sql.Identifier("x", f"k{j}"), rowhash.C_COLLATION]) if spec.key_collatable[j] else sql.Identifier("x", f"k{j}")
        for j in range(n)
    )
    query = sql.SQL(
        "select y.seg, {texts} from (select x.*, row_number() over (partition by x.seg order by {order}) as rn, "
        "count(*) over (partition by x.seg) as n from ({rows}) as x) as y "
        "join unnest(%s::int[], %s::int[]) as p(seg, parts) on p.seg = y.seg "
        "where y.rn > 1 and mod(y.rn - 1, greatest(1, (y.n + p.parts - 1) / p.parts)) = 0 order by y.seg, y.rn"
    ).format(
        texts=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("y", f"k{j}")) for j in range(n)),
        order=order,
        rows=rows,
    )
    params += [list(range(len(segments))), list(parts)]
    found: dict[int, list[Key]] = {}
    for row in conn.execute(query, params):
        found.setdefault(row[0], []).append(tuple(row[1:]))
    return found


def _top(conn: psycopg.Connection, spec: TableSpec) -> tuple[int, Decimal]:
    """Whole-table checksum."""
    query = sql.SQL("select count(*), coalesce(sum({h}), 0) from {t} as t").format(h=rowhash.row_hash(spec), t=spec.table.ident)
    return conn.execute(query).fetchone()


def _key_bounds(conn: psycopg.Connection, spec: TableSpec) -> tuple[str | None, str | None]:
    """Smallest and largest key (two index lookups) of an arithmetic key."""
    k = sql.Identifier("t", spec.key[0])
    query = sql.SQL(
        "select (select {k}::text from {t} as t order by {k} limit 1), (select {k}::text from {t} as t order by {k} desc limit 1)"
    ).format(k=k, t=spec.table.ident)
    return conn.execute(query).fetchone()


# -- arithmetic ranges -----------------------------------------------------


def _to_int(spec: TableSpec, text: str) -> int:
    return int(text) if spec.arithmetic == "int" else uuid.UUID(text).int


def _to_text(spec: TableSpec, value: int) -> Bound:
    if spec.arithmetic == "int":
        return None if value > _INT8_MAX else (str(value),)
    return None if value > _UUID_MAX else (str(uuid.UUID(int=value)),)


def _span(spec: TableSpec, seg: Segment) -> tuple[int, int]:
    lo = _to_int(spec, seg.lo[0]) if seg.lo is not None else 0
    hi = _to_int(spec, seg.hi[0]) if seg.hi is not None else (_INT8_MAX + 1 if spec.arithmetic == "int" else _UUID_MAX + 1)
    return lo, hi


def _split_arithmetic(spec: TableSpec, seg: Segment, parts: int) -> list[Segment]:
    lo, hi = _span(spec, seg)
    parts = max(1, min(parts, hi - lo))
    step = math.ceil((hi - lo) / parts)
    cuts = list(range(lo + step, hi, step))
    bounds = [seg.lo] + [_to_text(spec, c) for c in cuts] + [seg.hi]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


# -- the descent -----------------------------------------------------------


def diff_table(sides: Sides, spec: TableSpec) -> TableDiff:
    """Compare one content table between source and target."""
    if spec.arithmetic:
        pending, sc, tc, queries = _first_level(sides, spec)
    else:
        (sc, ss), (tc, ts) = sides.both(lambda c: _top(c, spec))
        pending, queries = ([] if (sc, ss) == (tc, ts) else [(Segment(None, None), sc, tc)]), 1
    result = TableDiff(spec, sc, tc, queries=queries)
    branch = MAX_BRANCH if spec.arithmetic and len(pending) >= 0.9 * FIRST_BRANCH else FIRST_BRANCH
    while pending:
        leaves, splits = [], []
        for item in pending:
            seg, a, b = item
            small = a == 0 or b == 0 or max(a, b) <= LEAF_ROWS or not _splittable(spec, seg)
            (leaves if small else splits).append(item)
        _fetch_leaves(sides, spec, leaves, result)
        if not splits:
            break
        children = _children(sides, spec, splits, branch, result)
        covered = sum(max(a, b) for _, a, b in splits)
        scan = len(children) > SCAN_MIN_RANGES and covered >= SCAN_MIN_SHARE * max(sc, tc)
        pending = _differing(sides, spec, children, scan)
        result.queries += 1
        # nearly every range differs: changes are dense, go straight to small ranges
        dense = len(pending) >= 0.9 * len(children)
        branch = MAX_BRANCH if dense else FIRST_BRANCH
    return result


def _first_level(sides: Sides, spec: TableSpec) -> tuple[list[tuple[Segment, int, int]], int, int, int]:
    """Arithmetic keys: the key span of both sides (index lookups), then
    FIRST_BRANCH range checksums in one pass per side — identical tables
    stop here, differing ones already know where to look."""
    (smin, smax), (tmin, tmax) = sides.both(lambda c: _key_bounds(c, spec))
    lows = [_to_int(spec, v) for v in (smin, tmin) if v is not None]
    highs = [_to_int(spec, v) for v in (smax, tmax) if v is not None]
    if not lows:
        return [], 0, 0, 1
    top = Segment(_to_text(spec, min(lows)), _to_text(spec, max(highs) + 1))
    children = _split_arithmetic(spec, top, FIRST_BRANCH)
    src_sums, tgt_sums = sides.both(lambda c: checksums(c, spec, children, scan=True))
    sc = sum(n for n, _ in src_sums.values())
    tc = sum(n for n, _ in tgt_sums.values())
    pending = [
        (seg, src_sums.get(i, (0, 0))[0], tgt_sums.get(i, (0, 0))[0])
        for i, seg in enumerate(children)
        if src_sums.get(i, (0, 0)) != tgt_sums.get(i, (0, 0))
    ]
    return pending, sc, tc, 2


def _differing(sides: Sides, spec: TableSpec, segments: list[Segment], scan: bool) -> list[tuple[Segment, int, int]]:
    """The segments whose checksums differ, with their row counts per side."""
    src_sums, tgt_sums = sides.both(lambda c: checksums(c, spec, segments, scan=scan))
    out = []
    for i, seg in enumerate(segments):
        a, b = src_sums.get(i, (0, 0)), tgt_sums.get(i, (0, 0))
        if a != b:
            out.append((seg, a[0], b[0]))
    return out


def _splittable(spec: TableSpec, seg: Segment) -> bool:
    if spec.arithmetic:
        lo, hi = _span(spec, seg)
        return hi - lo > 1
    return True


def _parts(rows: int, branch: int) -> int:
    return max(2, min(branch, rows // MIN_CHILD_ROWS))


def _children(sides: Sides, spec: TableSpec, splits: list[tuple[Segment, int, int]], branch: int, result: TableDiff) -> list[Segment]:
    if spec.arithmetic:
        out: list[Segment] = []
        for seg, a, b in splits:
            out += _split_arithmetic(spec, seg, _parts(max(a, b), branch))
        return out
    # quantiles of the side holding more rows of each range
    by_src = [(s, _parts(a, branch)) for s, a, b in splits if a >= b]
    by_tgt = [(s, _parts(b, branch)) for s, a, b in splits if a < b]
    q_src, q_tgt = sides.both(
        lambda c: quantiles(c, spec, [s for s, _ in by_src], [p for _, p in by_src]),
        lambda c: quantiles(c, spec, [s for s, _ in by_tgt], [p for _, p in by_tgt]),
    )
    result.queries += 1
    out = []
    for group, found in ((by_src, q_src), (by_tgt, q_tgt)):
        for i, (seg, _) in enumerate(group):
            bounds = [seg.lo, *found.get(i, []), seg.hi]
            out += [Segment(bounds[j], bounds[j + 1]) for j in range(len(bounds) - 1)]
    return out


def _fetch_leaves(sides: Sides, spec: TableSpec, leaves: list[tuple[Segment, int, int]], result: TableDiff) -> None:
    if not leaves:
        return
    on_src = [s for s, a, _ in leaves if a > 0]
    on_tgt = [s for s, _, b in leaves if b > 0]
    src_rows, tgt_rows = sides.both(lambda c: row_hashes(c, spec, on_src), lambda c: row_hashes(c, spec, on_tgt))
    result.queries += 1
    result.rows_fetched += len(src_rows) + len(tgt_rows)
    target = dict(tgt_rows)
    for key, h in src_rows:
        other = target.pop(key, None)
        if other is None:
            result.new[key] = h
        elif other != h:
            result.changed[key] = (h, other)
    result.extra.update(target)
