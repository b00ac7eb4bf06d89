"""A local folder (``file://``): objects are files, keys relative paths.

A put writes ``.<name>.tmp-<uuid>`` beside the target, fsyncs it and only
then makes it the object: ``rename`` when it may replace an old one, ``link``
when it must not (``link`` fails if the name exists, atomically, so two
create-only writers can never both win). A version is the file's inode,
mtime and size: every put makes a new file, so a replaced object has a new
one. A conditional put compares it just before its rename: POSIX has no
compare-and-rename, so a change in that instant (microseconds, against a
network round trip's window on the cloud backends) can still be missed.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, ContextManager

from ..errors import NotFoundError, StorageError
from .base import (
    TEMP_NAME,
    Data,
    ObjectInfo,
    Storage,
    as_chunks,
    changed_error,
    exists_error,
    validate_key,
    validate_prefix,
)


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

    @staticmethod
    def _version(st: os.stat_result) -> str:
        return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def _still(self, key: str, path: Path, version: str) -> None:
        """Raise ObjectChanged unless ``path`` still is ``version``."""
        try:
            current = self._version(path.stat())
        except (FileNotFoundError, NotADirectoryError):
            raise changed_error(key) from None
        if current != version:
            raise changed_error(key)

    def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str = "application/octet-stream",
        overwrite: bool = True,
        if_version: str | None = None,
    ) -> ObjectInfo:
        """Readers see the old object or the complete new one, never a prefix
        of it. ``content_type`` has no place on a plain file and is ignored."""
        path = self._path(key)
        if not overwrite and self.exists(key):
            raise exists_error(key)
        if if_version is not None:
            self._still(key, path, if_version)  # before any byte is written
        chunks = as_chunks(data)
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
            if if_version is not None:
                self._still(key, path, if_version)
            with _local_errors("write", key):
                if overwrite:
                    os.replace(tmp, path)
                else:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise exists_error(key) from None
                _fsync_dir(path.parent)
                return self._info(key, path.stat())
        finally:
            # Also on KeyboardInterrupt: never leave a temp file we can remove
            # (after a link the temp name is a second name of the object).
            tmp.unlink(missing_ok=True)

    def open_versioned(self, key: str) -> tuple[ContextManager[BinaryIO], str]:
        path = self._path(key)
        with _local_errors("read", key):
            stream = open(path, "rb")  # noqa: SIM115 - the caller's `with` closes it
        try:
            return stream, self._version(os.fstat(stream.fileno()))  # of the file opened, not of the name
        except OSError:
            stream.close()
            raise

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        validate_prefix(prefix)
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
                and not TEMP_NAME.fullmatch(entry.name)
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
                if not TEMP_NAME.fullmatch(name):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:  # finished or cleaned meanwhile
                    continue
        return removed
