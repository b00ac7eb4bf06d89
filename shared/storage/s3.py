"""S3-compatible object storage (``s3://bucket/prefix``) through boto3: AWS
S3, Cloudflare R2, MinIO and any endpoint ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) names. Credentials and region come from boto3's
usual chain (environment, profile, instance role).

- A put that fits one part is one PutObject; a longer stream is a multipart
  upload, completed only after the last byte and aborted
  (AbortMultipartUpload) on any failure, so an interrupted put leaves no
  object. Parts a SIGKILL leaves behind are invisible, but S3 keeps (and
  bills) them until aborted: ``cleanup_temp`` aborts stale ones.
- Every body carries our CRC-64/NVME (per part, and the whole object's on
  completion as a FULL_OBJECT checksum), which S3 checks before accepting
  it. Afterwards the stored size and checksum are read back and must equal
  ours; a mismatch removes the object and fails the put.
- Create-only puts send ``If-None-Match: *`` on PutObject or
  CompleteMultipartUpload: S3 decides when the object would become visible
  (412 when another writer won, 409 while one is still completing). A 412,
  or a 404 NoSuchUpload answering a retried completion, is checked against
  what is stored: a retry of a put that did land is recognised as ours.
  Conditional puts send ``If-Match: <the ETag read>`` the same way (412 when
  replaced, 404 when deleted meanwhile:
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
- Reads are one GET; the CRC-64/NVME of the bytes is checked at the end.

boto3 is imported on first use: a cold start that never touches S3 does not
pay for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, ContextManager
from urllib.parse import urlsplit

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
from .checked import CheckedReader, Crc64Nvme, checksum_of

log = get_logger("storage")

PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last
PART_GROWTH = 1000  # parts get PART_SIZE bigger every 1000 parts: 10,000 parts hold 440 GiB
MAX_PARTS = 10_000
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def part_size(number: int) -> int:
    """The size of part ``number`` (1-based). It grows so a stream of unknown
    length fits S3's 10,000 parts while memory stays at one part."""
    return PART_SIZE * (1 + (number - 1) // PART_GROWTH)


def endpoint() -> str | None:
    """The custom endpoint boto3 will use, if any (it reads the same variables)."""
    return next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)


