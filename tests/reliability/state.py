"""Snapshots that prove "nothing changed": databases and storage.

A database snapshot is ``shared.db.database_fingerprint`` (row count and
content hash of every user table) plus the list of schemas, so a created
empty schema counts too. ``IGNORED`` are tables that change on every request
by design and say nothing about the data: the calendar's per-caller rate
limit counter (it must count rejected requests too). The ``safesync``
bookkeeping schema (locks, QStash deliveries) is a system schema for the
fingerprint already.
"""

from __future__ import annotations

from typing import Any, Mapping

from safesync.shared.db import connect, database_fingerprint

IGNORED = frozenset({"calendar.rate_limits"})


def db_state(url: str, schemas: list[str] | None = None) -> dict[str, Any]:
    with connect(url, autocommit=True, application_name="safesync-reliability") as conn:
        tables = {k: list(v) for k, v in database_fingerprint(conn, schemas).items() if k not in IGNORED}
        names = [
            r[0]
            for r in conn.execute(
                "select nspname from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema' order by 1"
            )
        ]
    return {"schemas": names, "tables": tables}


def storage_state(settings, *, runs: bool = False) -> dict[str, Any]:
    """Every object in storage: key → size (a missing folder is empty).

    Run reports (``runs/``) are left out unless ``runs``: every run stores
    one, a refused or failed run included, and that is the point of them."""
    from safesync.shared.errors import StorageError

    try:
        objects = settings.storage.list("")
    except StorageError:
        objects = []
    return {"objects": {o.key: o.size for o in objects if runs or not o.key.startswith("runs/")}}


def world_state(urls: Mapping[str, str], settings=None) -> dict[str, Any]:
    """Every named database, and storage when ``settings`` is given."""
    state: dict[str, Any] = {f"db:{name}": db_state(url) for name, url in urls.items()}
    if settings is not None:
        state["storage"] = storage_state(settings)
    return state


def count_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> int:
    """Rows/objects that differ: per table max(1, |Δ rows|) when its
    fingerprint differs, one per schema or object added, removed or resized.
    Takes two ``world_state`` or two ``db_state`` snapshots."""
    if "tables" in before or "tables" in after:
        before, after = {"db": before}, {"db": after}
    changed = 0
    for key in set(before) | set(after):
        a, b = before.get(key, {}), after.get(key, {})
        if key == "storage" or "objects" in a or "objects" in b:
            objs_a, objs_b = a.get("objects", {}), b.get("objects", {})
            changed += sum(1 for k in set(objs_a) | set(objs_b) if objs_a.get(k) != objs_b.get(k))
            continue
        changed += len(set(a.get("schemas", [])) ^ set(b.get("schemas", [])))
        tables_a, tables_b = a.get("tables", {}), b.get("tables", {})
        for table in set(tables_a) | set(tables_b):
            ta, tb = tables_a.get(table), tables_b.get(table)
            if ta != tb:
                changed += max(1, abs((ta or [0])[0] - (tb or [0])[0]))
    return changed
