"""The error vocabulary shared by every job, the HTTP layer and the CLI.

Each error knows how it is answered: its HTTP status, its CLI exit code and
whether QStash should stop retrying it (a permanent failure is answered to
QStash as 489 + ``Upstash-NonRetryable-Error`` so a bad request is not
re-sent for hours).
"""

from __future__ import annotations

from typing import Any


class SafesyncError(Exception):
    """Base class: a failure we understand and can explain in one line."""

    status: int = 500
    exit_code: int = 1
    permanent: bool = False

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class ConfigError(SafesyncError):
    """The configuration (file or environment) is invalid or incomplete."""

    status, exit_code, permanent = 400, 2, True


class BadRequest(SafesyncError):
    """The request or command line is malformed."""

    status, exit_code, permanent = 400, 2, True


class AuthError(SafesyncError):
    """No valid credential came with the request."""

    status, exit_code, permanent = 401, 2, True


class Forbidden(SafesyncError):
    """A valid credential that may not do this (e.g. admin-only actions)."""

    status, exit_code, permanent = 403, 2, True


class NotFoundError(SafesyncError):
    """A named thing (backup, object, database) does not exist."""

    status, exit_code, permanent = 404, 1, True


class AlreadyRunning(SafesyncError):
    """The same job already runs on the same target; retry later."""

    status, exit_code, permanent = 409, 1, False


class MethodNotAllowed(SafesyncError):
    """The target does not take this HTTP method (answered with ``Allow``)."""

    status, exit_code, permanent = 405, 2, True

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class PayloadTooLarge(SafesyncError):
    """The request body exceeds the limit; rejected before parsing."""

    status, exit_code, permanent = 413, 2, True


class Refused(SafesyncError):
    """The job refused to act because acting would be unsafe; nothing changed."""

    status, exit_code, permanent = 422, 1, True


class RateLimited(SafesyncError):
    """Too many requests from one caller."""

    status, exit_code, permanent = 429, 1, False

    def __init__(self, message: str, retry_after: int, detail: Any = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class NotBuilt(SafesyncError):
    """A documented action whose implementation has not landed yet."""

    status, exit_code, permanent = 501, 1, True


class StorageError(SafesyncError):
    """Object storage is unreachable or refused an operation."""

    status, exit_code, permanent = 503, 1, False


class ObjectExists(StorageError):
    """A create-only write found an object under its key: the old object is
    kept as it was. Retryable (e.g. with the next free backup name)."""

    status, exit_code, permanent = 409, 1, False


class ObjectChanged(StorageError):
    """A conditional write (``put(if_version=...)``) found the object replaced
    or deleted since it was read: nothing was written, so a concurrent
    change is neither overwritten nor a deleted object brought back."""

    status, exit_code, permanent = 409, 1, False


class DatabaseError(SafesyncError):
    """A database is unreachable or failed in a way we can name."""

    status, exit_code, permanent = 503, 1, False


class JobFailed(SafesyncError):
    """The job ran and failed (a dependency broke); its report says why and
    what was rolled back. Retryable: the next attempt may succeed."""

    status, exit_code, permanent = 503, 1, False
