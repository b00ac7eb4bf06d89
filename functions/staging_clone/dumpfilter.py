"""Leaving whole entries out of a plain-format ``pg_dump`` stream.

A plain dump is a sequence of table-of-contents entries, each introduced by
a comment header that pg_dump always writes::

    --
    -- Name: auth; Type: SCHEMA; Schema: -; Owner: supabase_admin
    --

The clone handles a few entry kinds itself (the schemas' own properties, the
default privileges of roles it may not act as, extensions it keeps) because
the restoring role could not run them — ``CREATE SCHEMA auth`` for a schema
that stays, ``ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin`` as a
non-member. ``DumpFilter`` drops exactly those entries as the stream passes.

It can also hold entries back for the clone to send later: materialized
views are refreshed (``MATERIALIZED VIEW DATA``, pg_dump's last entries, in
dependency order) only after the masks are applied, so no view keeps dev's
unmasked values.

Why it cannot drop the wrong thing: ``COPY … FROM stdin`` data is skipped
over without looking at it (a row could look like a header), and every line
of a dropped entry must be a statement of the kind its header announced
(``ALLOWED``). A header-like line inside a function body would start a
"dropped" entry whose lines are not such statements: the filter then raises
and the clone rolls back instead of restoring a truncated definition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

HEADER = re.compile(rb"^-- (?:Data for )?Name: (.*); Type: (.*?); Schema: (.*?); Owner: (.*?)(?:; Tablespace: .*)?\n\Z")
COPY_START = re.compile(rb"^COPY .* FROM stdin;\n\Z")
COPY_FROM, COPY_FREEZE = b" FROM stdin;\n", b" FROM stdin WITH (FREEZE);\n"
COPY_END = b"\n\\.\n"

# Session settings pg_dump writes between entries (before the next header):
# they are for what follows, so they pass even inside a dropped entry.
SESSION_SETTINGS = (b"SET ", b"SELECT pg_catalog.set_config(")

# What a dropped entry may contain, by its header's type (first line of
# each statement; comment and blank lines between statements are allowed).
ALLOWED: dict[str, tuple[bytes, ...]] = {
    "SCHEMA": (b"CREATE SCHEMA ", b"ALTER SCHEMA "),
    "COMMENT": (b"COMMENT ON SCHEMA ", b"COMMENT ON EXTENSION "),
    "ACL": (b"GRANT ", b"REVOKE "),
    "DEFAULT ACL": (b"ALTER DEFAULT PRIVILEGES ",),
    "EXTENSION": (b"CREATE EXTENSION ",),
    "MATERIALIZED VIEW DATA": (b"REFRESH MATERIALIZED VIEW ",),
}


class DumpFilterError(Exception):
    """The stream did not look like pg_dump's plain format where an entry
    was to be dropped or held back."""


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    schema: str
    owner: str

    def __str__(self) -> str:
        return f"{self.type} {self.name}" + (f" (schema {self.schema})" if self.schema != "-" else "")


class DumpFilter:
    """``feed(chunk) -> bytes`` passes the stream on without the entries for
    which ``drop(entry)`` or ``hold(entry)`` is true; ``finish()`` returns
    what is still held of the stream. The statements of held entries (in
    stream order) are in ``held`` for the caller to send when it chooses.

    The ``COPY … FROM stdin;`` of a ``TABLE DATA`` entry for which
    ``freeze(entry)`` is true becomes ``COPY … FROM stdin WITH (FREEZE);``:
    rows of a table created in the same transaction are written frozen and
    all-visible, so no later read (the clone's proof, the app's first
    queries) rewrites every page to set hint bits, and no vacuum has to
    freeze them. Only the statement line after the entry's header is
    touched, never data."""

    def __init__(
        self,
        drop: Callable[[Entry], bool],
        freeze: Callable[[Entry], bool] = lambda entry: False,
        hold: Callable[[Entry], bool] = lambda entry: False,
    ) -> None:
        self._drop = drop
        self._freeze = freeze
        self._hold = hold
        self._entry: Entry | None = None  # the entry the stream is in
        self._held = b""  # an incomplete line (text mode) or the tail of copy data
        self._in_copy = False
        self._copy_fresh = False  # no copy data seen yet: "\\." may start right here
        self._dropping: Entry | None = None  # the entry being left out (dropped or held)
        self._holding = False
        self._in_statement = False
        self.dropped: list[Entry] = []
        self.held = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        self._held = b""
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._in_copy:
                if self._copy_fresh and data.startswith(b"\\.\n", pos):  # COPY of an empty table
                    self._emit(out, b"\\.\n")
                    pos += 3
                    self._in_copy = False
                    continue
                # data ends at a line "\.": search from the newline before pos
                end = data.find(COPY_END, max(pos - 1, 0))
                if end < 0:
                    if len(data) - pos >= 3:
                        self._copy_fresh = False
                    keep = max(pos, len(data) - len(COPY_END))  # the terminator may straddle chunks
                    self._emit(out, data[pos:keep])
                    self._held = data[keep:]
                    return bytes(out)
                stop = end + len(COPY_END)
                self._emit(out, data[pos:stop])
                pos = stop
                self._in_copy = False
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._held = data[pos:]
                break
            line = data[pos : nl + 1]
            pos = nl + 1
            self._line(out, line)
        return bytes(out)

    def finish(self) -> bytes:
        rest, self._held = self._held, b""
        out = bytearray()
        if rest:
            if self._in_copy:
                self._emit(out, rest)
            else:
                self._line(out, rest)
        return bytes(out)

    def _emit(self, out: bytearray, data: bytes) -> None:
        if self._dropping is None:
            out += data
        elif data:
            raise DumpFilterError(f"unexpected data inside {self._dropping}, which was to be {self._fate}")

    @property
    def _fate(self) -> str:
        return "held back" if self._holding else "left out"

    def _line(self, out: bytearray, line: bytes) -> None:
        if line.startswith(b"-- ") and (match := HEADER.match(line)):
            entry = Entry(*(part.decode("utf-8", errors="replace") for part in match.groups()))
            self._entry = entry
            self._holding = self._hold(entry)
            self._dropping = entry if self._holding or self._drop(entry) else None
            self._in_statement = False
            if self._holding:
                self.held += line
                return
            if self._dropping is not None:
                self.dropped.append(entry)
                return
        if self._dropping is None:
            if COPY_START.match(line):
                self._in_copy = self._copy_fresh = True
                entry, self._entry = self._entry, None  # one COPY per TABLE DATA entry
                if entry is not None and entry.type == "TABLE DATA" and self._freeze(entry):
                    line = line[: -len(COPY_FROM)] + COPY_FREEZE
            out += line
            return
        if not self._in_statement and line.startswith(SESSION_SETTINGS):
            out += line  # pg_dump sets these for the entries that follow
            return
        self._check(line)

    def _check(self, line: bytes) -> None:
        """A line of a dropped or held entry must belong to an allowed
        statement; a held one is kept."""
        assert self._dropping is not None
        if self._holding:
            self.held += line
        if not self._in_statement:
            if not line.strip() or line.startswith(b"--"):
                return
            if not line.startswith(ALLOWED.get(self._dropping.type, ())):
                raise DumpFilterError(f"{self._dropping}, which was to be {self._fate}, holds an unexpected statement: {line[:80]!r}")
            self._in_statement = True
        if line.rstrip().endswith(b";"):
            self._in_statement = False
