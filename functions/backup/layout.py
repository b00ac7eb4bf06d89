"""Where a backup lives in storage, and how its id is spelled.

A backup id is ``<db>-<YYYYMMDDTHHMMSSZ>-<kind>`` (e.g.
``prod-20260101T020000Z-daily``). Database names are identifiers (no ``-``),
so an id parses back unambiguously, and the object keys follow from it
without listing anything::

    <db>/<YYYY>/<MM>/<id>.dump       pg_dump custom format
    <db>/<YYYY>/<MM>/<id>.dump.age   … or that archive encrypted with age
    <db>/<YYYY>/<MM>/<id>.sha256     "<hex>  <id>.dump[.age]" (sha256sum -c compatible)
    <db>/<YYYY>/<MM>/<id>.json       manifest, written last

A backup has one dump object: its manifest says whether it is encrypted,
so which of the two names it has. The name says what the bytes are, so no
tool is ever fed ciphertext as a pg_dump archive, and ``age -d`` knows its
input.

The timestamp in a name only makes ids unique and sortable; ages used for
retention come from the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from safesync.shared.errors import BadRequest

# Scheduled and asked-for backups, then the "undo points" other jobs take.
KINDS = ("manual", "daily", "predeploy", "presync", "premigrate", "safety")
EVENT_KINDS = ("presync", "premigrate", "safety")
DUMP_SUFFIXES = ("dump", "dump.age")  # plain, encrypted
SUFFIXES = (*DUMP_SUFFIXES, "sha256", "json")

_STAMP = r"\d{8}T\d{6}Z"
_KIND = "|".join(KINDS)
# Matched with fullmatch: "$" would also match before a final "\n".
ID_RE = re.compile(rf"(?P<db>[A-Za-z_][A-Za-z0-9_]*)-(?P<stamp>{_STAMP})-(?P<kind>{_KIND})")
MAX_ID = 200  # the HTTP bodies' limit for ids too
KEY_RE = re.compile(
    rf"(?P<db>[A-Za-z_][A-Za-z0-9_]*)/(?P<year>\d{{4}})/(?P<month>\d{{2}})/"
    rf"(?P<id>(?P=db)-(?P<stamp>{_STAMP})-(?P<kind>{_KIND}))\.(?P<suffix>dump\.age|dump|sha256|json)"
)


@dataclass(frozen=True)
class BackupName:
    """A parsed backup id and the keys of its objects."""

    db: str
    stamp: str
    kind: str

    @property
    def id(self) -> str:
        return f"{self.db}-{self.stamp}-{self.kind}"

    @property
    def folder(self) -> str:
        return f"{self.db}/{self.stamp[:4]}/{self.stamp[4:6]}"

    def key(self, suffix: str) -> str:
        return f"{self.folder}/{self.id}.{suffix}"

    @property
    def dump_key(self) -> str:
        """The plain dump's key (an encrypted one: ``BackupInfo.dump_key``)."""
        return self.key("dump")

    @property
    def sha256_key(self) -> str:
        return self.key("sha256")

    @property
    def manifest_key(self) -> str:
        return self.key("json")

    @classmethod
    def new(cls, db: str, at: datetime, kind: str) -> "BackupName":
        if kind not in KINDS:
            raise BadRequest(f"unknown backup kind {kind!r}; one of: {', '.join(KINDS)}")
        return cls(db, at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), kind)

    @classmethod
    def parse(cls, backup_id: str) -> "BackupName":
        """Parse a user-given id; BadRequest (400 / exit 2) if malformed."""
        # as long as HTTP bodies allow: a longer one failed in storage ("name too long"), retryable
        match = ID_RE.fullmatch(backup_id or "") if len(backup_id or "") <= MAX_ID else None
        if not match:
            shown = backup_id if len(backup_id or "") <= 80 else backup_id[:80] + "…"
            raise BadRequest(
                f"{shown!r} is not a backup id (expected <db>-<YYYYMMDDTHHMMSSZ>-<kind>, at most {MAX_ID} characters, "
                "e.g. prod-20260101T020000Z-daily; `safesync backup list` shows them)"
            )
        return cls(match["db"], match["stamp"], match["kind"])


def parse_key(key: str) -> tuple[BackupName, str] | None:
    """(name, suffix) of a key in the backup layout, else None (e.g. run reports)."""
    match = KEY_RE.fullmatch(key)
    if not match or match["year"] != match["stamp"][:4] or match["month"] != match["stamp"][4:6]:
        return None
    return BackupName(match["db"], match["stamp"], match["kind"]), match["suffix"]
