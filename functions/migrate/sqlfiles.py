"""A folder of ``.sql`` migration files and the record of which were applied.

- Files are ``*.sql`` directly in ``[migrate].sql_dir``, applied in name
  order (name them ``0001_…``, ``0002_…``).
- Each file's checksum is the SHA-256 of its text with line endings
  normalised (a CRLF checkout does not look like an edit).
- ``safesync.migrations`` in the target records every applied file (name,
  checksum, when, which run). The record row is written in the same
  transaction as the file, so a file is applied and recorded together or
  not at all — and never applied twice. A file whose text changed after it
  was applied is refused: the database no longer matches the folder.
- safesync wraps every file in a transaction, so a file must not contain
  its own transaction control (``BEGIN``/``COMMIT``/…): a ``COMMIT`` inside
  a file would commit half a migration that we then could not roll back.
  ``transaction_control`` finds such statements (outside strings, comments,
  dollar quotes and ``BEGIN ATOMIC`` bodies) so the plan can refuse them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from safesync.shared.errors import ConfigError
from safesync.shared.log import redact
from safesync.shared.sqltokens import tokens

RECORD_TABLE = sql.Identifier("safesync", "migrations")
RECORD_SQL = """
create table if not exists safesync.migrations (
    name        text primary key,
    checksum    text not null,
    applied_at  timestamptz not null default now(),
    run_id      text not null,
    duration_ms integer not null
)"""

# Statements that end the transaction safesync runs a file in (SAVEPOINT,
# RELEASE and ROLLBACK TO stay inside it and are fine). PREPARE TRANSACTION
# too: on a server with max_prepared_transactions > 0 it detaches the
# transaction, which then holds its locks until someone commits it.
_CONTROL = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"}


@dataclass(frozen=True)
class SqlFile:
    name: str
    checksum: str
    text: str


@dataclass(frozen=True)
class SqlError:
    """Why a file failed: the server's message, and the line it points at."""

    file: str
    message: str
    sqlstate: str | None
    line: int | None

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.message}" + (f" (SQLSTATE {self.sqlstate})" if self.sqlstate else "")


class FileFailed(Exception):
    """A file failed. ``xid``: the id of the transaction it ran in (taken
    before it ran); ``ended``: the file itself ended that transaction (a
    COMMIT/ROLLBACK the plan's scan did not see). Either way the caller asks
    ``committed_anyway`` before calling the file rolled back."""

    def __init__(self, error: SqlError, *, xid: int | None = None, ended: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.xid = xid
        self.ended = ended


def checksum(text: str) -> str:
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def discover(directory: Path) -> list[SqlFile]:
    """The migration files of ``directory`` in name order."""
    if not directory.is_dir():
        raise ConfigError(f"migrate.sql_dir: {directory} is not a folder")
    odd = sorted(p.name for p in directory.iterdir() if p.suffix.lower() == ".sql" and p.suffix != ".sql" and p.is_file())
    if odd:  # never applied, while the plan said "up to date"
        raise ConfigError(f"migrate.sql_dir: {', '.join(odd)} end(s) in another case than .sql and would be skipped; rename to .sql")
    files = []
    for path in sorted(directory.glob("*.sql"), key=lambda p: p.name):
        if not path.is_file():
            continue
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) is not SQL; sent along, the
            # server reads it as part of the first word ("syntax error at or near \ufeffalter")
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"migration {path.name} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"cannot read migration {path.name}: {exc.strerror}") from None
        if "\x00" in text:  # libpq sends SQL as a C string: what follows a NUL would silently never run
            line = text[: text.index("\x00")].count("\n") + 1
            raise ConfigError(f"migration {path.name} contains a NUL character (line {line}): PostgreSQL cannot run it")
        files.append(SqlFile(path.name, checksum(text), text))
    if not files:
        nested = next((p for p in sorted(directory.glob("*/**/*.sql")) if p.is_file()), None)
        if nested is not None:  # a tool's layout (Prisma: <name>/migration.sql): "up to date" would be a lie
            raise ConfigError(
                f"migrate.sql_dir: {directory} has no .sql file of its own, but its subfolders do (e.g. "
                f"{nested.relative_to(directory).as_posix()}); safesync applies only the files directly in it — "
                'for a tool\'s folder layout use [migrate] command (e.g. "npx prisma migrate deploy")'
            )
    return files


def applied(conn: psycopg.Connection) -> dict[str, str]:
    """name → checksum of every recorded file ({} before the first apply)."""
    with conn.transaction():
        exists = conn.execute("select to_regclass('safesync.migrations') is not null").fetchone()[0]
        if not exists:
            return {}
        rows = conn.execute(sql.SQL("select name, checksum from {} order by name").format(RECORD_TABLE)).fetchall()
    return dict(rows)


