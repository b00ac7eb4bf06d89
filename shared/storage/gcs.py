"""Google Cloud Storage (``gs://bucket/prefix``) through google-cloud-storage.

Streams go up as resumable uploads, finalised only after the last byte, so
an interrupted put leaves no object; whole buffers in one request. Both carry
our CRC32C, which GCS checks before it accepts the object. Create-only writes
use ``ifGenerationMatch=0`` and conditional ones ``ifGenerationMatch=<the
generation read>``; GCS evaluates both when the object would become visible
(https://cloud.google.com/storage/docs/request-preconditions).

google-cloud-storage is imported only when a GCS backend first talks to GCS:
importing it costs a noticeable part of a cold start, and jobs that only use
a local folder should not pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, ContextManager

from ..errors import NotFoundError, ObjectExists, StorageError
from ..log import get_logger
from .base import (
    PROBE_DEADLINE_S,
    Data,
    ObjectInfo,
    Storage,
    as_chunks,
    changed_error,
    exists_error,
    validate_key,
    validate_prefix,
)
from .checked import CheckedReader, Crc32c

if TYPE_CHECKING:  # pragma: no cover - typing only
    from google.cloud.storage import Blob, Bucket, Client

log = get_logger("storage")

GCS_CHUNK = 8 * 1024 * 1024  # resumable upload/download piece; a multiple of 256 KiB


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
    except api.PreconditionFailed as exc:  # only create-only puts send a precondition
        raise exists_error(key) from exc
    except api.NotFound as exc:
        if missing == "object":
            raise NotFoundError(f"object {key!r} not found", detail={"key": key}) from exc
        raise StorageError(f"GCS failed to {action} {key!r}: {missing}", detail={"key": key}) from exc
    except DataCorruption as exc:
        raise StorageError(f"GCS checksum mismatch while trying to {action} {key!r}", detail={"key": key}) from exc
    except InvalidResponse as exc:  # resumable uploads report HTTP errors this way
        if getattr(exc.response, "status_code", None) == 412:
            raise exists_error(key) from exc
        raise StorageError(f"GCS failed to {action} {key!r}: {exc}", detail={"key": key}) from exc
    except (api.GoogleAPIError, GoogleAuthError, RequestException) as exc:
        raise StorageError(f"GCS failed to {action} {key!r}: {exc}", detail={"key": key}) from exc



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
        self,
        key: str,
        data: Data,
        *,
        content_type: str = "application/octet-stream",
        overwrite: bool = True,
        if_version: str | None = None,
    ) -> ObjectInfo:
        """Retrying is safe: a put only ever replaces an object with the same
        content, and a conditional put whose first attempt did land is
        recognised by its CRC32C (see ``_holds``)."""
        try:
            return self._put(key, data, content_type, overwrite, if_version)
        except (ObjectExists, NotFoundError):
            if if_version is None:
                raise
            # 412: another generation is stored; 404: the object is gone.
            raise changed_error(key) from None

    def _put(self, key: str, data: Data, content_type: str, overwrite: bool, if_version: str | None) -> ObjectInfo:
        from google.cloud.storage.retry import DEFAULT_RETRY

        name = self._name(validate_key(key))
        blob = self._bucket().blob(name)
        if not overwrite and self.exists(key):
            raise exists_error(key)
        if if_version is not None:
            condition = {"if_generation_match": int(if_version)}
        else:
            condition = {} if overwrite else {"if_generation_match": 0}
        missing = "bucket not found" if if_version is None else "object"
        crc = Crc32c()
        size = 0
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                payload = bytes(data)
                crc.update(payload)
                size = len(payload)
                with _gcs_errors("write", key, missing=missing):
                    blob.upload_from_string(
                        payload, content_type=content_type, checksum="crc32c", retry=DEFAULT_RETRY, **condition
                    )
                return self._info(key, blob)
            chunks = as_chunks(data)
            with _gcs_errors("write", key, missing=missing):
                writer = blob.open(
                    "wb",
                    chunk_size=GCS_CHUNK,
                    content_type=content_type,
                    checksum="crc32c",
                    retry=DEFAULT_RETRY,
                    **condition,
                )
            try:
                # As for local files: source errors propagate untranslated.
                for chunk in chunks:
                    crc.update(chunk)
                    size += len(chunk)
                    with _gcs_errors("write", key, missing=missing):
                        writer.write(chunk)
                with _gcs_errors("write", key, missing=missing):
                    writer.close()
            except BaseException:
                self._abort(writer, key)
                raise
        except ObjectExists:
            if not self._holds(key, name, size, crc.b64()):
                raise
        with _gcs_errors("write", key, missing="object vanished right after upload"):
            blob.reload()  # the writer does not report the final metadata
        return self._info(key, blob)

    def _holds(self, key: str, name: str, size: int, crc32c: str) -> bool:
        """A conditional upload answered 412: did an earlier attempt of this
        very upload land (a retry after a lost answer), or did another writer
        win? Same size and CRC32C means the stored object is ours."""
        with _gcs_errors("check", key):
            blob = self._bucket().get_blob(name)
        return blob is not None and blob.size == size and blob.crc32c == crc32c

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

    def open_versioned(self, key: str) -> tuple[ContextManager[BinaryIO], str]:
        """Stream the current generation (the version); a later overwrite cannot mix into
        the read (it fails instead), and CRC32C is verified at the end.
        (BlobReader fetches ranges, for which the library cannot check
        checksums, so the CheckedReader checks the whole stream.)"""
        name = self._name(validate_key(key))
        with _gcs_errors("read", key):
            blob = self._bucket().get_blob(name)
        if blob is None:
            raise NotFoundError(f"object {key!r} not found", detail={"key": key})
        # raw_download: stored bytes exactly as written (no transcoding), so
        # the checksum applies. The reader is pinned to this generation: a
        # 404 mid-read means it was overwritten or deleted.
        raw = blob.open("rb", chunk_size=GCS_CHUNK, raw_download=True)
        reader = CheckedReader(
            key,
            raw,
            size=int(blob.size or 0),
            checksum=Crc32c(),
            expected=blob.crc32c,
            errors=lambda: _gcs_errors("read", key, missing="object was replaced or deleted while reading"),
        )
        return reader, str(blob.generation)  # type: ignore[return-value]

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        root = f"{self.prefix}/" if self.prefix else ""
        with _gcs_errors("list", validate_prefix(prefix), missing="bucket not found"):
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
