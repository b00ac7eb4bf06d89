"""Storage URLs → backends: ``file://``, ``gs://`` and ``s3://``."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError, StorageError
from .base import Storage, validate_key
from .gcs import GCSStorage
from .local import LocalStorage
from .s3 import S3Storage

_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")  # fullmatch
# S3's rules (3-63 characters: lower case, digits, hyphens and single dots)
# also cover R2's and MinIO's.
_S3_BUCKET = re.compile(r"(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # fullmatch


def _bucket_and_prefix(url: str, scheme: str, pattern: re.Pattern[str]) -> tuple[str, str]:
    bucket, _, prefix = url[len(scheme):].partition("/")
    prefix = prefix.rstrip("/")
    if not pattern.fullmatch(bucket):
        raise ConfigError(f"storage URL {url!r} has an invalid bucket name")
    if prefix:
        try:
            validate_key(prefix)
        except StorageError as exc:
            raise ConfigError(f"storage URL {url!r} has an invalid prefix: {exc.message}") from exc
    return bucket, prefix


def open_storage(url: str, *, base_dir: Path | None = None) -> Storage:
    """The backend for ``url``: ``file:///abs/path``, ``file://./rel/path``
    (relative to ``base_dir``, default the current directory),
    ``gs://bucket[/prefix]`` or ``s3://bucket[/prefix]``. Touches neither
    disk nor network."""
    if url.startswith("file://"):
        rest = url[len("file://"):]
        if not rest:
            raise ConfigError(f"storage URL {url!r} names no folder")
        path = Path(rest)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return LocalStorage(path)
    if url.startswith("gs://"):
        return GCSStorage(*_bucket_and_prefix(url, "gs://", _GCS_BUCKET))
    if url.startswith("s3://"):
        return S3Storage(*_bucket_and_prefix(url, "s3://", _S3_BUCKET))
    raise ConfigError(f"storage URL {url!r} must start with file://, gs:// or s3://")
