"""The undo log: what a content sync (or an undo) changed, as it was before.

A writing run spools its log to a temporary file while it writes — gzip'd,
constant memory — and stores it next to its run report
(``runs/content_sync/<stamp>-<run_id>.undo.gz``, create-only) after the
protection proof and before COMMIT: a run whose log cannot be stored does
not commit. The log's SHA-256 is recorded in the target, in the run's own
transaction (``ledger.record_run``), so a log stored by a run that was then
killed or rolled back is never taken for one that committed.

Layout (UTF-8 text, one item per line):

- a header: JSON ``{"format": "safesync-undo/1", "run": …, "action": …}``;
- sections, each a JSON line (``{"section": "rows" | "ledger", "table": …,
  …}``) followed by rows in ``COPY … TO STDOUT`` text format (tab-separated,
  escaped: a row never spans lines) and ended by COPY's own ``\\.`` line.
  A ``rows`` row is ``key texts…, after hash, present, before hash, the
  table's stored columns…``: the row's key, the hash of its compared
  columns after the run (NULL: the run deleted it / it is absent after),
  whether it existed before, the hash it had then and every stored column
  as it was (NULL when absent) — a deleted row comes back with its id and
  every column, ignored ones included. A ``ledger`` row is ``key texts…,
  before (present, kept, row hash, declined hash), after (the same)``: the
  ledger entry of that key around the run.
- a trailer: JSON ``{"end": true, "records": N}``.

Rows are produced by the target itself (``COPY (SELECT …) TO STDOUT``) and
put back with ``COPY … FROM STDIN`` into a temporary table, so values
never pass through Python and the undo is set-based SQL.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from typing import IO, Any, Iterable, Iterator, Sequence

import psycopg
from psycopg import sql

from safesync.shared.errors import NotFoundError, StorageError
from safesync.shared.report import Report
from safesync.shared import runs
from safesync.shared.storage import Storage
from safesync.shared import pgarray, rowhash
from safesync.shared.rowdiff import Key

from .plan import TableSpec

FORMAT = "safesync-undo/1"
END = b"\\.\n"
SUFFIX = ".undo.gz"
BLOCK = 1 << 16  # bytes of rows compressed at a time


@dataclass(frozen=True)
class StoredLog:
    key: str
    sha256: str
    bytes: int
    records: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "bytes": self.bytes, "records": self.records}


def log_key(report: Report) -> str:
    """``runs/content_sync/<stamp>-<run_id>.undo.gz``: beside the run's report."""
    return runs.key(report).removesuffix(runs.SUFFIX) + SUFFIX


def _json_line(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class Writer:
    """Builds one log in a temporary file; ``store`` uploads it."""

    def __init__(self, header: dict[str, Any], *, enabled: bool = True) -> None:
        self.enabled = enabled  # off (content_sync.undo_log = false): nothing is captured, nothing stored
        self._file = tempfile.TemporaryFile()
        self._gz = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=1, mtime=0)
        self.records = 0
        self._gz.write(_json_line({"format": FORMAT, **header}))

    def section(self, conn: psycopg.Connection, meta: dict[str, Any], queries: Iterable[tuple[sql.Composable, list]]) -> int:
        """One section: ``meta`` and the rows each ``COPY (query) TO STDOUT``
        prints on ``conn``, in order. Returns the rows written."""
        if not self.enabled:
            return 0
        self._gz.write(_json_line(meta))
        rows = sum(self._rows(conn, query, params) for query, params in queries)
        self._gz.write(END)
        return rows

    def _rows(self, conn: psycopg.Connection, query: sql.Composable, params: list) -> int:
        """COPY's rows into the log, compressed in blocks of ``BLOCK`` bytes
        (COPY hands over one row at a time: a gzip write per row cost more
        than the rows' compression)."""
        count = 0
        block = bytearray()
        with conn.cursor() as cur, cur.copy(sql.SQL("copy ({}) to stdout").format(query), params) as copy:
            for data in copy:
                block += data
                if len(block) >= BLOCK:
                    count += self._write_block(block)
        count += self._write_block(block)
        self.records += count
        return count

    def _write_block(self, block: bytearray) -> int:
        """Compress and empty ``block``; returns the rows (lines) it held."""
        rows = block.count(b"\n")
        self._gz.write(block)
        block.clear()
        return rows

    def finish(self) -> str:
        """End the log; returns its SHA-256 (recorded in the target before COMMIT)."""
        self._gz.write(_json_line({"end": True, "records": self.records}))
        self._gz.close()
        self._file.seek(0)
        digest = hashlib.sha256()
        while chunk := self._file.read(1 << 20):
            digest.update(chunk)
        self._sha256, self._size = digest.hexdigest(), self._file.tell()
        return self._sha256

    def store(self, storage: Storage, key: str) -> StoredLog:
        """Store the finished log under ``key`` (create-only)."""
        self._file.seek(0)
        storage.put(key, self._file, content_type="application/gzip", overwrite=False)
        return StoredLog(key, self._sha256, self._size, self.records)

    def close(self) -> None:
        self._gz.close()
        self._file.close()


