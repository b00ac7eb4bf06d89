"""Object storage behind one streaming interface: a local folder
(``file://``), a Google Cloud Storage bucket (``gs://``) or an S3-compatible
bucket (``s3://``), one backend per module. ``base`` holds the contract every
backend keeps: all-or-nothing and optionally create-only writes, constant
memory streaming, keys that cannot escape the storage root.

Cloud client libraries are imported only when a backend first talks to its
service, so opening a storage costs nothing at a cold start.
"""

from .base import MAX_SMALL_OBJECT, READ_CHUNK, Data, ObjectInfo, Storage, validate_key
from .gcs import GCSStorage
from .local import LocalStorage
from .s3 import S3Storage
from .urls import open_storage

__all__ = [
    "MAX_SMALL_OBJECT",
    "READ_CHUNK",
    "Data",
    "GCSStorage",
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "open_storage",
    "validate_key",
]
