"""A backup's dump object: the pg_dump archive as stored — plain, or
encrypted with age for ``backup.age_recipients`` — and read back.

Writing needs only the public keys (``seal``); reading an encrypted backup
needs an identity from the environment (``Archive``). Whatever reads a dump
— verify, the restore drill, restore, the table-of-contents read that plans
a restore — reads it through ``Archive``, which checksums the stored bytes
(what the manifest's ``size`` and ``sha256`` describe) and yields the
archive, so no reader can forget the decryption or the checksum.

A missing identity, or one for none of the recipients the manifest names,
is a ConfigError (exit 2 / HTTP 400) raised before anything is read. An
identity of a recipient whose header still does not open, or a chunk that
fails its authentication, means the stored object was changed:
``DamagedArchive`` (a refusal), after the rest of the object is read so the
message can say whether its SHA-256 still matches.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Generator, Iterable, Iterator

from safesync.shared.config import Settings
from safesync.shared.errors import ConfigError, Refused

from .manifest import BackupInfo
from .pgproc import CHUNK, Progress

if TYPE_CHECKING:  # agefile imports cryptography: only for encrypted backups (a job's start-up time)
    from safesync.shared import agefile


class DamagedArchive(Refused):
    """The stored object is not the age file that was written (a header or
    chunk fails its authentication, or it is truncated)."""


def recipients(settings: Settings) -> list[agefile.Recipient]:
    """Who new backups are encrypted for (none: stored plain)."""
    cfg = settings.config.backup
    if cfg.encrypt != "age":
        return []
    from safesync.shared import agefile

    return agefile.parse_recipients(cfg.age_recipients)


def encryption_record(keys: list[agefile.Recipient]) -> dict[str, Any] | None:
    """The manifest's ``encryption``: public facts only."""
    return {"scheme": "age", "recipients": [key.describe() for key in keys]} if keys else None


def seal(chunks: Iterable[bytes], keys: list[agefile.Recipient]) -> Generator[bytes, None, None]:
    """The stored form of the archive ``chunks``."""
    if not keys:
        yield from chunks
        return
    from safesync.shared import agefile

    yield from agefile.encrypt(chunks, keys)


def _fingerprints(info: BackupInfo) -> str:
    return ", ".join(_recipients_of(info))


def identities_for(settings: Settings, info: BackupInfo) -> list[agefile.Identity]:
    """The environment's identities for reading ``info``. ConfigError when
    there are none, or none is for a recipient the manifest names — decided
    from public keys, before anything is read."""
    from safesync.shared import agefile

    identities = agefile.load_identities(
        settings.env, purpose=f"backup {info.id} is encrypted with age (for {_fingerprints(info)}); reading it"
    )
    if not {i.recipient for i in identities} & set(_recipients_of(info)):
        raise ConfigError(
            f"the age identity does not open backup {info.id}: it is encrypted for {_fingerprints(info)}, "
            f"the identity given is for {', '.join(i.recipient for i in identities)}; "
            f"set {agefile.IDENTITY_ENV} or {agefile.IDENTITY_FILE_ENV} to the matching private key",
            {"backup": info.id, "recipients": (info.encryption or {}).get("recipients", [])},
        )
    return identities


def require_identity(settings: Settings, info: BackupInfo) -> None:
    """Refuse now if this environment cannot read ``info``: a missing or
    wrong identity is the caller's error (ConfigError), never a failed
    verification recorded against a sound backup, nor a restore begun."""
    if info.encrypted:
        identities_for(settings, info)


class Archive:
    """One read of ``info``'s dump object. Iterating yields the pg_dump
    archive; ``size`` and ``sha256`` are those of the stored bytes read so
    far (all of them once the iteration ended). An identity for none of the
    manifest's recipients is refused here, before anything is read."""

    def __init__(self, settings: Settings, info: BackupInfo, *, progress: Progress | None = None) -> None:
        self.settings, self.info, self.progress = settings, info, progress
        self.identities = identities_for(settings, info) if info.encrypted else None
        self.size = 0
        self._hasher = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    def as_written(self) -> bool:
        return self.size == self.info.size and self.sha256 == self.info.sha256

    def _stored(self, stream: Any) -> Iterator[bytes]:
        while chunk := stream.read(CHUNK):
            self._hasher.update(chunk)
            self.size += len(chunk)
            if self.progress:
                self.progress(self.size)
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        with self.settings.storage.open(self.info.dump_key) as stream:
            stored = self._stored(stream)
            if self.identities is None:
                yield from stored
                return
            from safesync.shared import agefile

            try:
                yield from agefile.decrypt(stored, self.identities)
            except agefile.AgeError as exc:
                for _ in stored:  # the rest of the object: its checksum says whether it changed
                    pass
                written = "" if self.as_written() else (
                    f"; its stored bytes are not the ones written (sha256 {self.sha256[:12]}… vs {self.info.sha256[:12]}…)"
                )
                # The identity is one the backup was written for, so a header
                # it cannot open was changed (or its manifest was).
                reason = "the header does not open with the identity of its recipient" if isinstance(exc, agefile.NoMatchingIdentity) else str(exc)
                raise DamagedArchive(f"backup {self.info.id} is damaged: {reason}{written}", {"backup": self.info.id}) from None


def check_stored(settings: Settings, info: BackupInfo) -> None:
    """Refuse (nothing touched) unless the stored dump object has exactly
    the manifest's size and SHA-256: one read of the stored bytes, no
    decryption.

    The restore's held-back last chunk keeps pg_restore from committing a
    *damaged* copy of the archive written, but not a *different* archive:
    another, smaller dump stored under this backup's name (a mixed-up file
    from cold storage) is complete long before the held-back chunk, and
    pg_restore commits it. So a restore proves the whole object first."""
    hasher = hashlib.sha256()
    size = 0
    with settings.storage.open(info.dump_key) as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > info.size:
                break  # longer than written: no need to read the rest
            hasher.update(chunk)
    if size != info.size or hasher.hexdigest() != info.sha256:
        longer = " or more" if size > info.size else ""
        raise Refused(
            f"backup {info.id} does not match its manifest (stored: {size}{longer} bytes, sha256 "
            f"{hasher.hexdigest()[:12]}…; manifest: {info.size} bytes, {info.sha256[:12]}…): nothing was restored",
            {"backup": info.id},
        )


def _recipients_of(info: BackupInfo) -> list[str]:
    return [r["fingerprint"] for r in (info.encryption or {}).get("recipients", [])]