@dataclass(frozen=True)
class Section:
    meta: dict[str, Any]
    start: int  # offsets of its rows in the decompressed file
    end: int


class Log:
    """A stored log, fetched, checked against the SHA-256 the target
    recorded, and indexed by section (on disk: constant memory)."""

    def __init__(self, storage: Storage, key: str, sha256: str) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()
        try:
            self._fetch(storage, key, sha256)
            self.header, self.sections, self.records = self._index(key)
        except BaseException:
            self._file.close()
            raise

    def _fetch(self, storage: Storage, key: str, sha256: str) -> None:
        if not storage.exists(key):
            raise NotFoundError(f"undo log {key} is missing from storage {storage.describe()}", detail={"key": key})
        digest = hashlib.sha256()
        with tempfile.TemporaryFile() as packed:
            for chunk in storage.iter_chunks(key):
                digest.update(chunk)
                packed.write(chunk)
            if digest.hexdigest() != sha256:
                raise StorageError(f"undo log {key} does not match the SHA-256 the target recorded for it (corrupt or replaced)", detail={"key": key})
            packed.seek(0)
            with gzip.GzipFile(fileobj=packed, mode="rb") as gz:
                shutil.copyfileobj(gz, self._file, 1 << 20)

    def _index(self, key: str) -> tuple[dict[str, Any], list[Section], int]:
        self._file.seek(0)
        header = json.loads(self._file.readline())
        if header.get("format") != FORMAT:
            raise StorageError(f"undo log {key} is not of format {FORMAT}", detail={"key": key})
        sections, records = [], 0
        while line := self._file.readline():
            item = json.loads(line)
            if item.get("end"):
                if item["records"] != records or self._file.readline():
                    raise StorageError(f"undo log {key} holds {records} records, its trailer says {item['records']}", detail={"key": key})
                return header, sections, records
            start = self._file.tell()
            while (row := self._file.readline()) != END:
                if not row:
                    raise StorageError(f"undo log {key} ends inside a section", detail={"key": key})
                records += 1
            sections.append(Section(item, start, self._file.tell() - len(END)))
        raise StorageError(f"undo log {key} has no trailer (incomplete)", detail={"key": key})

    def of(self, kind: str, table: str) -> list[Section]:
        """The sections of one kind about one table, in order."""
        return [s for s in self.sections if s.meta["section"] == kind and s.meta["table"] == table]

    def chunks(self, section: Section, size: int = 1 << 20) -> Iterator[bytes]:
        """The section's rows as COPY text, in pieces."""
        self._file.seek(section.start)
        left = section.end - section.start
        while left > 0:
            data = self._file.read(min(size, left))
            left -= len(data)
            yield data

    def keys(self, section: Section, width: int) -> Iterator[tuple[str, ...]]:
        """The key texts of each row of ``section`` (the first ``width`` fields)."""
        self._file.seek(section.start)
        while self._file.tell() < section.end:
            fields = self._file.readline().rstrip(b"\n").split(b"\t", width)[:width]
            yield tuple(_unescape(f) for f in fields)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Log":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _keys_with(spec: TableSpec, keys: Sequence[Key], extra: dict[str, tuple[str, list]]) -> tuple[sql.Composable, list]:
    """``(select <typed key columns c0..>, <extra columns> from unnest(...)) as k``
    and its params; ``extra``: name -> (SQL type, values)."""
    n = len(spec.key)
    names = [f"c{i}" for i in range(n)] + list(extra)
    select = [sql.SQL("u.{}::{} as {}").format(sql.Identifier(f"c{i}"), sql.SQL(spec.key_types[i]), sql.Identifier(f"c{i}")) for i in range(n)]
    select += [sql.SQL("u.{}").format(sql.Identifier(name)) for name in extra]
    casts = ["text"] * n + [t for t, _ in extra.values()]
    relation = sql.SQL("(select {} from unnest({}) as u({})) as k").format(
        sql.SQL(", ").join(select),
        sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(c)) for c in casts),
        sql.SQL(", ").join(map(sql.Identifier, names)),
    )
    return relation, pgarray.columns(keys, n) + [pgarray.array(v) for _, v in extra.values()]


