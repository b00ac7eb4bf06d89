"""The one row-comparison engine: which rows of a table differ between two
databases — content sync's compare, validate's data diff, the staging-clone
proof and migrate's rehearsal all ask it. Tables are described by
``shared.rowhash.TableShape`` and rows hashed by ``shared.rowhash.row_hash``.

Tables with a key: comparison by key-range checksums, data-diff style
(``diff_table``).

Both sides compute ``count(*)`` and ``sum(row hash)`` per key range in SQL;
only ranges whose checksums differ are split further, and only small
differing ranges (or ranges that exist on one side only) are fetched as
``(key, row hash)`` pairs. Identical tables therefore cost one aggregate
pass per side, and rows never travel to be compared.

Ranges are split by key *value*, never by text collation: one integer or
uuid key column is split arithmetically between the smallest and largest
key of both sides; any other key (composite, text, dates, ...) by quantiles
of the actual keys of the side holding more rows in the range. Text-like key
columns are ordered in "C" (byte) order on both servers. Each level of the
descent is one query per side covering every differing range (ranges are
joined from arrays, so integer and uuid keys use the primary key index).

Integer and uuid keys start with a coarse grid: ranges of at least
``COARSE_ROWS`` rows, at most ``COARSE_BUCKETS`` of them, checksummed in
one scan (bucket = arithmetic on the key, grouped in a hash table) and
returned as one packed ``bytea`` of 16 bytes per range (row count, hash sum
mod 2^64) — identical tables cost under a byte per row on the wire, and no
more than 256 kB per side whatever their size. When the caller expects
changes (a sync's compare) and a sample of ``FINE_SAMPLE`` ranges shows
them scattered, the grid also carries, per range, one check byte for each
of its ``FINE_PARTS`` fine ranges (8 more bytes, grouped in the same pass):
a small differing range fetches just the rows of its fine ranges whose
checks differ, so scattered changes (1 % of the rows: 64 % of the coarse
ranges differ) hash every row once instead of again for a second grid. A
check byte is a pointer, never a proof: the fetched rows must account for
the range's whole difference in count and hash sum, else the range's other
rows are fetched too (``_resolve_checked``). Other differing ranges (no
fine checks, or ranges of many rows) are split into ranges of about
``MIN_CHILD_ROWS`` rows, checksummed through the index — only their rows
are hashed again — and the differing small ones fetched. At most ``BATCH``
coarse ranges are resolved at a time, so the compare process holds one
batch, whatever the table's size and however dense the changes. Each
side's total (count, exact hash sum) comes out of the first pass (the
ledger checks itself against it).

The grouping runs in a ``MATERIALIZED`` CTE: the planner estimates one
group per row for a bucket expression, and when an outer aggregate asks for
ordered input (PostgreSQL 16 pre-sorts aggregate input) it would sort every
wide row of the table on disk instead of hashing a few thousand groups in
memory. The transaction's settings (``aggregate_settings``) keep JIT off and
``work_mem`` sane for these scans.

Source and target queries of each step run concurrently (``Sides``: one
thread per side, the one way both sides run at once). The source connection
is expected to be inside one REPEATABLE READ transaction so every query sees
the same snapshot. ``limit`` stops the descent once that many differing rows
are known (a report naming the first few needs no more).

A caller that will need every target row's hash anyway (content sync
seeding its ledger on a first sync) may hash them once into a relation
(``Prehashed``): the target's first pass then sums those.

Tables without a key (no primary key, or keys that differ between the
sides; materialized views) cannot be split into key ranges: the fallback
``multiset_diff`` compares (count, sum of row hashes) per side, and when
they differ groups the row hashes into buckets by the hash itself (so both
sides bucket equal rows alike without agreeing on ranges) and fetches the
rows of the first few differing buckets — duplicates count.
"""

from __future__ import annotations

import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Generic, Iterator, Sequence, TypeVar

import psycopg
from psycopg import sql

from . import pgarray, rowhash
from .rowhash import TableShape

Key = tuple[str, ...]
Bound = Key | None  # key values as text; None = unbounded
T = TypeVar("T")
S = TypeVar("S", bound=TableShape)

