"""Object storage behind one streaming interface: a local folder
(``file://``) or a Google Cloud Storage bucket/prefix (``gs://``).

Both backends make a write all-or-nothing: an object is visible only once it
is complete, so a crashed backup can never be mistaken for a good one. Reads
and writes stream with constant memory (backups are larger than the RAM of a
Cloud Function). Keys are validated before they reach either backend, so a
key can never escape the storage root.

google-cloud-storage is imported only when a GCS backend first talks to GCS:
importing it costs a noticeable part of a cold start, and jobs that only use
a local folder should not pay for it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ContextManager, Union

from .errors import ConfigError, NotFoundError, StorageError
from .log import get_logger

if TYPE_CHECKING:  # pragma: no cover - typing only
    from google.cloud.storage import Blob, Bucket, Client

log = get_logger("storage")

Data = Union[bytes, bytearray, memoryview, Iterable[bytes], BinaryIO]
"""What ``put`` accepts: a whole buffer, an iterable of chunks, or a readable
binary file object (read in 1 MiB pieces)."""

READ_CHUNK = 1 << 20
GCS_CHUNK = 8 * 1024 * 1024  # resumable upload/download piece; a multiple of 256 KiB
PROBE_DEADLINE_S = 5.0  # how long a storage probe may retry before the run fails
MAX_SMALL_OBJECT = 64 * 1024 * 1024  # get_bytes refuses more: it holds everything in memory

# Temporary files of the local backend: ``.<name>.tmp-<32 hex>``. Keys may not
# contain a segment of this shape, so ``list`` can skip them without ever
# hiding a real object.
_TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{32}")  # fullmatch
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")  # fullmatch


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
            if _TEMP_NAME.fullmatch(segment):
                problem = "looks like a temporary upload name"
                break
    if problem:
        raise StorageError(f"invalid object key {key!r}: it {problem}", detail={"key": key})
    return key


def _validate_prefix(prefix: str) -> str:
    """A listing prefix is a key, or a key with one trailing ``/``, or empty."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _as_chunks(data: Data) -> Iterator[bytes]:
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
        self, key: str, data: Data, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically (replacing any old object).
        If ``data`` raises, the exception propagates and nothing is visible."""

    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        """Store ``obj`` as stable, human-diffable JSON (sorted keys, indented)."""
        text = json.dumps(obj, indent=2, sort_keys=True, default=str)
        return self.put(key, text.encode("utf-8"), content_type="application/json")

    @abstractmethod
    def open(self, key: str) -> ContextManager[BinaryIO]:
        """A readable, non-seekable stream of the object. Raises NotFoundError
        at once if the object does not exist."""

    def iter_chunks(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """The object as chunks of at most ``chunk_size`` bytes."""
        with self.open(key) as stream:
            while chunk := stream.read(chunk_size):
                yield chunk

    def get_bytes(self, key: str, *, max_bytes: int = MAX_SMALL_OBJECT) -> bytes:
        """The whole object, for small things like manifests. Refuses objects
        over ``max_bytes`` rather than exhausting memory."""
        with self.open(key) as stream:
            data = stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise StorageError(
                f"object {key!r} is larger than {max_bytes} bytes; stream it instead",
                detail={"key": key},
            )
        return data

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


# --------------------------------------------------------------------------
# Local folder
# --------------------------------------------------------------------------


@contextmanager
def _local_errors(action: str, key: str) -> Iterator[None]:
    """Translate OS errors of the local backend into our vocabulary. Only a
    read can find an object missing; any failure of a write is a StorageError."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if action != "read":
            raise StorageError(f"local storage failed to {action} {key!r}: {exc}", detail={"key": key}) from exc
        raise NotFoundError(f"object {key!r} not found", detail={"key": key}) from exc
    except OSError as exc:
        raise StorageError(
            f"local storage failed to {action} {key!r}: {exc.strerror or exc}",
            detail={"key": key},
        ) from exc


def _fsync_dir(path: Path) -> None:
    """Make a directory entry change (create/rename) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: Path) -> None:
    """``mkdir -p`` that fsyncs each parent of a directory it creates, so a
    power cut cannot lose a freshly written backup's folder."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if directory.is_dir():  # a concurrent writer made it first
                continue
            raise
        _fsync_dir(directory.parent)


