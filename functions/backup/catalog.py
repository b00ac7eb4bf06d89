"""What is in storage: complete backups (manifest + dump), leftovers of
interrupted ones, and manifests we cannot read.

Listing is per configured database (``<db>/`` prefix) so run reports and
other jobs' objects are never scanned. Only manifests are read; dumps are
never opened here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from safesync.shared.config import Settings
from safesync.shared.errors import BadRequest, NotFoundError
from safesync.shared.storage import ObjectInfo, Storage

from .layout import DUMP_SUFFIXES, BackupName, parse_key
from .manifest import BackupInfo, ManifestError, parse_manifest


MANIFEST_WITHOUT_DUMP = "manifest without its dump"  # damage (prune deletes manifests first), not an interrupted write
# How much later than storage received its manifest a backup may say it
# started (clocks disagree a little); more, and the clock that dated it was wrong.
CLOCK_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class Leftover:
    """Objects of a backup that never became complete (no manifest), or
    whose dump is gone. Its age is the newest upload time of its objects:
    without a manifest there is nothing else to go by."""

    id: str
    keys: tuple[str, ...]
    uploaded: datetime
    reason: str


@dataclass(frozen=True)
class Damaged:
    """A backup that is damaged, not merely unfinished, and why."""

    id: str
    problem: str


@dataclass
class DbCatalog:
    db: str
    complete: list[BackupInfo] = field(default_factory=list)  # newest first
    leftovers: list[Leftover] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)  # kept, reported, never auto-deleted

    @property
    def newest_full(self) -> BackupInfo | None:
        """What "the latest backup" means (``latest_backup``): the newest
        complete *full* one. A partial one (only some tables, content sync's
        ``presync_backup = "content"``) would restore a fraction of the
        database as if it were whole, and prove or date nothing about it;
        partial backups are used by their id."""
        return next((info for info in self.complete if not info.partial), None)

    @property
    def damaged(self) -> list[Damaged]:
        """A manifest that cannot be read or trusted, or one whose dump is
        gone, oldest first. Listing and ``latest`` pass over them, so verify
        and the status page must name them: a damaged newest backup must not
        let the one before it answer "all good". (Objects without a manifest
        are interrupted backups, not damage: ``list`` mentions them, prune
        removes them.)"""
        found = [Damaged(bad["id"], f"unreadable manifest {bad['key']}: {bad['problem']}") for bad in self.unreadable]
        found += [
            Damaged(left.id, f"its dump is missing ({left.reason}): it cannot be restored")
            for left in self.leftovers
            if left.reason == MANIFEST_WITHOUT_DUMP
        ]
        return sorted(found, key=lambda d: d.id)


def scan(storage: Storage, db: str) -> DbCatalog:
    groups: dict[BackupName, dict[str, ObjectInfo]] = defaultdict(dict)
    for obj in storage.list(f"{db}/"):
        parsed = parse_key(obj.key)
        if parsed and parsed[0].db == db:
            groups[parsed[0]][parsed[1]] = obj
    catalog = DbCatalog(db)
    for name, objects in sorted(groups.items(), key=lambda item: item[0].id):
        if "json" not in objects:
            catalog.leftovers.append(_leftover(name, objects, "no manifest: the backup did not finish"))
            continue
        try:
            info = parse_manifest(storage.get_json(name.manifest_key), name)
        except NotFoundError:  # deleted between list and read (a concurrent prune)
            continue
        except (ManifestError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: JSON nested too deep to parse, also just unreadable
            catalog.unreadable.append({"id": name.id, "key": name.manifest_key, "problem": str(exc) or type(exc).__name__})
            continue
        if info.dump_suffix not in objects:
            catalog.leftovers.append(_leftover(name, objects, MANIFEST_WITHOUT_DUMP))
            continue
        if info.started_at > objects["json"].updated + CLOCK_SKEW:
            # Ages and "newest" come from manifests: dated ahead, it would be the latest backup (restored
            # as "latest", keeping the status page fresh) until the real clock caught up.
            catalog.unreadable.append({
                "id": name.id, "key": name.manifest_key,
                "problem": f"it says it started at {info.started_at.isoformat()}, after storage received its manifest "
                f"({objects['json'].updated.isoformat()}): the clock of the machine that made it was wrong; "
                "restore it by its id if you must",
            })
            continue
        catalog.complete.append(info)
    catalog.complete.sort(key=lambda info: (info.started_at, info.id), reverse=True)
    return catalog


def _leftover(name: BackupName, objects: dict[str, ObjectInfo], reason: str) -> Leftover:
    # The manifest (if any) goes first when deleting, so a half-finished
    # cleanup never leaves something that looks complete.
    order = {"json": 0, "sha256": 1, "dump": 2, "dump.age": 2}
    keys = tuple(o.key for s, o in sorted(objects.items(), key=lambda item: order[item[0]]))
    return Leftover(name.id, keys, max(o.updated for o in objects.values()), reason)


def databases(settings: Settings, db: str | None = None) -> list[str]:
    """The database given (checked against the config), else every configured one."""
    return [settings.check_database(db)] if db is not None else settings.database_names()  # "" is a bad name, not "all"


def list_backups(settings: Settings, db: str | None = None) -> list[BackupInfo]:
    """Complete backups of ``db`` (or of every configured database), newest first."""
    found = [info for name in databases(settings, db) for info in scan(settings.storage, name).complete]
    return sorted(found, key=lambda info: (info.started_at, info.id), reverse=True)


def backup_catalog(settings: Settings, db: str) -> DbCatalog:
    """What storage holds for configured database ``db``, scanned once."""
    return scan(settings.storage, settings.check_database(db))


def latest_backup(settings: Settings, db: str) -> BackupInfo | None:
    """The newest complete full backup of ``db`` (``DbCatalog.newest_full``),
    as ``restore latest``, ``verify`` without an id and the status page mean it."""
    return backup_catalog(settings, db).newest_full


def get_backup(settings: Settings, backup_id: str) -> BackupInfo:
    """One complete backup by id; NotFoundError if it is missing or incomplete."""
    return get_backup_versioned(settings, backup_id)[0]


def get_backup_versioned(settings: Settings, backup_id: str) -> tuple[BackupInfo, str]:
    """``get_backup`` and the storage version of the manifest read, for a
    rewrite that must fail if the manifest changed or was deleted since."""
    name = BackupName.parse(backup_id)
    storage = settings.storage
    try:
        raw, version = storage.get_versioned(name.manifest_key)
        data = json.loads(raw)
    except NotFoundError:
        if any(storage.exists(name.key(suffix)) for suffix in DUMP_SUFFIXES):
            raise NotFoundError(f"backup {backup_id} is incomplete (no manifest): it cannot be used") from None
        raise NotFoundError(f"backup {backup_id} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise NotFoundError(f"backup {backup_id} has an unreadable manifest: {exc}") from None
    try:
        info = parse_manifest(data, name)
    except ManifestError as exc:
        raise NotFoundError(f"backup {backup_id} has an invalid manifest: {exc}") from None
    if not storage.exists(info.dump_key):
        raise NotFoundError(f"backup {backup_id} has a manifest but its dump ({info.dump_key}) is missing")
    return info, version


def resolve(settings: Settings, ref: str, db: str | None) -> BackupInfo:
    """``latest`` (of ``db``) or an id; ``db``, when given, must match the id."""
    if ref == "latest":
        if db is None:
            raise BadRequest("'latest' needs the database: --db NAME (HTTP: \"db\")")
        info = latest_backup(settings, db)
        if info is None:
            raise NotFoundError(f"no complete full backup of {db} in {settings.storage.describe()}")
        return info
    info = get_backup(settings, ref)
    if db is not None and info.db != db:
        raise BadRequest(f"backup {ref} is of database {info.db!r}, not {db!r}")
    return info