LEAF_ROWS = 32  # a differing range this small is fetched as (key, hash) pairs
FIRST_BRANCH = 32  # ranges per split while differences look sparse
MAX_BRANCH = 4096  # ... and up to this many when nearly every range differs
MIN_CHILD_ROWS = 8  # never split into ranges smaller than this (on average)
KEYS_PER_QUERY = 10_000  # keys sent inline per lookup query
COARSE_ROWS = 64  # rows per range of the first grid, at least: 16 bytes per range per side
COARSE_BUCKETS = 16_384  # ... and at most this many ranges (256 kB per side, whatever the size)
FINE_PARTS = 8  # fine ranges per coarse range whose check bytes ride on the first pass (one bigint)
FINE_SAMPLE = 64  # coarse ranges sampled first, on tables of at least this many ranges ...
FINE_SHARE = 0.25  # ... of which at least this share must differ for the first pass to carry fine checks
BATCH = 2048  # isolated differing ranges descended at a time (the process holds one batch)
RUN_RANGES = 8  # differing coarse ranges (with at most GAP equal ones between) that get a fine grid
GAP = 4
# fine ranges of one fine-grid query: 1 MB per side, a hash aggregate of at
# most this many groups (~13 MB: within WORK_MEM, no temp files). Scattered
# changes (1 % of a 1M-row table: 64 % of the coarse ranges differ) take one
# such query per ~0.5M keys instead of eight of 16,384: 16 % faster (#18).
CHUNK_BUCKETS = 65_536
WORK_MEM = "32MB"  # at least this much work_mem for our hash aggregates (raised, never lowered)
_PACKED = struct.Struct(">iiq")  # one grid range: bucket, rows, its hash sum mod 2^64
_PACKED_FINE = struct.Struct(">iiqq")  # ... and its fine ranges' check bytes
_PACKED_ROW = struct.Struct(">qq")  # one row of an integer key: key, row hash
_PACKED_UUID_ROW = struct.Struct(">QQq")  # one row of a uuid key: its high and low 64 bits, row hash
_INT8_MAX = 2**63 - 1
_UUID_MAX = 2**128 - 1


@dataclass(frozen=True)
class Segment:
    """A key range [lo, hi) ; None bounds are open."""

    lo: Bound
    hi: Bound


@dataclass(frozen=True)
class Prehashed:
    """A relation of a table's key columns (same names) and each row's hash
    (in the column named ``hash``), made in the snapshot a compare reads (a
    temporary table, say): the first pass on that side sums these instead
    of hashing every row again — for a caller that needs every row's hash
    anyway (seeding a ledger)."""

    relation: sql.Composable
    hash: str


def hashed_rows(spec: TableShape, hashed: Prehashed | None = None) -> tuple[sql.Composable, sql.Composable]:
    """The ``FROM`` item (aliased ``t``) and row-hash expression of a
    table's rows: the table hashed as it is read, or ``hashed``'s hashes."""
    if hashed is None:
        return spec.from_item(), rowhash.row_hash(spec)
    return sql.SQL("{} as t").format(hashed.relation), sql.Identifier("t", hashed.hash)


@dataclass
class TableDiff(Generic[S]):
    """How one table differs; hashes are the 64-bit row hashes. With a
    ``limit``, ``complete`` says whether every difference was found."""

    spec: S
    source_rows: int
    target_rows: int
    new: dict[Key, int] = field(default_factory=dict)  # key -> source hash
    changed: dict[Key, tuple[int, int]] = field(default_factory=dict)  # key -> (source, target hash)
    extra: dict[Key, int] = field(default_factory=dict)  # key -> target hash
    source_sum: int = 0  # sum of every row hash, per side (exact)
    target_sum: int = 0
    queries: int = 0  # queries per side
    rows_fetched: int = 0  # (key, hash) pairs fetched, both sides
    complete: bool = True
    target_hashes: Prehashed | None = None  # what the target's first pass read instead of the table

    @property
    def unchanged(self) -> int:
        return self.source_rows - len(self.new) - len(self.changed)

    @property
    def differs(self) -> bool:
        return bool(self.new or self.changed or self.extra)

    def enough(self, limit: int | None) -> bool:
        """True once ``limit`` differences are known."""
        return limit is not None and len(self.new) + len(self.changed) + len(self.extra) >= limit


class Sides:
    """Runs one function per side concurrently: the source in the calling
    thread, the target in a worker (each connection used by one thread)."""

    def __init__(self, source: psycopg.Connection, target: psycopg.Connection) -> None:
        self.source, self.target = source, target
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rowdiff-target")

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


def _bound_type(spec: TableShape, index: int) -> str:
    """Type bounds are cast to: bigint for integer keys (a range end may be
    max + 1, beyond the column's own type), else the key column's type."""
    return "bigint" if spec.arithmetic == "int" else spec.key_types[index]


def _bound_row(spec: TableShape, values: Sequence[sql.Composable]) -> sql.Composable:
    cols = []
    for i, value in enumerate(values):
        cast = sql.SQL("{}::{}").format(value, sql.SQL(_bound_type(spec, i)))
        cols.append(sql.Composed([sql.SQL("("), cast, sql.SQL(")"), rowhash.C_COLLATION]) if spec.key_collatable[i] else cast)
    return cols[0] if len(cols) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(cols))


def segment_rows(spec: TableShape, segments: Sequence[Segment], select: sql.Composable) -> tuple[sql.Composable, list]:
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
                "join {table} on {key} >= {lo} and {key} < {hi}"
            ).format(
                select=select,
                arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in range(2 * n)),
                names=sql.SQL(", ").join(names),
                table=spec.from_item(),
                key=key,
                lo=lo,
                hi=hi,
            )
        )
        params.append(pgarray.array([i for i, _ in bounded]))
        params += pgarray.columns([s.lo for _, s in bounded], n)
        params += pgarray.columns([s.hi for _, s in bounded], n)
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
            sql.SQL("select {seg}::int as seg, {select} from {table} where {conds}").format(
                seg=sql.Literal(i),
                select=select,
                table=spec.from_item(),
                conds=sql.SQL(" and ").join(conds) if conds else sql.SQL("true"),
            )
        )
    return sql.SQL(" union all ").join(parts), params