class LocalStorage(Storage):
    """Objects are files under ``root``; keys map to relative paths."""

    def __init__(self, root: Path) -> None:
        # Resolved once so the containment check below compares real paths.
        self.root = Path(os.path.realpath(root))
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        """The file for ``key``. Besides key validation, refuses paths that a
        symlink inside the folder would redirect outside of it."""
        path = self.root.joinpath(*validate_key(key).split("/"))
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.root]) != str(self.root):
            raise StorageError(f"object key {key!r} leads outside the storage folder", detail={"key": key})
        return path

    @staticmethod
    def _info(key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def put(
        self, key: str, data: Data, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Write to ``.<name>.tmp-<uuid>`` beside the target, fsync, rename
        over the target and fsync the folder: readers see the old object or
        the complete new one, never a prefix of it. ``content_type`` has no
        place on a plain file and is ignored."""
        path = self._path(key)
        chunks = _as_chunks(data)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        with _local_errors("write", key):
            _makedirs_durable(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                # Errors raised by the data source propagate untranslated;
                # only our own I/O is reported as a StorageError.
                for chunk in chunks:
                    with _local_errors("write", key):
                        f.write(chunk)
                with _local_errors("write", key):
                    f.flush()
                    os.fsync(f.fileno())
            with _local_errors("write", key):
                os.replace(tmp, path)
                _fsync_dir(path.parent)
                return self._info(key, path.stat())
        except BaseException:
            # Also on KeyboardInterrupt: never leave a temp file we can remove.
            tmp.unlink(missing_ok=True)
            raise

    def open(self, key: str) -> ContextManager[BinaryIO]:
        path = self._path(key)
        with _local_errors("read", key):
            return open(path, "rb")  # noqa: SIM115 - the caller's `with` closes it

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        _validate_prefix(prefix)
        # Walk only the folder that can hold matches ("a/b/c" -> "a/b/").
        folder = prefix.rpartition("/")[0]
        start = self._path(folder) if folder else self.root
        found: list[ObjectInfo] = []
        with _local_errors("list", prefix):
            self._walk(start, folder, prefix, found)
        return sorted(found, key=lambda info: info.key)

    def _walk(self, directory: Path, rel: str, prefix: str, found: list[ObjectInfo]) -> None:
        """Collect regular files; symlinks and temp files are not objects."""
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    self._walk(Path(entry.path), key, prefix, found)
            elif (
                entry.is_file(follow_symlinks=False)
                and not _TEMP_NAME.fullmatch(entry.name)
                and key.startswith(prefix)
            ):
                try:
                    found.append(self._info(key, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:  # deleted while we listed
                    continue

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return stat.S_ISREG(path.stat().st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise StorageError(f"local storage failed to check {key!r}: {exc}", detail={"key": key}) from exc

    def delete(self, key: str) -> None:
        """Remove the file. Emptied folders stay: removing them could race a
        concurrent put that just created them."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"local storage failed to delete {key!r}: {exc}", detail={"key": key}) from exc

    def describe(self) -> str:
        return f"local folder {self.root}"

    def cleanup_temp(self, older_than: timedelta) -> int:
        """Remove temp files left by killed writes (SIGKILL skips our cleanup)."""
        cutoff = datetime.now(timezone.utc).timestamp() - older_than.total_seconds()
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not _TEMP_NAME.fullmatch(name):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:  # finished or cleaned meanwhile
                    continue
        return removed


# --------------------------------------------------------------------------
# Google Cloud Storage
# --------------------------------------------------------------------------


@contextmanager
def _gcs_errors(action: str, key: str, *, missing: str = "object") -> Iterator[None]:
    """Translate google-cloud-storage/transport errors. ``missing`` says what
    a 404 means here: ``"object"`` -> NotFoundError, anything else (e.g. the
    bucket during a listing, or a read whose object vanished) -> StorageError."""
    from google.api_core import exceptions as api
    from google.auth.exceptions import GoogleAuthError
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
    from requests.exceptions import RequestException

    try:
        yield
    except api.NotFound as exc:
        if missing == "object":
            raise NotFoundError(f"object {key!r} not found", detail={"key": key}) from exc
        raise StorageError(f"GCS failed to {action} {key!r}: {missing}", detail={"key": key}) from exc
    except DataCorruption as exc:
        raise StorageError(f"GCS checksum mismatch while trying to {action} {key!r}", detail={"key": key}) from exc
    except (api.GoogleAPIError, GoogleAuthError, InvalidResponse, RequestException) as exc:
        raise StorageError(f"GCS failed to {action} {key!r}: {exc}", detail={"key": key}) from exc


class _CheckedReader(io.BufferedIOBase):
    """Sequential reader over a pinned GCS object generation that verifies
    the CRC32C of everything read against the object's stored CRC32C once
    the end is reached. (BlobReader fetches ranges, for which the library
    cannot check checksums, so we check the whole stream ourselves.)"""

    def __init__(self, key: str, blob: "Blob", chunk_size: int) -> None:
        import google_crc32c

        self._key = key
        self._expected_size = blob.size
        self._expected_crc = blob.crc32c
        self._crc = google_crc32c.Checksum()
        self._seen = 0
        self._verified = False
        # raw_download: stored bytes exactly as written (no transcoding), so
        # the checksum applies.
        self._reader = blob.open("rb", chunk_size=chunk_size, raw_download=True)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        # A 404 mid-read means the generation we pinned was overwritten.
        with _gcs_errors("read", self._key, missing="object was replaced or deleted while reading"):
            data = self._reader.read(size)
        self._crc.update(data)
        self._seen += len(data)
        # Known size: verify on the last byte, sparing a read past the end.
        if self._seen >= self._expected_size or (not data and size != 0):
            self._verify()
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def _verify(self) -> None:
        """At end of stream: the size and CRC32C must match the metadata."""
        if self._verified:
            return
        self._verified = True
        if self._seen != self._expected_size:
            raise StorageError(
                f"object {self._key!r} ended after {self._seen} of {self._expected_size} bytes",
                detail={"key": self._key},
            )
        if self._expected_crc is not None:
            actual = base64.b64encode(self._crc.digest()).decode("ascii")
            if actual != self._expected_crc:
                raise StorageError(
                    f"CRC32C mismatch reading {self._key!r}: got {actual}, stored {self._expected_crc}",
                    detail={"key": self._key},
                )

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class GCSStorage(Storage):
    """Objects are blobs named ``<prefix>/<key>`` in ``bucket``."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket_name = bucket
        self.prefix = prefix
        self.url = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        self._client: Client | None = None

    def _bucket(self) -> "Bucket":
        """The bucket handle; the client is made on first use (see module doc)."""
        if self._client is None:
            with _gcs_errors("connect to", self.url, missing="bucket not found"):
                from google.cloud import storage

                if os.environ.get("STORAGE_EMULATOR_HOST"):
                    from google.auth.credentials import AnonymousCredentials

                    self._client = storage.Client(credentials=AnonymousCredentials(), project="test")
                else:
                    self._client = storage.Client()
        return self._client.bucket(self.bucket_name)

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def bucket_settings(self) -> dict[str, Any]:
        """Versioning and lifecycle of the bucket (what the doctor reports:
        they are the safety net behind prune)."""
        with _gcs_errors("read settings of", self.url, missing="bucket not found"):
            bucket = self._bucket()
            bucket.reload()
            return {"versioning": bool(bucket.versioning_enabled), "lifecycle_rules": len(list(bucket.lifecycle_rules))}

    @staticmethod
    def _info(key: str, blob: "Blob") -> ObjectInfo:
        return ObjectInfo(key, int(blob.size or 0), blob.updated)

    def put(
        self, key: str, data: Data, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Whole buffers go up in one request; streams as a resumable upload
        in 8 MiB pieces, finalised only after the last byte, so an
        interrupted put leaves no object. Both verify CRC32C end to end.
        Retrying is safe: a put only ever replaces an object with the same
        content."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        name = self._name(validate_key(key))
        blob = self._bucket().blob(name)
        if isinstance(data, (bytes, bytearray, memoryview)):
            with _gcs_errors("write", key, missing="bucket not found"):
                blob.upload_from_string(
                    bytes(data), content_type=content_type, checksum="crc32c", retry=DEFAULT_RETRY
                )
            return self._info(key, blob)

        chunks = _as_chunks(data)
        with _gcs_errors("write", key, missing="bucket not found"):
            writer = blob.open(
                "wb",
                chunk_size=GCS_CHUNK,
                content_type=content_type,
                checksum="crc32c",
                retry=DEFAULT_RETRY,
            )
        try:
            # As for local files: source errors propagate untranslated.
            for chunk in chunks:
                with _gcs_errors("write", key, missing="bucket not found"):
                    writer.write(chunk)
            with _gcs_errors("write", key, missing="bucket not found"):
                writer.close()
        except BaseException:
            self._abort(writer, key)
            raise
        with _gcs_errors("write", key, missing="object vanished right after upload"):
            blob.reload()  # the writer does not report the final metadata
        return self._info(key, blob)

    @staticmethod
    def _abort(writer: Any, key: str) -> None:
        """Cancel an unfinished resumable upload (best effort: if this fails
        the session expires on its own and never became an object)."""
        if writer.closed:
            return
        try:
            writer.terminate()
        except Exception as exc:  # noqa: BLE001 - must not mask the original error
            log.warning("could not cancel GCS upload", key=key, error=str(exc))

    def open(self, key: str) -> ContextManager[BinaryIO]:
        """Stream the current generation; a later overwrite cannot mix into
        the read (it fails instead), and CRC32C is verified at the end."""
        name = self._name(validate_key(key))
        with _gcs_errors("read", key):
            blob = self._bucket().get_blob(name)
        if blob is None:
            raise NotFoundError(f"object {key!r} not found", detail={"key": key})
        return _CheckedReader(key, blob, GCS_CHUNK)  # type: ignore[return-value]

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        root = f"{self.prefix}/" if self.prefix else ""
        with _gcs_errors("list", _validate_prefix(prefix), missing="bucket not found"):
            blobs = list(self._bucket().list_blobs(prefix=root + prefix))
        found = []
        for blob in blobs:
            key = blob.name[len(root):]
            try:
                validate_key(key)
            except StorageError:  # e.g. "folder/" placeholders made by the console
                continue
            found.append(self._info(key, blob))
        return sorted(found, key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        name = self._name(validate_key(key))
        with _gcs_errors("check", key):
            return self._bucket().blob(name).exists()

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        name = self._name(validate_key(key))
        with _gcs_errors("delete", key):
            try:
                self._bucket().blob(name).delete()
            except NotFound:
                return

    def probe(self, key: str) -> None:
        """Like the base probe, but with a short retry deadline: a dead
        endpoint must fail a run in seconds, not after the client's 120 s."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        name = self._name(validate_key(key))
        retry = DEFAULT_RETRY.with_deadline(PROBE_DEADLINE_S)
        with _gcs_errors("write a probe to", key):
            blob = self._bucket().blob(name)
            blob.upload_from_string(b"probe", retry=retry, timeout=PROBE_DEADLINE_S)
            blob.delete(retry=retry, timeout=PROBE_DEADLINE_S)

    def describe(self) -> str:
        where = f"GCS bucket {self.bucket_name}" + (f", prefix {self.prefix}/" if self.prefix else "")
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        return f"{where} (emulator at {emulator})" if emulator else where


# --------------------------------------------------------------------------


def open_storage(url: str, *, base_dir: Path | None = None) -> Storage:
    """The backend for ``url``: ``file:///abs/path``, ``file://./rel/path``
    (relative to ``base_dir``, default the current directory), ``gs://bucket``
    or ``gs://bucket/prefix``. Touches neither disk nor network."""
    if url.startswith("file://"):
        rest = url[len("file://"):]
        if not rest:
            raise ConfigError(f"storage URL {url!r} names no folder")
        path = Path(rest)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return LocalStorage(path)
    if url.startswith("gs://"):
        bucket, _, prefix = url[len("gs://"):].partition("/")
        prefix = prefix.rstrip("/")
        if not _BUCKET_NAME.fullmatch(bucket):
            raise ConfigError(f"storage URL {url!r} has an invalid bucket name")
        if prefix:
            try:
                validate_key(prefix)
            except StorageError as exc:
                raise ConfigError(f"storage URL {url!r} has an invalid prefix: {exc.message}") from exc
        return GCSStorage(bucket, prefix)
    raise ConfigError(f"storage URL {url!r} must start with file:// or gs://")
