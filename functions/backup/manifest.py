"""The manifest: the JSON written last that turns uploaded bytes into a
backup, and ``BackupInfo``, its typed view.

A dump without a valid manifest is not a backup (never listed, never
restored). Everything that decides about a backup — its age for retention,
its checksum, the row counts a restore drill compares — is read from here,
never from object names or upload times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from safesync.shared.storage import Storage

from .layout import DUMP_SUFFIXES, BackupName

# 2: the dump may be encrypted (``encryption``). Plain backups still write 1,
# so an older safesync reads them; it refuses a 2 ("newer than this safesync
# understands"): never listed, never restored, and never pruned as a
# leftover, since it could not see the ``.dump.age`` beside it.
MANIFEST_VERSION = 2
PLAIN_MANIFEST_VERSION = 1
ENCRYPTION_SCHEMES = ("age",)
# ``scope``: what the dump holds. "tables": only some tables (content sync's
# ``presync_backup = "content"``), an undo point for them, never a copy of
# the database; retention must not let it stand in for a full backup.
# Manifests written before the field existed are full backups, except
# presync ones: content sync wrote content-only presync backups for a while
# before the field existed, and such a manifest cannot say which it was.
SCOPE_FULL, SCOPE_TABLES = "full", "tables"
SCOPES = (SCOPE_FULL, SCOPE_TABLES)
_REQUIRED = {
    "manifest_version": int,
    "id": str,
    "database": str,
    "kind": str,
    "started_at": str,
    "finished_at": str,
    "size": int,
    "sha256": str,
    "tables": dict,
}


class ManifestError(ValueError):
    """A manifest that cannot be trusted (unparseable, wrong shape, or not
    matching the key it is stored under)."""


@dataclass(frozen=True)
class BackupInfo:
    """One complete backup, as its manifest describes it."""

    id: str
    db: str
    kind: str
    started_at: datetime
    finished_at: datetime
    size: int
    sha256: str
    tables: dict[str, int]
    trigger: dict[str, Any] = field(default_factory=dict)
    pg_dump_version: str = ""
    server_version: str = ""
    compression: str = ""
    encryption: dict[str, Any] | None = None  # {"scheme": "age", "recipients": [{"type", "fingerprint"}]}
    verification: dict[str, Any] | None = None
    drill: dict[str, Any] | None = None
    manifest: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> BackupName:
        return BackupName.parse(self.id)

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def dump_suffix(self) -> str:
        return DUMP_SUFFIXES[self.encrypted]

    @property
    def dump_key(self) -> str:
        return self.name.key(self.dump_suffix)

    @property
    def sha256_key(self) -> str:
        return self.name.sha256_key

    @property
    def manifest_key(self) -> str:
        return self.name.manifest_key

    @property
    def partial(self) -> bool:
        """Only some tables were dumped (``scope = "tables"``), or maybe:
        a presync backup from before ``scope`` (see SCOPE_FULL). Taken for
        full, it could be restored as "latest" and cost a full backup its
        place in retention; taken for partial, a full one is merely kept
        as an undo point and restored only by its id."""
        scope = self.manifest.get("scope")
        if scope is None:
            return self.kind == "presync"
        return scope == SCOPE_TABLES

    @property
    def scope_tables(self) -> list[str]:
        """The tables a partial backup's dump may hold: those it dumped
        (partitions included), or, in a manifest from before that was
        recorded, those it counted."""
        return list(self.manifest.get("dumped_tables") or self.tables)

    @property
    def rows_total(self) -> int:
        return sum(self.tables.values())

    def age_s(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(timezone.utc)) - self.started_at).total_seconds()

    def row(self, now: datetime | None = None) -> dict[str, Any]:
        """A flat summary for CLI tables and JSON reports."""
        verified = self.verification or {}
        drill = self.drill or {}
        return {
            "id": self.id,
            "age": human_age(self.age_s(now)),
            "size": human_bytes(self.size),
            "scope": "partial" if self.partial else "full",
            "tables": len(self.tables),
            "rows": self.rows_total,
            "verified": _outcome(verified),
            "drill": _outcome(drill),
            "encrypted": (self.encryption or {}).get("scheme", ""),
            "trigger": _trigger_text(self.trigger),
        }

    def to_dict(self) -> dict[str, Any]:
        """The manifest as stored (what HTTP callers get for one backup)."""
        return dict(self.manifest)


def _outcome(result: dict[str, Any]) -> str:
    if not result:
        return ""
    return f"{'ok' if result.get('ok') else 'FAILED'} {str(result.get('at', ''))[:10]}"


def _trigger_text(trigger: dict[str, Any]) -> str:
    for key in ("deployment", "schedule_id", "restore_of", "job"):
        if trigger.get(key):
            return f"{key}={trigger[key]}"
    return str(trigger.get("via", ""))


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def human_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


def _parse_time(value: Any, key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{key} is not an ISO timestamp: {value!r}") from None
    if moment.tzinfo is None:
        raise ManifestError(f"{key} has no time zone: {value!r}")
    return moment.astimezone(timezone.utc)


def parse_manifest(data: Any, name: BackupName) -> BackupInfo:
    """Check a manifest read from ``name.manifest_key`` and type it."""
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object")
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise ManifestError(f"manifest field {key!r} is missing or not a {kind.__name__}")
    if data["manifest_version"] > MANIFEST_VERSION:
        raise ManifestError(f"manifest version {data['manifest_version']} is newer than this safesync understands")
    if (data["id"], data["database"], data["kind"]) != (name.id, name.db, name.kind):
        raise ManifestError(f"manifest describes {data['id']!r}, but is stored as {name.id!r}")
    if len(data["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in data["sha256"]):
        raise ManifestError("manifest sha256 is not 64 lowercase hex digits")
    encryption = data.get("encryption")
    if encryption is not None:
        _check_encryption(encryption)
    tables = data["tables"]
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in tables.items()):
        raise ManifestError("manifest tables must map table names to row counts")
    _check_optional(data)
    return BackupInfo(
        id=name.id,
        db=name.db,
        kind=name.kind,
        started_at=_parse_time(data["started_at"], "started_at"),
        finished_at=_parse_time(data["finished_at"], "finished_at"),
        size=data["size"],
        sha256=data["sha256"],
        tables=dict(tables),
        trigger=dict(data.get("trigger") or {}),
        pg_dump_version=str(data.get("pg_dump_version", "")),
        server_version=str(data.get("server_version", "")),
        compression=str(data.get("compression", "")),
        encryption=encryption,
        verification=data.get("verification"),
        drill=data.get("drill"),
        manifest=data,
    )


# Optional fields whose readers assume a shape: ``list`` and ``prune`` type
# every manifest, ``pg_restore_for`` reads the pg_dump major version. A
# manifest that breaks one of them must be *untrusted* (reported, kept),
# never an internal error that hides every other backup of the database.
_OPTIONAL: dict[str, type] = {
    "trigger": dict,
    "verification": dict,
    "drill": dict,
    "pg_dump_version": str,
    "server_version": str,
    "compression": str,
    "scope": str,
}
_VERSION_RE = re.compile(r"(\d+(\.\d+)*)?")


def _check_optional(data: dict[str, Any]) -> None:
    """Optional fields are absent, null, or of the shape their readers need."""
    for key, kind in _OPTIONAL.items():
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise ManifestError(f"manifest field {key!r} is not a {kind.__name__}")
    if not _VERSION_RE.fullmatch(data.get("pg_dump_version") or ""):
        raise ManifestError(f"manifest pg_dump_version is not a version number: {data['pg_dump_version']!r}")
    if data.get("scope", SCOPE_FULL) not in SCOPES:
        raise ManifestError(f"manifest scope must be one of {', '.join(SCOPES)}: {data['scope']!r}")


def _check_encryption(encryption: Any) -> None:
    """An encrypted backup must say how and for whom: a manifest that does
    not is not trusted (a reader would feed ciphertext to pg_restore)."""
    if not isinstance(encryption, dict) or encryption.get("scheme") not in ENCRYPTION_SCHEMES:
        raise ManifestError(f"manifest encryption must be an object with scheme one of {', '.join(ENCRYPTION_SCHEMES)}")
    recipients = encryption.get("recipients")
    if not isinstance(recipients, list) or not recipients or not all(
        isinstance(r, dict) and isinstance(r.get("type"), str) and isinstance(r.get("fingerprint"), str) for r in recipients
    ):
        raise ManifestError("manifest encryption.recipients must list each recipient's type and fingerprint")


def write_manifest(
    storage: Storage, name: BackupName, data: dict[str, Any], *, overwrite: bool = True, if_version: str | None = None
) -> BackupInfo:
    """Store (or atomically replace) a manifest; returns its typed view.
    ``overwrite=False`` for a new backup: never over another one's manifest;
    ``if_version`` for a rewrite: only over the version read (ObjectChanged)."""
    info = parse_manifest(data, name)  # never store what we could not read back
    storage.put_json(name.manifest_key, data, overwrite=overwrite, if_version=if_version)
    return info


def sidecar_text(sha256: str, dump_key: str) -> bytes:
    """``sha256sum`` format, so ``sha256sum -c`` works on a downloaded pair
    (the digest of the stored object: ciphertext when encrypted)."""
    return f"{sha256}  {dump_key.rsplit('/', 1)[-1]}\n".encode("ascii")


def parse_sidecar(data: bytes) -> str | None:
    """The hex digest in a sidecar, or None if it is not one."""
    text = data.decode("ascii", errors="replace").strip()
    digest = text.split()[0] if text else ""
    return digest if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None
