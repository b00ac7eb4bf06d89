"""The S3 emulator is at least as strict as S3 for every rule safesync's S3
backend relies on. Each test names the rule and where AWS documents it
(Amazon S3 User Guide / API Reference)."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from tests.s3_emulator import s3_client

MiB = 1 << 20


def _crc(data: bytes) -> str:
    from awscrt.checksums import crc64nvme

    return base64.b64encode(crc64nvme(data).to_bytes(8, "big")).decode()


@pytest.fixture
def bucket(s3_emulator: str) -> str:
    name = f"rules-{uuid.uuid4().hex[:16]}"
    s3_client().create_bucket(Bucket=name)
    return name


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_a_body_that_does_not_match_its_checksum_is_refused(bucket: str) -> None:
    """User Guide, "Checking object integrity in Amazon S3": S3 calculates the
    checksum of the data it receives and rejects the request when it differs
    from the one provided (PutObject and UploadPart)."""
    client = s3_client()
    with pytest.raises(ClientError) as put:
        client.put_object(Bucket=bucket, Key="k", Body=b"good", ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=_crc(b"bad"))
    assert _code(put) == (400, "BadDigest")
    upload = client.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT")
    with pytest.raises(ClientError) as part:
        client.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"good",
                           ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=_crc(b"bad"))
    assert _code(part) == (400, "BadDigest")
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    client.put_object(Bucket=bucket, Key="k", Body=b"good", ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=_crc(b"good"))
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"good"


def test_if_none_match_refuses_an_existing_key(bucket: str) -> None:
    """User Guide, "How to prevent object overwrites with conditional writes":
    with If-None-Match: * PutObject and CompleteMultipartUpload fail with 412
    Precondition Failed when the key exists; nothing is replaced."""
    client = s3_client()
    client.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as put:
        client.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert _code(put)[0] == 412
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")
    etag = client.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"third")["ETag"]
    with pytest.raises(ClientError) as complete:
        client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"], IfNoneMatch="*",
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert _code(complete)[0] == 412
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_if_match_writes_only_over_the_etag_named(bucket: str) -> None:
    """User Guide, "How to prevent object overwrites with conditional writes"
    (If-Match, on PutObject and CompleteMultipartUpload): "If the ETag values
    don't match, the operation fails" with 412 Precondition Failed; with no
    object under the key it fails with 404 NoSuchKey. Nothing is written."""
    client = s3_client()
    old = client.put_object(Bucket=bucket, Key="k", Body=b"first")["ETag"]
    current = client.put_object(Bucket=bucket, Key="k", Body=b"second", IfMatch=old)["ETag"]

    def complete(key: str, etag: str) -> None:
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"third")["ETag"]
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], IfMatch=etag,
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})

    for write in (lambda key, etag: client.put_object(Bucket=bucket, Key=key, Body=b"third", IfMatch=etag), complete):
        with pytest.raises(ClientError) as stale:
            write("k", old)
        assert _code(stale) == (412, "PreconditionFailed")
        with pytest.raises(ClientError) as missing:
            write("gone", current)
        assert _code(missing) == (404, "NoSuchKey")
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["k"]
    complete("k", current)  # the ETag stored: the write lands
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"third"


def test_an_upload_completes_once(bucket: str) -> None:
    """API Reference, CompleteMultipartUpload, NoSuchUpload (404): "The
    specified multipart upload does not exist. The upload ID might be
    invalid, or the multipart upload might have been aborted or completed."
    A client retrying a completion whose answer was lost may get it."""
    client = s3_client()
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")
    part = client.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"only")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": part}]}
    client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"], MultipartUpload=parts)
    with pytest.raises(ClientError) as again:
        client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"], MultipartUpload=parts)
    assert _code(again) == (404, "NoSuchUpload")
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"only"


def test_a_listing_comes_in_pages(bucket: str) -> None:
    """API Reference, ListObjectsV2: "Returns some or all (up to 1,000) of the
    objects in a bucket"; IsTruncated and NextContinuationToken lead to the
    rest. The emulator returns few keys per page, so a client that stops
    after the first page is caught with a handful of objects."""
    from tests.s3_emulator import LIST_PAGE

    client = s3_client()
    keys = [f"k{i:02d}" for i in range(LIST_PAGE * 2 + 1)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    first = client.list_objects_v2(Bucket=bucket)
    assert first["IsTruncated"] and len(first["Contents"]) == LIST_PAGE
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    assert [o["Key"] for page in pages for o in page.get("Contents", [])] == keys


def test_head_if_match_names_one_version(bucket: str) -> None:
    """API Reference, HeadObject: with If-Match, "Return the object only if
    its entity tag (ETag) is the same as the one specified; otherwise, return
    a 412 (precondition failed) error"."""
    client = s3_client()
    old = client.put_object(Bucket=bucket, Key="k", Body=b"first")["ETag"]
    new = client.put_object(Bucket=bucket, Key="k", Body=b"second")["ETag"]
    assert client.head_object(Bucket=bucket, Key="k", IfMatch=new)["ContentLength"] == len(b"second")
    with pytest.raises(ClientError) as stale:
        client.head_object(Bucket=bucket, Key="k", IfMatch=old)
    assert _code(stale)[0] == 412