@contextmanager
def _s3_errors(action: str, key: str, *, missing: str = "object") -> Iterator[None]:
    """Translate botocore errors. ``missing`` says what a 404 means here:
    ``"object"`` -> NotFoundError, anything else -> StorageError. A 412 is
    always a lost create-only race: only create-only puts send a condition."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "PreconditionFailed" or status == 412:
            raise exists_error(key) from exc
        if code == "NoSuchBucket":
            raise StorageError(f"S3 failed to {action} {key!r}: bucket not found", detail={"key": key}) from exc
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            if missing == "object":
                raise NotFoundError(f"object {key!r} not found", detail={"key": key}) from exc
            raise StorageError(f"S3 failed to {action} {key!r}: {missing}", detail={"key": key}) from exc
        reason = f"{code or status}: {error.get('Message', '')}".rstrip(": ")
        raise StorageError(f"S3 failed to {action} {key!r}: {reason}", detail={"key": key}) from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 failed to {action} {key!r}: {exc}", detail={"key": key}) from exc


class _Parts:
    """The data as upload parts of ``part_size(n)`` bytes (the last one
    shorter, possibly empty), counting size and whole-object checksum on the
    way. Source errors propagate untranslated, as for every backend."""

    def __init__(self, data: Data) -> None:
        self._chunks = as_chunks(data)
        self.size = 0
        self.checksum = Crc64Nvme()

    def __iter__(self) -> Iterator[bytes]:
        buf = bytearray()
        number = 1
        for chunk in self._chunks:
            self.checksum.update(chunk)
            self.size += len(chunk)
            buf += chunk
            while len(buf) >= part_size(number):
                with memoryview(buf) as view:
                    part = bytes(view[: part_size(number)])
                del buf[: len(part)]
                number += 1
                yield part
                del part  # memory: only the part being uploaded is held
        if buf or number == 1:
            yield bytes(buf)


class S3Storage(Storage):
    """Objects are keys ``<prefix>/<key>`` in ``bucket``."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket_name = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._clients: dict[str, Any] = {}  # boto3 S3 clients by purpose
        self._lock = threading.Lock()

    def _client(self, purpose: str = "default") -> Any:
        """A client, made on first use (boto3 clients are thread-safe; making
        one is not). The ``probe`` client gives up within seconds."""
        with self._lock:
            if purpose not in self._clients:
                with _s3_errors("connect to", self.url, missing="bucket not found"):
                    self._clients[purpose] = self._make_client(probe=purpose == "probe")
            return self._clients[purpose]

    @staticmethod
    def _make_client(*, probe: bool) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            # Every S3-compatible service takes path-style requests; AWS
            # itself prefers virtual-hosted ones.
            s3={"addressing_style": "path" if endpoint() else "virtual"},
            retries={"mode": "standard", "max_attempts": 2 if probe else 5},
            connect_timeout=PROBE_DEADLINE_S if probe else 20,
            read_timeout=PROBE_DEADLINE_S if probe else 120,
            # We send and check checksums ourselves (see the module doc).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.session.Session().client("s3", config=config)

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def bucket_settings(self) -> dict[str, Any]:
        """Versioning and lifecycle of the bucket (what the doctor reports:
        they are the safety net behind prune)."""
        from botocore.exceptions import ClientError

        client = self._client()
        with _s3_errors("read settings of", self.url, missing="bucket not found"):
            versioning = client.get_bucket_versioning(Bucket=self.bucket_name).get("Status") == "Enabled"
            try:
                rules = client.get_bucket_lifecycle_configuration(Bucket=self.bucket_name).get("Rules", [])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
        return {"versioning": versioning, "lifecycle_rules": len(rules)}

    def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str = "application/octet-stream",
        overwrite: bool = True,
        if_version: str | None = None,
    ) -> ObjectInfo:
        try:
            return self._put(key, data, content_type, overwrite, if_version)
        except (ObjectExists, NotFoundError) as exc:
            if if_version is not None:  # 412: another version is stored; 404: the object is gone
                raise changed_error(key) from None
            if isinstance(exc, NotFoundError):
                raise StorageError(f"S3 failed to write {key!r}: its upload was aborted", detail={"key": key}) from exc
            raise

    def _put(self, key: str, data: Data, content_type: str, overwrite: bool, if_version: str | None) -> ObjectInfo:
        name = self._name(validate_key(key))
        if not overwrite and self.exists(key):
            raise exists_error(key)
        if if_version is not None:
            condition = {"IfMatch": if_version}
        else:
            condition = {} if overwrite else {"IfNoneMatch": "*"}
        parts = _Parts(data)
        chunks = iter(parts)
        # A list, so the first part is not held once uploaded (see _multipart).
        head = [next(chunks)]
        try:
            if len(head[0]) < part_size(1):  # the stream ended within one part
                body = head.pop()
                with _s3_errors("write", key):  # 404 only with If-Match (NoSuchBucket is its own error)
                    etag = self._client().put_object(
                        Bucket=self.bucket_name, Key=name, Body=body, ContentType=content_type,
                        ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=checksum_of(Crc64Nvme, body),
                        **condition,
                    )["ETag"]
            else:
                etag = self._multipart(key, name, head, chunks, parts, content_type, condition)
        except (ObjectExists, NotFoundError):
            # 412, or 404 at completion (NoSuchUpload: "aborted or completed"):
            # either way an earlier attempt of this very request whose answer
            # was lost may have landed it.
            found = self._holds(key, name, parts.size, parts.checksum.b64())
            if found is None:
                raise
            etag = found
        return self._check_stored(key, name, parts.size, parts.checksum.b64(), etag)

    def _multipart(
        self,
        key: str,
        name: str,
        head: list[bytes],
        rest: Iterator[bytes],
        parts: _Parts,
        content_type: str,
        condition: dict[str, str],
    ) -> str:
        """Upload the parts and complete; returns the new object's ETag."""
        client = self._client()
        with _s3_errors("write", key, missing="bucket not found"):
            upload_id = client.create_multipart_upload(
                Bucket=self.bucket_name, Key=name, ContentType=content_type,
                ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT",
            )["UploadId"]
        try:
            done = []
            number = 0
            for body in _drain(head, rest):
                number += 1
                if number > MAX_PARTS:
                    raise StorageError(f"object {key!r} is too large for one S3 upload", detail={"key": key})
                crc = checksum_of(Crc64Nvme, body)
                with _s3_errors("write", key, missing="upload was aborted"):
                    answer = client.upload_part(
                        Bucket=self.bucket_name, Key=name, UploadId=upload_id, PartNumber=number, Body=body,
                        ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=crc,
                    )
                done.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC64NVME": crc})
                del body  # memory: not held while the next part is read
            with _s3_errors("write", key):  # NotFoundError: see put
                return client.complete_multipart_upload(
                    Bucket=self.bucket_name, Key=name, UploadId=upload_id, MultipartUpload={"Parts": done},
                    ChecksumType="FULL_OBJECT", ChecksumCRC64NVME=parts.checksum.b64(), **condition,
                )["ETag"]
        except BaseException:
            # Also on KeyboardInterrupt and a lost race: no parts left behind.
            self._abort(name, upload_id, key)
            raise

    def _abort(self, name: str, upload_id: str, key: str) -> None:
        """Best effort: parts that outlive this are aborted by cleanup_temp."""
        try:
            self._client().abort_multipart_upload(Bucket=self.bucket_name, Key=name, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - must not mask the original error
            log.warning("could not abort S3 multipart upload", key=key, error=str(exc))

    def _head(self, name: str, key: str, missing: str = "object", **condition: str) -> dict[str, Any]:
        with _s3_errors("check", key, missing=missing):
            return self._client().head_object(Bucket=self.bucket_name, Key=name, ChecksumMode="ENABLED", **condition)

    def _holds(self, key: str, name: str, size: int, checksum: str) -> str | None:
        """A conditional put answered 412: did an earlier attempt of this very
        request land (a retry after a lost answer), or did another writer
        win? Same size and CRC-64/NVME means the stored object is ours: its
        ETag, else None."""
        try:
            head = self._head(name, key)
        except NotFoundError:
            return None
        ours = head.get("ContentLength") == size and head.get("ChecksumCRC64NVME") == checksum
        return head["ETag"] if ours else None

    def _check_stored(self, key: str, name: str, size: int, checksum: str, etag: str) -> ObjectInfo:
        """What S3 stored must be what we sent. S3 already refused a body
        whose checksum differs; this also catches a service that ignores
        checksums and a completion whose parts do not add up. Only the
        version our put made (``etag``) is checked: a later writer's object
        under the key is theirs to keep (412 here), not a corrupt store."""
        try:
            head = self._head(name, key, missing="object vanished right after upload", IfMatch=etag)
        except ObjectExists:  # 412: replaced since, as any later overwrite may
            return ObjectInfo(key, size, datetime.now(timezone.utc))
        stored = head.get("ChecksumCRC64NVME")
        if head.get("ContentLength") != size or (stored is not None and stored != checksum):
            with _s3_errors("delete", key):
                self._client().delete_object(Bucket=self.bucket_name, Key=name, IfMatch=head["ETag"])
            raise StorageError(
                f"S3 stored {head.get('ContentLength')} bytes with CRC64NVME {stored} for {key!r}, "
                f"but {size} bytes with {checksum} were sent; the object was removed",
                detail={"key": key},
            )
        return ObjectInfo(key, size, head["LastModified"].astimezone(timezone.utc))

    def open_versioned(self, key: str) -> tuple[ContextManager[BinaryIO], str]:
        """One GET streams one version of the object (its ETag is the
        version), whatever is written meanwhile; its CRC-64/NVME is checked
        at the end (objects others uploaded with a composite or another
        checksum: size only)."""
        name = self._name(validate_key(key))
        with _s3_errors("read", key):
            answer = self._client().get_object(Bucket=self.bucket_name, Key=name, ChecksumMode="ENABLED")
        full = answer.get("ChecksumType") in (None, "FULL_OBJECT")
        reader = CheckedReader(
            key,
            answer["Body"],
            size=int(answer["ContentLength"]),
            checksum=Crc64Nvme(),
            expected=answer.get("ChecksumCRC64NVME") if full else None,
            errors=lambda: _s3_errors("read", key, missing="object vanished while reading"),
        )
        return reader, answer["ETag"]  # type: ignore[return-value]

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        root = f"{self.prefix}/" if self.prefix else ""
        found = []
        with _s3_errors("list", validate_prefix(prefix), missing="bucket not found"):
            pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name, Prefix=root + prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(root):]
                    try:
                        validate_key(key)
                    except StorageError:  # e.g. "folder/" placeholders made by consoles
                        continue
                    found.append(ObjectInfo(key, int(item["Size"]), item["LastModified"].astimezone(timezone.utc)))
        return sorted(found, key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        try:
            self._head(self._name(validate_key(key)), key)
        except NotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        """S3 answers a delete of a missing key with success, as we want."""
        name = self._name(validate_key(key))
        with _s3_errors("delete", key):
            self._client().delete_object(Bucket=self.bucket_name, Key=name)

    def cleanup_temp(self, older_than: timedelta) -> int:
        """Abort multipart uploads under our prefix begun before
        ``older_than`` ago: what a killed put left (running ones are spared)."""
        root = f"{self.prefix}/" if self.prefix else ""
        cutoff = datetime.now(timezone.utc) - older_than
        client = self._client()
        removed = 0
        with _s3_errors("list uploads under", root or "/", missing="bucket not found"):
            pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket_name, Prefix=root)
            stale = [u for page in pages for u in page.get("Uploads", []) if u["Initiated"] < cutoff]
        for upload in stale:
            with _s3_errors("abort an upload of", upload["Key"], missing="upload already gone"):
                client.abort_multipart_upload(Bucket=self.bucket_name, Key=upload["Key"], UploadId=upload["UploadId"])
            removed += 1
        return removed

    def probe(self, key: str) -> None:
        """Like the base probe, on a client that gives up within seconds: a
        dead endpoint must fail a run fast, not after minutes of retries."""
        name = self._name(validate_key(key))
        client = self._client("probe")
        with _s3_errors("write a probe to", key, missing="bucket not found"):
            client.put_object(
                Bucket=self.bucket_name, Key=name, Body=b"probe",
                ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=checksum_of(Crc64Nvme, b"probe"),
            )
            client.delete_object(Bucket=self.bucket_name, Key=name)

    def describe(self) -> str:
        where = f"S3 bucket {self.bucket_name}" + (f", prefix {self.prefix}/" if self.prefix else "")
        custom = endpoint()
        if not custom:
            return where
        parts = urlsplit(custom)  # without any user:password@ in it
        return f"{where} at {parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _drain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """``head``'s items (popped, so nothing keeps them alive once the caller
    is done with them), then ``rest``: constant memory of about two parts."""
    while head:
        yield head.pop(0)
    yield from rest
