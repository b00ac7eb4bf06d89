"""Storage layer: the same behaviour on a local folder and on GCS (through a
real fake-gcs-server emulator), plus the properties backups rely on:
all-or-nothing writes, no path traversal, constant-memory streaming."""

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

from safesync.shared.errors import ConfigError, NotFoundError, StorageError
from safesync.shared.storage import GCSStorage, LocalStorage, Storage, open_storage
from tests.gcs_emulator import gcs_bucket_url, gcs_emulator  # noqa: F401

MiB = 1 << 20


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each backend-neutral test runs once per backend."""
    if request.param == "local":
        return open_storage(f"file://{tmp_path}/store")
    return open_storage(request.getfixturevalue("gcs_bucket_url"))


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
    for bad in ["s3://bucket", "gs://", "gs://Bad_Bucket", "gs://bucket/../x", "file://"]:
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


def test_gcs_library_not_imported_until_used() -> None:
    """Cold start: opening a gs:// storage must not import google-cloud-storage."""
    code = (
        "import sys; from safesync.shared.storage import open_storage; "
        "open_storage('gs://bucket/p').describe(); "
        "assert 'google.cloud.storage' not in sys.modules, 'imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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
    """Run in a fresh interpreter so peak RSS reflects only this transfer."""
    total_mib = 200
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