def ensure_records(conn: psycopg.Connection) -> None:
    """Create the record table if missing (inside the caller's transaction).
    Nothing is created when it exists: CREATE ... IF NOT EXISTS still needs
    the CREATE privilege, which a migration role may lack on the database."""
    if conn.execute("select to_regclass('safesync.migrations') is not null").fetchone()[0]:
        return
    conn.execute("select pg_advisory_xact_lock(hashtextextended('safesync:schema', 0))")
    if not conn.execute("select exists (select 1 from pg_namespace where nspname = 'safesync')").fetchone()[0]:
        conn.execute("create schema if not exists safesync")
    conn.execute(RECORD_SQL)


def set_timeouts(conn: psycopg.Connection, lock_timeout: str, statement_timeout: str) -> None:
    """Transaction-local guards: a file waits at most ``lock_timeout`` for a
    lock (never queueing the app behind it for long) and runs each statement
    at most ``statement_timeout``."""
    conn.execute("select set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)", [lock_timeout, statement_timeout])


def check_timeouts(conn: psycopg.Connection, lock_timeout: str, statement_timeout: str) -> None:
    """ConfigError naming the key when a timeout is not a valid setting."""
    for key, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("select set_config(%s, %s, true)", [key, value])
        except psycopg.Error as exc:
            raise ConfigError(f"migrate.{key} = {value!r}: {(exc.diag.message_primary or str(exc)).strip()}") from None


def apply_file(conn: psycopg.Connection, file: SqlFile, run_id: str) -> int:
    """Run one file and record it, inside the caller's open transaction.
    Returns its duration in ms; raises FileFailed (the transaction is then
    aborted: the caller rolls it back)."""
    # The transaction's id, assigned now: a COMMIT the plan's scan missed
    # (``transaction_control`` is a tokenizer, not the server's lexer) shows
    # as a different id afterwards, or as this one committed after a failure.
    xid = conn.execute("select pg_catalog.txid_current()").fetchone()[0]
    # The record rows this transaction holds: a file that rolls back to a
    # savepoint an earlier file set (one transaction for all) undoes the end
    # of that file and its record row — applied in part, and pending again.
    records = _records_of(conn, run_id)
    started = time.perf_counter()
    try:
        if file.text.strip():
            conn.execute(file.text, prepare=False)
    except psycopg.Error as exc:
        raise FileFailed(_error(file, exc), xid=xid) from None
    if (
        conn.info.transaction_status != TransactionStatus.INTRANS
        or conn.execute("select pg_catalog.txid_current()").fetchone()[0] != xid
    ):
        raise FileFailed(
            SqlError(file.name, "the file ended safesync's transaction (COMMIT/ROLLBACK inside it)", None, None),
            xid=xid,
            ended=True,
        )
    reset_session(conn)
    if _records_of(conn, run_id) != records:
        raise FileFailed(
            SqlError(file.name, "the file undid an earlier file's work and record (ROLLBACK TO SAVEPOINT of that file's savepoint)", None, None),
            xid=xid,
        )
    ms = int((time.perf_counter() - started) * 1000)
    conn.execute(
        sql.SQL("insert into {} (name, checksum, run_id, duration_ms) values (%s, %s, %s, %s)").format(RECORD_TABLE),
        [file.name, file.checksum, run_id, ms],
    )
    return ms


def _records_of(conn: psycopg.Connection, run_id: str) -> int:
    return conn.execute(sql.SQL("select count(*) from {} where run_id = %s").format(RECORD_TABLE), [run_id]).fetchone()[0]


def reset_session(conn: psycopg.Connection) -> None:
    """Undo what a file left on its session, inside its transaction (so it is
    undone with the file if that rolls back): settings it SET (search_path,
    session_replication_role = replica, which turns off triggers and foreign
    keys, timeouts — back to the connection's own), the role it took and its
    temporary tables (which shadow tables of the same name). Otherwise the
    record row, the validation and the next file would run in that state —
    but only when applied in the same run as this file, so what the
    rehearsal proved would depend on how the files were batched. The caller
    sets its transaction-local timeouts again before the next file."""
    conn.execute("reset session authorization")  # resets the role too
    conn.execute("reset all")
    conn.execute("discard temp")