def checksums(conn: psycopg.Connection, spec: TableShape, segments: Sequence[Segment]) -> dict[int, tuple[int, Decimal]]:
    """segment index -> (count, sum of row hashes); empty segments absent."""
    if not segments:
        return {}
    rows, params = segment_rows(spec, segments, sql.SQL("{} as h").format(rowhash.row_hash(spec)))
    query = sql.SQL("select seg, count(*), coalesce(sum(h), 0) from ({}) as x group by seg").format(rows)
    with _hash_aggregate(conn):
        return {seg: (count, total) for seg, count, total in conn.execute(query, params)}


def tune(conn: psycopg.Connection) -> None:
    """Settings for the rest of the caller's transaction: no JIT (stock
    servers compile our wide hash expressions for seconds and gain nothing)
    and enough ``work_mem`` for range checksums to group in memory — raised
    to ``WORK_MEM`` where the server's is lower, never lowered."""
    conn.execute(
        "select set_config('jit', 'off', true), "
        "case when pg_size_bytes(current_setting('work_mem')) < pg_size_bytes(%s) then set_config('work_mem', %s, true) end",
        [WORK_MEM, WORK_MEM],
    )


@contextmanager
def _hash_aggregate(conn: psycopg.Connection) -> Iterator[None]:
    """The planner cannot know a bucket expression has few distinct values
    and would sort every (wide) row first; group in a hash table instead.
    The caller's setting is put back afterwards."""
    previous = conn.execute("select current_setting('enable_sort'), set_config('enable_sort', 'off', true)").fetchone()[0]
    yield  # on an error the transaction is aborted and its rollback puts the setting back: no cleanup query to mask it
    conn.execute("select set_config('enable_sort', %s, true)", [previous])


@dataclass(frozen=True)
class Grid:
    """One grid pass of one side: ``packed`` holds the non-empty buckets in
    order (bucket, row count, fingerprint: 16 bytes; with ``parts`` > 1
    eight more, the fine checks); the side's total row count and exact
    hash sum."""

    packed: bytes
    rows: int
    total: int
    parts: int = 1

    @property
    def buckets(self) -> dict[int, tuple[int, int, int]]:
        """bucket -> (rows, fingerprint, fine checks; 0 without parts)."""
        if self.parts == 1:
            return {b: (n, fp, 0) for b, n, fp in _PACKED.iter_unpack(self.packed)}
        return {b: (n, fp, checks) for b, n, fp, checks in _PACKED_FINE.iter_unpack(self.packed)}


def _fingerprint(total: sql.Composable) -> sql.Composable:
    """A range's hash sum mod 2^64 (as a signed bigint): the sums of two
    sides' ranges then subtract, so the hashes of the rows fetched from a
    range tell whether they account for all of its difference."""
    return sql.SQL("(({s} %% {m} + {m}) %% {m} - {h})::bigint").format(s=total, m=sql.Literal(1 << 64), h=sql.Literal(1 << 63))


def _fine_check(total: sql.Composable, rows: sql.Composable) -> sql.Composable:
    """One byte (1..255; 0 is an empty fine range) standing for a fine
    range's (count, hash sum): only which fine ranges to fetch rides on it,
    never whether a range is equal (see ``_resolve_checked``)."""
    return sql.SQL("(1 + (hash_numeric_extended({s}, {n}) & 255) %% 255)").format(s=total, n=rows)


