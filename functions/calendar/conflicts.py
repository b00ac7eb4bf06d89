"""Three-way merge of a locally edited event with a remotely edited one.

The base is the per-field hash stored at the last sync. Rules, in order:

1. local and remote content equal → no conflict (both made the same edit, or
   a retried write of ours already landed);
2. fields changed on one side only are taken from that side (a field-level
   merge: a local title edit and a remote time move both survive);
3. a field changed on both sides to different values goes to the side edited
   last — the local row's ``local_updated_at`` against Google's ``updated`` —
   and on an exact tie to Google (the shared calendar is what attendees see);
   the losing values are kept in the conflict's audit entry (``lost``).

Deletions are not merged: a deletion on either side wins over an edit on the
other (the sync code applies that rule and logs it as a conflict too).
Without a base (never synced) every differing field counts as changed on
both sides, so rule 3 decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .mapping import FIELDS, EventData, field_hashes

ENCRYPTED = "(conference data: encrypted at rest, not logged)"


@dataclass
class Merge:
    data: EventData
    kind: str  # "same" | "merged" | "overlap"
    local_fields: list[str] = field(default_factory=list)
    remote_fields: list[str] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)
    winner: str | None = None  # side that won the overlapping fields
    # The losing side's values of the overlapping fields: without them the
    # audit said a field was overwritten but not what it held, so a lost edit
    # (a long description typed in the app) could not be recovered.
    lost: dict = field(default_factory=dict)

    @property
    def conflict(self) -> bool:
        return self.kind != "same"

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "local_fields": self.local_fields,
            "remote_fields": self.remote_fields,
            "overlapping": self.overlapping,
            "winner": self.winner,
            "lost": self.lost,
        }


def merge(
    base: dict[str, str] | None,
    local: EventData,
    remote: EventData,
    *,
    local_time: datetime | None,
    remote_time: datetime | None,
) -> Merge:
    lh, rh = field_hashes(local), field_hashes(remote)
    if lh == rh:
        return Merge(dict(remote), "same")
    base = base or {}
    local_changed = [f for f in FIELDS if lh[f] != base.get(f)]
    remote_changed = [f for f in FIELDS if rh[f] != base.get(f)]
    overlapping = [f for f in FIELDS if f in local_changed and f in remote_changed and lh[f] != rh[f]]
    winner = None
    if overlapping:
        local_wins = local_time is not None and (remote_time is None or local_time > remote_time)
        winner = "local" if local_wins else "google"
    merged = dict(remote)
    for f in local_changed:
        if f in overlapping and winner == "google":
            continue
        merged[f] = local[f]
    loser = local if winner == "google" else remote
    # Conference data is kept encrypted at rest: the audit log never holds it in clear.
    lost = {f: (ENCRYPTED if f == "conference" else loser[f]) for f in overlapping}
    return Merge(
        merged,
        "overlap" if overlapping else "merged",
        local_fields=local_changed,
        remote_fields=remote_changed,
        overlapping=overlapping,
        winner=winner,
        lost=lost,
    )
