"""Reading a PostgreSQL client's stderr (psql, pg_restore) after a failure:
which server error stopped it, and would trying again help?

A permission error ("must be owner of schema auth", "permission denied for
table users", "must be member of role supabase_admin") fails the same way
on every retry: it is a refusal (HTTP 422 / QStash 489, exit 1) naming the
object and the privilege. Lock timeouts, lost connections, deadlocks and
cancellations may pass: those stay retryable failures.

psql run with ``VERBOSITY=verbose`` prints the SQLSTATE (``ERROR:  42501:
…``); pg_restore cannot be asked to, so its privilege errors are known by
the server's wording (stable across releases, English server messages).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from .errors import JobFailed, Refused, SafesyncError
from .log import redact

_ERROR = re.compile(r"ERROR:\s+(?:([0-9A-Z]{5}):\s+)?(.*)")
# SQLSTATE classes a retry can cure: transaction rollback (40), resources
# (53), lock not available (55P03), operator intervention (57), connection (08), system (58).
TRANSIENT_CLASSES = ("40", "53", "57", "08", "58")
TRANSIENT_STATES = ("55P03",)
PRIVILEGE_WORDING = re.compile(r"permission denied|must be owner of|must be member of role|must be superuser|must have .* privilege|must be able to SET ROLE", re.I)


@dataclass(frozen=True)
class ServerError:
    sqlstate: str | None
    message: str
    context: str  # the statement or the lines after the error, for the report

    @property
    def privilege(self) -> bool:
        return self.sqlstate == "42501" or bool(PRIVILEGE_WORDING.search(self.message))

    @property
    def transient(self) -> bool:
        if self.privilege:
            return False
        if self.sqlstate is None:
            return True  # unknown: do not promise it is permanent
        return self.sqlstate.startswith(TRANSIENT_CLASSES) or self.sqlstate in TRANSIENT_STATES


def first_error(stderr: str) -> ServerError | None:
    """The first server ``ERROR`` in a client's output, with what follows it
    (psql's LINE/CONTEXT, pg_restore's "Command was:")."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        match = _ERROR.search(line)
        if match:
            follow = [x.strip() for x in lines[i + 1 : i + 4] if x.strip() and not _ERROR.search(x)]
            return ServerError(match.group(1), match.group(2).strip(), " ".join(follow)[:500])
    return None


def failure(what: str, stderr: str, fallback: str, detail: dict | None = None) -> SafesyncError:
    """The error to raise after a client failed: ``Refused`` when the server
    refused for good (a privilege, an invalid object), else ``JobFailed``.
    ``what`` says what failed and what state it left, e.g. "clone failed,
    staging unchanged (rolled back)"."""
    error = first_error(stderr)
    if error is None:
        return JobFailed(f"{what}: {fallback}", detail)
    return _classified(what, error, detail)


def database_failure(what: str, exc: psycopg.Error, detail: dict | None = None) -> SafesyncError:
    """The same judgement for an error our own session got (psycopg knows
    the SQLSTATE): a run the database stopped is reported with the server's
    words, as a refusal or a retryable failure — not as our crash."""
    # with the server's DETAIL and HINT (the key a constraint rejected), on one line
    message = "; ".join(line.strip() for line in redact(str(exc)).splitlines() if line.strip())
    return _classified(what, ServerError(exc.sqlstate, message, ""), detail)


def _classified(what: str, error: ServerError, detail: dict | None) -> SafesyncError:
    text = error.message + (f" ({error.context})" if error.context else "")
    if error.privilege:
        return Refused(f"{what}: the role lacks a privilege: {text}", detail)
    if not error.transient:
        return Refused(f"{what}: {text}", detail)
    return JobFailed(f"{what}: {text}", detail)
