"""The storage contract every backend keeps, and the key rules they share.

A write is all-or-nothing: an object is visible only once it is complete, so
a crashed backup can never be mistaken for a good one. ``overwrite=False``
makes a write create-only, decided by the backend at the moment the object
becomes visible (not by an earlier "does it exist?" that a concurrent writer
could race). ``if_version`` makes a write a compare-and-swap against the
version ``open_versioned`` read, also decided by the backend (GCS generation
match, S3 ``If-Match`` ETag), so a read-modify-write neither overwrites a
concurrent change nor brings back a deleted object. Reads and writes stream with constant memory (backups are larger
than the RAM of a Cloud Function). Keys are validated before they reach any
backend, so a key can never escape the storage root.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, ContextManager, Union

from ..errors import ObjectChanged, ObjectExists, StorageError

Data = Union[bytes, bytearray, memoryview, Iterable[bytes], BinaryIO]
"""What ``put`` accepts: a whole buffer, an iterable of chunks, or a readable
binary file object (read in 1 MiB pieces)."""

READ_CHUNK = 1 << 20
PROBE_DEADLINE_S = 5.0  # how long a storage probe may retry before the run fails
MAX_SMALL_OBJECT = 64 * 1024 * 1024  # get_bytes refuses more: it holds everything in memory

# Temporary files of the local backend: ``.<name>.tmp-<32 hex>``. Keys may not
# contain a segment of this shape, so ``list`` can skip them without ever
# hiding a real object.
TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{32}")  # fullmatch
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object; ``key`` is relative to the storage root/prefix."""

    key: str
    size: int
    updated: datetime  # tz-aware UTC, informational only


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise
    StorageError. Rejected: empty, absolute, backslashes, control characters,
    empty/``.``/``..`` segments and segments shaped like our temp files."""
    if not isinstance(key, str) or not key:
        raise StorageError("object key must be a non-empty string", detail={"key": repr(key)})
    problem = None
    if key.startswith("/"):
        problem = "is absolute"
    elif "\\" in key:
        problem = "contains a backslash"
    elif _CONTROL_CHARS.search(key):
        problem = "contains a control character"
    else:
        for segment in key.split("/"):
            if segment in ("", ".", ".."):
                problem = "has an empty, '.' or '..' segment"
                break
            if TEMP_NAME.fullmatch(segment):
                problem = "looks like a temporary upload name"
                break
    if problem:
        raise StorageError(f"invalid object key {key!r}: it {problem}", detail={"key": key})
    return key


def exists_error(key: str) -> ObjectExists:
    """What a create-only put raises when ``key`` is taken."""
    return ObjectExists(f"object {key!r} already exists and may not be replaced", detail={"key": key})


def changed_error(key: str) -> ObjectChanged:
    """What a conditional put raises when ``key`` is no longer the version read."""
    return ObjectChanged(
        f"object {key!r} was replaced or deleted since it was read; it was not written", detail={"key": key}
    )


def validate_prefix(prefix: str) -> str:
    """A listing prefix is a key, or a key with one trailing ``/``, or empty."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def as_chunks(data: Data) -> Iterator[bytes]:
    """Normalise ``put`` input to an iterator of byte chunks (lazily, so a
    file or generator is never read into memory as a whole)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return iter((bytes(data),))
    if isinstance(data, str):
        raise TypeError("put() needs bytes, not str (encode it first)")
    read = getattr(data, "read", None)
    if read is not None:
        return iter(lambda: read(READ_CHUNK), b"")
    return iter(data)


class Storage(ABC):
    """Streaming object storage. ``url`` is the normalised storage URL."""

    url: str

    @abstractmethod
    def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str = "application/octet-stream",
        overwrite: bool = True,
        if_version: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically. If ``data`` raises, the
        exception propagates and nothing is visible. With ``overwrite=False``
        an existing object is never replaced: ObjectExists is raised (before
        any byte is sent when the object is already there, else when the
        upload would become visible) and the old object stays as it was.
        With ``if_version`` (a version from ``open_versioned``) the object is
        replaced only if it still is that version: ObjectChanged if it was
        replaced or deleted meanwhile, and nothing is written."""

    def put_json(self, key: str, obj: Any, *, overwrite: bool = True, if_version: str | None = None) -> ObjectInfo:
        """Store ``obj`` as stable, human-diffable JSON (sorted keys, indented)."""
        text = json.dumps(obj, indent=2, sort_keys=True, default=str)
        return self.put(
            key, text.encode("utf-8"), content_type="application/json", overwrite=overwrite, if_version=if_version
        )

    def open(self, key: str) -> ContextManager[BinaryIO]:
        """A readable, non-seekable stream of the object. Raises NotFoundError
        at once if the object does not exist."""
        return self.open_versioned(key)[0]

    @abstractmethod
    def open_versioned(self, key: str) -> tuple[ContextManager[BinaryIO], str]:
        """``open``, plus an opaque token naming the version the stream reads,
        for a later ``put(if_version=...)``."""

    def iter_chunks(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """The object as chunks of at most ``chunk_size`` bytes."""
        with self.open(key) as stream:
            while chunk := stream.read(chunk_size):
                yield chunk

    def get_bytes(self, key: str, *, max_bytes: int = MAX_SMALL_OBJECT) -> bytes:
        """The whole object, for small things like manifests. Refuses objects
        over ``max_bytes`` rather than exhausting memory."""
        return self.get_versioned(key, max_bytes=max_bytes)[0]

    def get_versioned(self, key: str, *, max_bytes: int = MAX_SMALL_OBJECT) -> tuple[bytes, str]:
        """``get_bytes`` and the version read (see ``open_versioned``)."""
        stream_cm, version = self.open_versioned(key)
        with stream_cm as stream:
            data = stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise StorageError(
                f"object {key!r} is larger than {max_bytes} bytes; stream it instead",
                detail={"key": key},
            )
        return data, version

    def get_json(self, key: str) -> Any:
        """The object parsed as JSON (json.JSONDecodeError if it is not)."""
        return json.loads(self.get_bytes(key))

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every complete object whose key starts with ``prefix`` (plain string
        prefix, recursive), sorted by key. Partial uploads never appear."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a complete object is stored under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    def describe(self) -> str:
        """One human line for reports (holds no secrets)."""

    def cleanup_temp(self, older_than: timedelta) -> int:
        """Delete leftovers of writes killed mid-way (older than ``older_than``
        so running writes are spared); returns how many were removed. Backends
        whose partial uploads are invisible and expire by themselves have
        nothing to do."""
        return 0

    def probe(self, key: str) -> None:
        """Write and delete a tiny object: can a run store its results?
        Fails fast (jobs call it before touching any database)."""
        self.put(key, b"probe")
        self.delete(key)