def key_texts(spec: TableSpec, alias: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, f"c{i}")) for i in range(len(spec.key)))


def row_images(spec: TableSpec, stored: Sequence[str], keys: Sequence[Key], after: Sequence[int | None]) -> tuple[sql.Composable, list]:
    """A ``rows`` section's query: each key's row as the target has it now
    (present?, hash of the compared columns, every stored column), beside
    ``after``, the hash it will have once written (None: deleted)."""
    relation, params = _keys_with(spec, keys, {"after": ("bigint", list(after))})
    if spec.translations:  # the hash is of the compared form: translated references as the parent's natural key
        hashed = sql.SQL(" left join {} on {}").format(spec.from_item(), rowhash.keys_match(spec))
        row_hash = rowhash.row_hash(spec, "t")
    else:
        hashed, row_hash = sql.SQL(""), rowhash.row_hash(spec, "r")
    query = sql.SQL("select {keys}, k.after, r.{pk} is not null, case when r.{pk} is not null then {h} end, {cols} from {rel} left join {table} as r on {match}{hashed}").format(
        keys=key_texts(spec, "k"),
        pk=sql.Identifier(spec.primary_key[0]),
        h=row_hash,
        cols=sql.SQL(", ").join(sql.Identifier("r", c) for c in stored),
        rel=relation,
        table=spec.table.ident,
        match=rowhash.keys_match(spec, "r"),
        hashed=hashed,
    )
    return query, params


LEDGER_FIELDS = ("bp", "bk", "bh", "bd", "ap", "ak", "ah", "ad")  # before/after: present, kept, row hash, declined hash


def ledger_images(spec: TableSpec, rows: Sequence[tuple[Key, tuple, tuple]]) -> tuple[sql.Composable, list]:
    """A ``ledger`` section's query over (key, before, after) entries, each
    (present, kept, row hash, declined hash)."""
    values = {name: [] for name in LEDGER_FIELDS}
    for _, before, after in rows:
        for name, v in zip(LEDGER_FIELDS, (*before, *after)):
            values[name].append(v)
    extra = {name: ("boolean" if name[1] in "pk" else "bigint", values[name]) for name in LEDGER_FIELDS}
    relation, params = _keys_with(spec, [k for k, _, _ in rows], extra)
    cols = sql.SQL(", ").join(sql.Identifier("k", name) for name in LEDGER_FIELDS)
    return sql.SQL("select {}, {} from {}").format(key_texts(spec, "k"), cols, relation), params


_ESCAPES = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v", b"\\": b"\\"}


def _unescape(field: bytes) -> str:
    """A COPY text field as the text it stands for (key texts are never NULL)."""
    if b"\\" not in field:
        return field.decode()
    out, i = bytearray(), 0
    while i < len(field):
        c = field[i : i + 1]
        if c == b"\\" and i + 1 < len(field):
            nxt = field[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
                i += 2
                continue
            if nxt.isdigit():  # octal \ooo
                j = i + 1
                while j < min(i + 4, len(field)) and field[j : j + 1].isdigit():
                    j += 1
                out.append(int(field[i + 1 : j], 8))
                i = j
                continue
        out += c
        i += 1
    return out.decode()