def test_an_unfinished_upload_is_no_object_and_abort_ends_it(bucket: str) -> None:
    """User Guide, "Uploading and copying objects using multipart upload": the
    object exists only after CompleteMultipartUpload; after
    AbortMultipartUpload the upload is gone and no further part is taken
    (S3 answers 404 NoSuchUpload, moto a 500: refused either way)."""
    client = s3_client()
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")
    client.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * (5 * MiB))
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    with pytest.raises(ClientError) as get:
        client.get_object(Bucket=bucket, Key="k")
    assert _code(get) == (404, "NoSuchKey")
    client.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"])
    with pytest.raises(ClientError):
        client.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=2, Body=b"y")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_parts_but_the_last_must_be_at_least_5_mib(bucket: str) -> None:
    """User Guide, "Amazon S3 multipart upload limits": 5 MiB minimum part
    size, the last part excepted (EntityTooSmall at completion)."""
    client = s3_client()
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")
    parts = [
        {"PartNumber": n, "ETag": client.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=n, Body=b"z" * MiB)["ETag"]}
        for n in (1, 2)
    ]
    with pytest.raises(ClientError) as complete:
        client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts})
    assert _code(complete)[1] == "EntityTooSmall"


def test_listed_uploads_say_when_they_began(bucket: str) -> None:
    """API Reference, MultipartUpload: ``Initiated`` is the date and time at
    which the multipart upload was initiated (what cleanup_temp judges
    staleness by)."""
    client = s3_client()
    before = datetime.now(timezone.utc).replace(microsecond=0)
    client.create_multipart_upload(Bucket=bucket, Key="k")
    time.sleep(1.1)
    client.create_multipart_upload(Bucket=bucket, Key="k2")
    after = datetime.now(timezone.utc)
    uploads = sorted(client.list_multipart_uploads(Bucket=bucket)["Uploads"], key=lambda u: u["Key"])
    first, second = (u["Initiated"] for u in uploads)
    assert before <= first < second <= after
    assert second - first >= timedelta(seconds=1)


def test_a_full_object_checksum_covers_every_part(bucket: str) -> None:
    """User Guide, "Checking object integrity", full object checksums: a
    multipart object with ChecksumType FULL_OBJECT reports the CRC-64/NVME of
    its whole content (computed by the emulator from the stored parts)."""
    client = s3_client()
    one, two = b"a" * (5 * MiB), b"b" * 100
    upload = client.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT")
    parts = []
    for n, body in enumerate((one, two), 1):
        etag = client.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=n, Body=body,
                                  ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=_crc(body))["ETag"]
        parts.append({"PartNumber": n, "ETag": etag, "ChecksumCRC64NVME": _crc(body)})
    client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts},
                                     ChecksumType="FULL_OBJECT", ChecksumCRC64NVME=_crc(one + two))
    head = client.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == _crc(one + two)
    assert head["ChecksumType"] == "FULL_OBJECT"
