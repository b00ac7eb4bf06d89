"""Whole-object checksums, and a reader that verifies one at end of stream.

Cloud reads stream an object in pieces (GCS) or over one long response (S3);
neither client library can check a whole-object checksum for us across such
a stream, so we check size and checksum ourselves once the last byte is read.
A mismatch fails the read, so a caller that streams into ``pg_restore`` holds
back its last chunk until then and never commits a corrupt dump.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any, ContextManager, Protocol

from ..errors import StorageError


class Checksum(Protocol):
    """A running checksum; ``name`` as the service spells the algorithm."""

    name: str

    def update(self, data: bytes | bytearray | memoryview) -> None: ...

    def b64(self) -> str:
        """The checksum base64-encoded, as GCS and S3 report it."""
        ...


class Crc32c:
    """CRC32C, the checksum GCS stores for every object."""

    name = "CRC32C"

    def __init__(self) -> None:
        import google_crc32c

        self._crc = google_crc32c.Checksum()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._crc.update(data)

    def b64(self) -> str:
        return base64.b64encode(self._crc.digest()).decode("ascii")


class Crc64Nvme:
    """CRC-64/NVME: the one S3 checksum that AWS, R2 and MinIO all keep as a
    full-object value for multipart uploads (CRC32C is only a checksum of
    part checksums on R2)."""

    name = "CRC64NVME"

    def __init__(self) -> None:
        from awscrt.checksums import crc64nvme

        self._fn = crc64nvme
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._value = self._fn(data, self._value)

    def b64(self) -> str:
        return base64.b64encode(self._value.to_bytes(8, "big")).decode("ascii")


def checksum_of(make: Callable[[], Checksum], data: bytes | bytearray | memoryview) -> str:
    """The base64 checksum of one buffer."""
    checksum = make()
    checksum.update(data)
    return checksum.b64()


class CheckedReader(io.BufferedIOBase):
    """Sequential reader over ``raw`` (anything with ``read(n)`` and
    ``close()``) that raises StorageError at end of stream unless exactly
    ``size`` bytes came and, when ``expected`` is given, their checksum
    equals it. ``errors`` translates the raw stream's own failures."""

    def __init__(
        self,
        key: str,
        raw: Any,
        *,
        size: int,
        checksum: Checksum | None,
        expected: str | None,
        errors: Callable[[], ContextManager[None]],
    ) -> None:
        self._key = key
        self._raw = raw
        self._size = size
        self._checksum = checksum if expected is not None else None
        self._expected = expected
        self._errors = errors
        self._seen = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        with self._errors():
            data = self._raw.read(size) if size >= 0 else self._raw.read()
        if self._checksum is not None:
            self._checksum.update(data)
        self._seen += len(data)
        # Known size: verify on the last byte, sparing a read past the end.
        if self._seen >= self._size or (not data and size != 0):
            self._verify()
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        if self._seen != self._size:
            raise StorageError(
                f"object {self._key!r} ended after {self._seen} of {self._size} bytes",
                detail={"key": self._key},
            )
        if self._checksum is not None:
            actual = self._checksum.b64()
            if actual != self._expected:
                raise StorageError(
                    f"{self._checksum.name} mismatch reading {self._key!r}: got {actual}, stored {self._expected}",
                    detail={"key": self._key},
                )

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