def committed_anyway(conn: psycopg.Connection, failed: FileFailed) -> bool:
    """Whether a failed file's work may have reached the database for good
    although safesync rolled its transaction back: the file ended the
    transaction itself, or the server reports that transaction committed
    (a COMMIT inside the file, then an error). ``conn`` is the file's
    connection, idle again (autocommit). Such a failure is undone by a
    restore, and never reported as "nothing was committed"."""
    if failed.ended:
        return True
    if failed.xid is None:
        return False
    try:
        status = conn.execute("select pg_catalog.txid_status(%s)", [failed.xid]).fetchone()[0]
    except psycopg.Error:  # the file broke the connection (pg_terminate_backend): we cannot know, so it may have
        return True
    return status != "aborted"


def _error(file: SqlFile, exc: psycopg.Error) -> SqlError:
    diag = exc.diag
    message = (diag.message_primary or str(exc)).strip()
    if diag.message_detail:
        message += f" ({diag.message_detail.strip()})"
    line = None
    if diag.statement_position and diag.statement_position.isdigit():
        line = file.text[: int(diag.statement_position)].count("\n") + 1
    return SqlError(file.name, redact(message), diag.sqlstate, line)


# --- finding transaction control --------------------------------------------------

def _words(text: str, backslash_escapes: bool):
    """(line, WORD or ';') of the code outside comments, strings and dollar quotes."""
    for token in tokens(text, backslash_escapes=backslash_escapes):
        if token.kind == "word":
            yield token.line, token.text.upper()
        elif token.kind == "semi":
            yield 0, ";"


def _either_reading(scan: Callable[[str, bool], list[str]]) -> Callable[[str], list[str]]:
    """``scan`` of a file as the server reads it with standard_conforming_strings
    on (the default) and as with it off (a database or role may set it): what
    either reading finds, by line. A ``'\\''`` closes a string only with it
    off, so a COMMIT after it was a string to a scan reading it one way."""

    def both(text: str) -> list[str]:
        found = dict.fromkeys(scan(text, False))
        found.update(dict.fromkeys(scan(text, True)))
        return sorted(found, key=lambda f: int(f.split()[1].rstrip(":")))

    both.__doc__ = scan.__doc__
    return both


@_either_reading
def transaction_control(text: str, backslash_escapes: bool) -> list[str]:
    """Statements of ``text`` that control the transaction, as
    ``"line N: COMMIT"``. ``BEGIN ATOMIC … END`` bodies (whose inner ``;`` and
    ``CASE … END`` are part of one statement) are skipped."""
    found: list[str] = []
    starts: list[tuple[int, str, str]] = []  # (line, first word, second word) of each statement
    current: list[tuple[int, str]] = []
    atomic = 0  # depth inside BEGIN ATOMIC bodies (CASE … END nests too)
    for line, word in _words(text, backslash_escapes):
        if word == ";" and not atomic:
            if current:
                starts.append((current[0][0], current[0][1], current[1][1] if len(current) > 1 else ""))
            current = []
            continue
        if word == ";":
            continue
        previous = current[-1][1] if current else ""
        if atomic and (word == "CASE" or (word == "ATOMIC" and previous == "BEGIN")):
            atomic += 1
        elif atomic and word == "END":
            atomic -= 1
        elif word == "ATOMIC" and previous == "BEGIN" and len(current) > 1:
            atomic = 1
        current.append((line, word))
    if current:
        starts.append((current[0][0], current[0][1], current[1][1] if len(current) > 1 else ""))
    for line, word, following in starts:
        if word in _CONTROL and not (word == "ROLLBACK" and following == "TO"):
            found.append(f"line {line}: {word}")
        elif (word, following) == ("PREPARE", "TRANSACTION"):
            found.append(f"line {line}: PREPARE TRANSACTION")
    return found


@_either_reading
def client_copy(text: str, backslash_escapes: bool) -> list[str]:
    """``COPY … FROM STDIN`` / ``TO STDOUT`` statements of ``text`` (as
    ``"line N: COPY … FROM STDIN"``). They need a client that streams the
    data (psql); sent as SQL, the first leaves the connection waiting for
    rows that never come, inside the migration's transaction and holding
    its locks, so the plan refuses them."""
    found: list[str] = []
    statement: list[tuple[int, str]] = []
    for line, word in list(_words(text, backslash_escapes)) + [(0, ";")]:
        if word != ";":
            statement.append((line, word))
            continue
        words = [w for _, w in statement]
        if words and words[0] == "COPY":
            pairs = set(zip(words, words[1:]))
            for pair in (("FROM", "STDIN"), ("TO", "STDOUT")):
                if pair in pairs:
                    found.append(f"line {statement[0][0]}: COPY … {' '.join(pair)}")
        statement = []
    return found