def grid(
    conn: psycopg.Connection,
    spec: TableShape,
    lo: int,
    hi: int,
    step: int,
    only: Sequence[Segment] | None = None,
    hashed: Prehashed | None = None,
    parts: int = 1,
) -> Grid:
    """Checksums of the ranges [lo + i*step, lo + (i+1)*step) covering
    [lo, hi) of an arithmetic key, in one pass, as one packed ``bytea``.
    ``only`` (integer keys): hash just the rows of these equal-width ranges
    (the others of the span are read, not hashed). ``hashed``: sum these
    row hashes instead of hashing the table's rows. ``parts`` (dividing
    ``step``): each range also carries one check byte per fine range of
    ``step / parts`` keys, grouped in the same pass."""
    key = sql.Identifier("t", spec.key[0])
    rows, h = hashed_rows(spec, hashed)
    if spec.arithmetic == "int" and hi - lo <= _INT8_MAX:
        bucket, params = sql.SQL("(({} - %s::bigint) / %s::bigint)").format(key), [lo, step // parts]
    else:  # uuid (or a span beyond bigint): binary search over the range starts (1-based, hence - 1), sent in binary
        width = step // parts
        starts = [lo + i * width for i in range(_ceil_div(hi - lo, width))]
        bucket = sql.SQL("width_bucket({}, %b::{}[]) - 1").format(key, sql.SQL(_bound_type(spec, 0)))
        params = [[uuid.UUID(int=v) for v in starts] if spec.arithmetic == "uuid" else starts]
    bounds = [_to_text(spec, lo), _to_text(spec, hi)]
    conds = [sql.SQL("{} {} %s::{}").format(key, sql.SQL(op), sql.SQL(_bound_type(spec, 0))) for op, b in zip((">=", "<"), bounds) if b is not None]
    params += [b[0] for b in bounds if b is not None]
    if only:
        first, width = int(only[0].lo[0]), _span(spec, only[0])[1] - int(only[0].lo[0])
        conds.append(sql.SQL("({} - %s::bigint) / %s::bigint = any(%s::bigint[])").format(key))
        params += [first, width, pgarray.array([(int(s.lo[0]) - first) // width for s in only])]
    ranges = sql.SQL("select f.b as b, f.n as n, f.s as s, 0::bigint as c from f")
    if parts > 1:  # fine ranges grouped first, then folded into their range with one check byte each
        ranges = sql.SQL(
            "select f.b / {p} as b, sum(f.n)::bigint as n, sum(f.s) as s, bit_or({check} << (8 * (f.b %% {p}))::int) as c from f group by 1"
        ).format(p=sql.Literal(parts), check=_fine_check(sql.SQL("f.s"), sql.SQL("f.n")))
    extra = sql.SQL(" || int8send(g.c)") if parts > 1 else sql.SQL("")
    query = sql.SQL(
        "with f as materialized (select {b} as b, count(*) as n, sum({h}) as s from {t} where {conds} group by 1), g as ({ranges}) "
        "select coalesce(string_agg(int4send(g.b::int) || int4send(g.n::int) || int8send({fp}){extra}, ''::bytea order by g.b), ''::bytea), "
        "coalesce(sum(g.n), 0)::bigint, coalesce(sum(g.s), 0) from g"
    ).format(
        b=bucket, h=h, t=rows, conds=sql.SQL(" and ").join(conds) if conds else sql.SQL("true"), ranges=ranges,
        fp=_fingerprint(sql.SQL("g.s")), extra=extra,
    )
    with _hash_aggregate(conn):
        packed, rows, total = conn.execute(query, params, binary=True).fetchone()
    return Grid(bytes(packed), rows, int(total), parts)


def row_hashes(conn: psycopg.Connection, spec: TableShape, segments: Sequence[Segment]) -> list[tuple[Key, int]]:
    """(key, row hash) of every row in the segments."""
    if not segments:
        return []
    if spec.arithmetic:
        text = _row_key_text(spec)
        return [(text(k), h) for k, h in _arithmetic_pairs(conn, spec, segments)]
    select = sql.SQL("{}, {}").format(rowhash.key_text(spec), rowhash.row_hash(spec))
    rows, params = segment_rows(spec, segments, select)
    n = len(spec.key)
    return [(tuple(r[1 : 1 + n]), r[1 + n]) for r in conn.execute(rows, params, binary=True).fetchall()]


def _arithmetic_pairs(conn: psycopg.Connection, spec: TableShape, segments: Sequence[Segment]) -> list[tuple[int, int]]:
    """(key as an integer, row hash) of every row in the segments of an
    integer or uuid key, packed in one ``bytea`` (16 or 24 bytes a row, no
    per-row message): less than half the bytes of a row each, decoded at C
    speed, and no text keys to parse back for the range arithmetic (#18)."""
    if not segments:
        return []
    key = sql.Identifier("t", spec.key[0])
    send = sql.SQL("int8send({}::bigint)" if spec.arithmetic == "int" else "uuid_send({})").format(key)
    rows, params = segment_rows(spec, segments, sql.SQL("{} || int8send({}) as p").format(send, rowhash.row_hash(spec)))
    query = sql.SQL("select coalesce(string_agg(x.p, ''::bytea), ''::bytea) from ({}) as x").format(rows)
    packed = conn.execute(query, params, binary=True).fetchone()[0]
    if spec.arithmetic == "int":
        return list(_PACKED_ROW.iter_unpack(packed))
    return [(high << 64 | low, h) for high, low, h in _PACKED_UUID_ROW.iter_unpack(packed)]


def _row_key_text(spec: TableShape) -> Callable[[int], Key]:
    """An integer or uuid key's value as the key's text form (what PostgreSQL prints)."""
    if spec.arithmetic == "int":
        return lambda k: (str(k),)
    return lambda k: (str(uuid.UUID(int=k)),)


def quantiles(conn: psycopg.Connection, spec: TableShape, segments: Sequence[Segment], parts: Sequence[int]) -> dict[int, list[Key]]:
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
    params += [pgarray.array(list(range(len(segments)))), pgarray.array(list(parts))]
    found: dict[int, list[Key]] = {}
    for row in conn.execute(query, params):
        found.setdefault(row[0], []).append(tuple(row[1:]))
    return found


def hashes_by_key(conn: psycopg.Connection, spec: TableShape, keys: Sequence[Key]) -> dict[Key, int]:
    """Row hash of each of ``keys`` present (one join, chunked)."""
    out: dict[Key, int] = {}
    n = len(spec.key)
    for i in range(0, len(keys), KEYS_PER_QUERY):
        relation, params = rowhash.keys_relation(spec, keys[i : i + KEYS_PER_QUERY])
        query = sql.SQL("select {}, {} from {} join {} on {}").format(
            rowhash.key_text(spec), rowhash.row_hash(spec), spec.from_item(), relation, rowhash.keys_match(spec)
        )
        out.update((tuple(r[:n]), r[n]) for r in conn.execute(query, params, binary=True).fetchall())
    return out


def _top(conn: psycopg.Connection, spec: TableShape, hashed: Prehashed | None = None) -> tuple[int, Decimal]:
    """Whole-table checksum (of the ``hashed`` row hashes, if given)."""
    rows, h = hashed_rows(spec, hashed)
    query = sql.SQL("select count(*), coalesce(sum({h}), 0) from {t}").format(h=h, t=rows)
    return conn.execute(query).fetchone()


def _key_bounds(conn: psycopg.Connection, spec: TableShape) -> tuple[str | None, str | None, int]:
    """Smallest and largest key (two index lookups) of an arithmetic key, and
    the catalog's row estimate (0 when the table was never analysed)."""
    k = sql.Identifier("t", spec.key[0])
    query = sql.SQL(
        "select (select {k}::text from {t} as t order by {k} limit 1), (select {k}::text from {t} as t order by {k} desc limit 1), "
        "(select greatest(reltuples, 0)::bigint from pg_class where oid = %s::regclass)"
    ).format(k=k, t=spec.table.ident)
    return conn.execute(query, [spec.table.ident.as_string(conn)]).fetchone()


# -- arithmetic ranges -----------------------------------------------------


def _to_int(spec: TableShape, text: str) -> int:
    return int(text) if spec.arithmetic == "int" else uuid.UUID(text).int


def _to_text(spec: TableShape, value: int) -> Bound:
    if spec.arithmetic == "int":
        return None if value > _INT8_MAX else (str(value),)
    return None if value > _UUID_MAX else (str(uuid.UUID(int=value)),)


def _ceil_div(a: int, b: int) -> int:
    """⌈a / b⌉ in integers. A uuid key span is about 2^128: ``math.ceil(a / b)``
    goes through a float (53 bits) and could come out short, so the ranges
    ended before the span did and the table's largest keys were never
    descended into — a differing last row was missed and the table called
    identical."""
    return -(-a // b)


def _span(spec: TableShape, seg: Segment) -> tuple[int, int]:
    lo = _to_int(spec, seg.lo[0]) if seg.lo is not None else 0
    hi = _to_int(spec, seg.hi[0]) if seg.hi is not None else (_INT8_MAX + 1 if spec.arithmetic == "int" else _UUID_MAX + 1)
    return lo, hi


def _split_arithmetic(spec: TableShape, seg: Segment, parts: int) -> list[Segment]:
    lo, hi = _span(spec, seg)
    parts = max(1, min(parts, hi - lo))
    step = _ceil_div(hi - lo, parts)
    cuts = list(range(lo + step, hi, step))
    bounds = [seg.lo] + [_to_text(spec, c) for c in cuts] + [seg.hi]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


# -- the descent -----------------------------------------------------------


def diff_table(
    sides: Sides, spec: S, limit: int | None = None, *, target_hashes: Prehashed | None = None, expect_changes: bool = False
) -> TableDiff[S]:
    """Compare one keyed table between source and target; with ``limit``,
    stop once at least that many differing rows are known (``complete``
    False when some ranges were left unexamined). ``target_hashes``: the
    target's rows already hashed, for the first pass on that side.
    ``expect_changes`` (a sync's compare, not a proof of equality): sample
    the table first, and where changes look scattered let the first pass
    carry fine checks (about a third dearer) so the rows are hashed once, not
    twice (a 1 %-changed 1M-row compare in about 0.75× the time)."""
    if spec.arithmetic:
        return _arithmetic(sides, spec, limit, target_hashes, expect_changes)
    (sc, ss), (tc, ts) = sides.both(lambda c: _top(c, spec), lambda c: _top(c, spec, target_hashes))
    result = TableDiff(spec, sc, tc, source_sum=int(ss), target_sum=int(ts), queries=1, target_hashes=target_hashes)
    _descend(sides, spec, [] if (sc, ss) == (tc, ts) else [(Segment(None, None), sc, tc)], result, limit)
    return result


Pending = list[tuple[Segment, int, int]]  # differing ranges with their row counts per side


def _descend(sides: Sides, spec: TableShape, pending: Pending, result: TableDiff, limit: int | None = None) -> None:
    """Split differing ranges until they are small, then fetch their rows'
    (key, hash) pairs into ``result``."""
    branch = FIRST_BRANCH
    while pending:
        if result.enough(limit):
            result.complete = False
            return
        leaves, splits = [], []
        for item in pending:
            seg, a, b = item
            small = a == 0 or b == 0 or max(a, b) <= LEAF_ROWS or not _splittable(spec, seg)
            (leaves if small else splits).append(item)
        _fetch_leaves(sides, spec, leaves, result)
        if not splits:
            break
        children = _children(sides, spec, splits, branch, result)
        pending = _differing(sides, spec, children)
        result.queries += 1
        # nearly every range differs: changes are dense, go straight to small ranges
        branch = MAX_BRANCH if len(pending) >= 0.9 * len(children) else FIRST_BRANCH


Differ = list[tuple[int, tuple[int, int, int], tuple[int, int, int]]]  # bucket, (rows, fingerprint, fine checks) per side
_EMPTY = (0, -(1 << 63), 0)  # a bucket one side lacks: no rows, the fingerprint of an empty sum


def _grid_level(
    sides: Sides,
    spec: TableShape,
    lo: int,
    hi: int,
    step: int,
    only: Sequence[Segment] | None = None,
    target_hashes: Prehashed | None = None,
    parts: int = 1,
) -> tuple[Differ, Grid, Grid]:
    """The differing buckets of one grid pass, and each side's grid."""
    src, tgt = sides.both(
        lambda c: grid(c, spec, lo, hi, step, only, parts=parts), lambda c: grid(c, spec, lo, hi, step, only, target_hashes, parts)
    )
    if src.packed == tgt.packed:  # the usual case: nothing to unpack
        return [], src, tgt
    ours, theirs = src.buckets, tgt.buckets
    differ = [(i, ours.get(i, _EMPTY), theirs.get(i, _EMPTY)) for i in sorted(set(ours) | set(theirs))]
    return [d for d in differ if d[1] != d[2]], src, tgt


def _segment(spec: TableShape, start: int, width: int, hi: int) -> Segment:
    """The key range [start, start + width) of an arithmetic key, cut at ``hi``."""
    return Segment(_to_text(spec, start), _to_text(spec, min(start + width, hi)))


def _pending(spec: TableShape, differ: Differ, lo: int, hi: int, step: int) -> Pending:
    return [(_segment(spec, lo + i * step, step, hi), a[0], b[0]) for i, a, b in differ]


def _coarse_buckets(rows: int) -> int:
    return max(1, min(COARSE_BUCKETS, rows // COARSE_ROWS))


def _arithmetic(
    sides: Sides, spec: TableShape, limit: int | None = None, target_hashes: Prehashed | None = None, expect_changes: bool = False
) -> TableDiff:
    """Integer and uuid keys: the key span of both sides (index lookups),
    then the coarse grid — identical tables stop there. Where changes are
    expected and a sample shows them scattered, the grid carries fine
    checks, and its small differing ranges are resolved from them
    (``_resolve_checked``): every row is hashed once. Runs of other
    differing ranges get a fine grid over their key span (one range scan
    per chunk); isolated ones are descended through the index, ``BATCH`` at
    a time."""
    (smin, smax, sest), (tmin, tmax, test) = sides.both(lambda c: _key_bounds(c, spec))
    lows = [_to_int(spec, v) for v in (smin, tmin) if v is not None]
    highs = [_to_int(spec, v) for v in (smax, tmax) if v is not None]
    if not lows:
        return TableDiff(spec, 0, 0, queries=1, target_hashes=target_hashes)
    lo, hi = min(lows), max(highs) + 1
    filtered = spec.arithmetic == "int" and hi - lo <= _INT8_MAX  # every key minus a range start fits a bigint
    parts = FINE_PARTS if expect_changes else 1
    buckets = _coarse_buckets(max(sest or 0, test or 0))
    step = parts * _ceil_div(hi - lo, buckets * parts)
    probed = parts > 1 and buckets >= FINE_SAMPLE
    if probed and not _scattered(sides, spec, lo, hi, step, buckets):
        parts = 1  # few differing ranges: fine grids over them cost less than fine checks everywhere
    differ, src, tgt = _grid_level(sides, spec, lo, hi, step, target_hashes=target_hashes, parts=parts)
    result = TableDiff(spec, src.rows, tgt.rows, source_sum=src.total, target_sum=tgt.total, queries=2 + probed, target_hashes=target_hashes)
    rows = max(src.rows, tgt.rows)
    if differ and _coarse_buckets(rows) > 4 * buckets:  # the catalog's estimate was far too low (never analysed)
        step = parts * _ceil_div(hi - lo, _coarse_buckets(rows) * parts)
        differ, _, _ = _grid_level(sides, spec, lo, hi, step, target_hashes=target_hashes, parts=parts)
        result.queries += 1
    checked, others = [], []
    for d in differ:  # small ranges with fine checks are resolved from them, the others descended
        (checked if parts > 1 and max(d[1][0], d[2][0]) <= parts * LEAF_ROWS else others).append(d)
    for i in range(0, len(checked), BATCH):
        if result.enough(limit):
            result.complete = False
            return result
        _resolve_checked(sides, spec, checked[i : i + BATCH], (lo, hi, step, parts), result)
    pending = _pending(spec, others, lo, hi, step)
    fine = max(1, _ceil_div((hi - lo) * MIN_CHILD_ROWS, rows)) if rows else 1
    isolated: Pending = []
    for run in _runs(spec, pending, step, fine):
        if len(run) < RUN_RANGES:
            isolated += run
            continue
        if result.enough(limit):
            result.complete = False
            return result
        a, b = _span(spec, run[0][0])[0], _span(spec, run[-1][0])[1]
        found, _, _ = _grid_level(sides, spec, a, b, fine, only=[r[0] for r in run] if filtered else None)
        result.queries += 1
        _descend(sides, spec, _pending(spec, found, a, b, fine), result, limit)
    for i in range(0, len(isolated), BATCH):
        _descend(sides, spec, isolated[i : i + BATCH], result, limit)
    return result


def _scattered(sides: Sides, spec: TableShape, lo: int, hi: int, step: int, buckets: int) -> bool:
    """Whether at least ``FINE_SHARE`` of an even sample of ``FINE_SAMPLE``
    coarse ranges differ (checksummed through the index: a few thousand
    rows per side). Only then do fine checks, a third more on the first
    pass, cost less than hashing the differing ranges' rows again; identical
    tables and clustered changes keep the plain grid."""
    stride = buckets // FINE_SAMPLE
    starts = [lo + (stride // 2 + k * stride) * step for k in range(FINE_SAMPLE)]
    sample = [_segment(spec, a, step, hi) for a in starts if a < hi]
    return len(_differing(sides, spec, sample)) >= FINE_SHARE * len(sample)


def _resolve_checked(sides: Sides, spec: TableShape, checked: Differ, layout: tuple[int, int, int, int], result: TableDiff) -> None:
    """Differing grid ranges of at most ``FINE_PARTS * LEAF_ROWS`` rows,
    resolved from their fine checks: the rows of the fine ranges whose check
    bytes differ are fetched as (key, hash) pairs. A check byte is only a
    pointer — two different fine ranges share one once in 255 — so each
    range is then balanced: when the fetched rows do not account for all of
    its difference (row count, and hash sum mod 2^64, the fingerprint), its
    other fine ranges are fetched too. What stays unfetched has equal counts
    and hash sums on both sides: the same proof as an equal range."""
    lo, hi, step, parts = layout
    width = step // parts

    def fetch(wanted: dict[int, list[int]]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        starts = ((lo + i * step + j * width, a[0], b[0]) for i, a, b in checked for j in wanted.get(i, ()))
        leaves = [(_segment(spec, x, width, hi), na, nb) for x, na, nb in starts if x < hi]
        result.queries += 1
        return sides.both(
            lambda c: _arithmetic_pairs(c, spec, [s for s, n, _ in leaves if n > 0]),
            lambda c: _arithmetic_pairs(c, spec, [s for s, _, n in leaves if n > 0]),
        )

    wanted = {i: [j for j in range(parts) if (a[2] >> 8 * j) & 255 != (b[2] >> 8 * j) & 255] for i, a, b in checked}
    text = _row_key_text(spec)
    new, changed, extra = _merge(result, *fetch(wanted), text)
    # rows fetched equal on both sides cancel out of a range's difference: only the differing ones count
    balance: dict[int, list[int]] = {i: [a[0] - b[0], a[1] - b[1]] for i, a, b in checked}
    for key, h in new.items():
        left = balance[(key - lo) // step]
        left[0] -= 1
        left[1] -= h
    for key, (h, other) in changed.items():
        balance[(key - lo) // step][1] -= h - other
    for key, h in extra.items():
        left = balance[(key - lo) // step]
        left[0] += 1
        left[1] += h
    rest = {i: [j for j in range(parts) if j not in wanted[i]] for i, (n, total) in balance.items() if n or total % (1 << 64)}
    if rest:
        _merge(result, *fetch(rest), text)


def _runs(spec: TableShape, pending: Pending, step: int, fine: int) -> Iterator[Pending]:
    """Differing coarse ranges grouped into runs: consecutive ones, with at
    most ``GAP`` equal ranges between two of them, and a key span of at most
    ``CHUNK_BUCKETS`` fine ranges."""
    run: Pending = []
    limit = CHUNK_BUCKETS * fine
    for item in pending:
        if run:
            start, end = _span(spec, run[0][0])[0], _span(spec, run[-1][0])[1]
            a, b = _span(spec, item[0])
            if a - end > GAP * step or b - start > limit:
                yield run
                run = []
        run.append(item)
    if run:
        yield run


def _differing(sides: Sides, spec: TableShape, segments: list[Segment]) -> list[tuple[Segment, int, int]]:
    """The segments whose checksums differ, with their row counts per side."""
    src_sums, tgt_sums = sides.both(lambda c: checksums(c, spec, segments))
    out = []
    for i, seg in enumerate(segments):
        a, b = src_sums.get(i, (0, 0)), tgt_sums.get(i, (0, 0))
        if a != b:
            out.append((seg, a[0], b[0]))
    return out


def _splittable(spec: TableShape, seg: Segment) -> bool:
    if spec.arithmetic:
        lo, hi = _span(spec, seg)
        return hi - lo > 1
    return True


def _parts(rows: int, branch: int) -> int:
    return max(2, min(branch, rows // MIN_CHILD_ROWS))


def _children(sides: Sides, spec: TableShape, splits: list[tuple[Segment, int, int]], branch: int, result: TableDiff) -> list[Segment]:
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


def _fetch_leaves(sides: Sides, spec: TableShape, leaves: list[tuple[Segment, int, int]], result: TableDiff) -> None:
    if leaves:
        _merge(result, *_pairs(sides, spec, leaves, result))


def _pairs(
    sides: Sides, spec: TableShape, leaves: list[tuple[Segment, int, int]], result: TableDiff
) -> tuple[list[tuple[Key, int]], list[tuple[Key, int]]]:
    """(key, hash) pairs of the ranges' rows, each side asked only for the
    ranges where it has rows (one query per side)."""
    on_src = [s for s, a, _ in leaves if a > 0]
    on_tgt = [s for s, _, b in leaves if b > 0]
    result.queries += 1
    return sides.both(lambda c: row_hashes(c, spec, on_src), lambda c: row_hashes(c, spec, on_tgt))


def _merge(
    result: TableDiff, src_rows: list[tuple[T, int]], tgt_rows: list[tuple[T, int]], key: Callable[[T], Key] | None = None
) -> tuple[dict[T, int], dict[T, tuple[int, int]], dict[T, int]]:
    """Fetched (key, hash) pairs of the same ranges on both sides, into
    ``result``; ``key`` makes a differing row's key (integer keys: only
    those become text). Returns the differences as fetched (new, changed,
    extra), keyed as the pairs were."""
    result.rows_fetched += len(src_rows) + len(tgt_rows)
    text = key or (lambda k: k)
    extra = dict(tgt_rows)
    new, changed = {}, {}
    for k, h in src_rows:
        other = extra.pop(k, None)
        if other is None:
            new[k] = h
        elif other != h:
            changed[k] = (h, other)
    result.new.update((text(k), h) for k, h in new.items())
    result.changed.update((text(k), pair) for k, pair in changed.items())
    result.extra.update((text(k), h) for k, h in extra.items())
    return new, changed, extra


# -- tables without a key ---------------------------------------------------

MULTISET_BUCKETS_FETCHED = 8  # differing buckets whose rows are fetched


@dataclass
class MultisetDiff:
    """How a keyless table differs: its row counts, and for the rows of the
    first differing hash buckets, each row's text form → its hashes per
    side (a list: duplicates count)."""

    source_rows: int
    target_rows: int
    rows: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    complete: bool = True  # every differing bucket was read: ``rows`` is the whole difference

    @property
    def differs(self) -> bool:
        return bool(self.rows) or self.source_rows != self.target_rows


def _multiset_buckets(rows: int) -> int:
    n = 16
    while n < 65536 and n * 1000 < rows:
        n *= 2
    return n


def multiset_diff(sides: Sides, spec: TableShape, rows_up_to: int = 0) -> MultisetDiff:
    """Compare a table as a multiset of rows (``spec.key`` is ignored): one
    checksum pass per side; when they differ, one bucketed pass per side
    (bucket = the low bits of the row hash, grouped in memory) and the rows
    of every differing bucket when together they hold at most ``rows_up_to``
    rows (both sides), else of the first ``MULTISET_BUCKETS_FETCHED``."""
    (sc, ss), (tc, ts) = sides.both(lambda c: _top(c, spec))
    result = MultisetDiff(sc, tc)
    if (sc, ss) == (tc, ts):
        return result
    buckets = _multiset_buckets(max(sc, tc))
    h = rowhash.row_hash(spec)
    bucket = sql.SQL("({} & {})").format(h, sql.Literal(buckets - 1))
    sums = sql.SQL("select {} as b, count(*), sum({}) from {} group by 1").format(bucket, h, spec.from_item())

    def bucket_sums(conn: psycopg.Connection) -> dict[int, tuple[int, Decimal]]:
        with _hash_aggregate(conn):
            return {b: (n, total) for b, n, total in conn.execute(sums)}

    a, b = sides.both(bucket_sums)
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    held = sum(a.get(k, (0, 0))[0] + b.get(k, (0, 0))[0] for k in differing)
    chosen = differing if held <= rows_up_to else differing[:MULTISET_BUCKETS_FETCHED]
    result.complete = len(differing) == len(chosen)
    text = sql.SQL("row({})::text").format(sql.SQL(", ").join(sql.Identifier("t", c) for c in spec.columns))
    fetch = sql.SQL("select {}, {} from {} where {} = any(%s::bigint[])").format(text, h, spec.from_item(), bucket)

    def bucket_rows(conn: psycopg.Connection) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for row_text, row_h in conn.execute(fetch, [pgarray.array(chosen)]):
            out.setdefault(row_text, []).append(row_h)
        return out

    ra, rb = sides.both(bucket_rows)
    for row_text in ra.keys() | rb.keys():
        ha, hb = sorted(ra.get(row_text, [])), sorted(rb.get(row_text, []))
        if ha != hb:
            result.rows[row_text] = (ha, hb)
    return result
