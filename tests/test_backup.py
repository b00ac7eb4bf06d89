"""Backups against a real PostgreSQL 16, on the local folder AND the GCS
emulator: round trip on the LMS fixture, interrupted backups, a flipped
byte, guarded restores, the same-snapshot row counts, the old-pg_dump
error, and pruning of leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import psutil
import psycopg
import pytest
from psycopg import sql

from safesync.functions import cli
from safesync.functions.backup import create as create_module
from safesync.functions.backup import (
    backup_catalog,
    backup_timeline,
    create_backup,
    get_backup,
    latest_backup,
    list_backups,
    prune_database,
    restore_backup,
    verify_backup,
)
from safesync.functions.backup.layout import BackupName
from safesync.shared.db import connect, database_fingerprint
from safesync.shared.errors import ConfigError, JobFailed, NotFoundError, ObjectExists, Refused
from safesync.shared.report import utcnow
from tests.fixtures.lms import create_lms

BACKUP_TOML = """
[backup]
databases = ["prod"]
compress_level = 1
"""


@pytest.fixture(params=["local", "gcs"])
def storage_url(request) -> str | None:
    return None if request.param == "local" else request.getfixturevalue(f"{request.param}_bucket_url")


# What depends on storage runs on S3 too (the rest is the same on every backend).
EVERY_BACKEND = pytest.mark.parametrize("storage_url", ["local", "gcs", "s3"], indirect=True)


@pytest.fixture
def env(make_db, write_settings, storage_url):
    """prod (the LMS with users) and an empty ``scratch`` database."""
    prod = make_db()
    create_lms(prod, variant="prod", scale=2)
    scratch = make_db()
    settings = write_settings({"prod": prod, "scratch": scratch}, BACKUP_TOML, storage_url)
    return SimpleNamespace(prod=prod, scratch=scratch, settings=settings, storage_url=storage_url)


def fingerprint(url: str) -> dict:
    with connect(url) as conn:
        return database_fingerprint(conn)


def schema_facts(url: str) -> dict:
    """Sequences' positions, constraints and indexes of the public schema."""
    with connect(url) as conn:
        names = [r[0] for r in conn.execute("select sequencename from pg_sequences where schemaname = 'public' order by 1")]
        return {
            "sequences": [
                (name, *conn.execute(sql.SQL("select last_value, is_called from {}").format(sql.Identifier(name))).fetchone())
                for name in names
            ],
            "constraints": conn.execute(
                "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint "
                "where connamespace = 'public'::regnamespace order by 1, 2"
            ).fetchall(),
            "indexes": conn.execute("select indexname, indexdef from pg_indexes where schemaname = 'public' order by 1").fetchall(),
        }


def backup_objects(settings, db: str = "prod") -> list[str]:
    return [o.key for o in settings.storage.list(f"{db}/")]


def add_bulk(url: str, rows: int) -> None:
    """A table big enough that a dump is still streaming when we interfere."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "create table bulk as select g as id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) as payload "
            "from generate_series(1, %s) g",
            [rows],
        )


def run_cli(capsys, *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


# --------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------


@EVERY_BACKEND
def test_round_trip_create_verify_drill_restore(env) -> None:
    settings = env.settings
    before = fingerprint(env.prod)
    info = create_backup(settings, "prod", "manual", trigger={"via": "test"})

    # Layout and manifest.
    name = BackupName.parse(info.id)
    assert backup_objects(settings) == sorted([name.dump_key, name.manifest_key, name.sha256_key])
    manifest = settings.storage.get_json(name.manifest_key)
    assert manifest["database"] == "prod" and manifest["kind"] == "manual"
    assert manifest["pg_dump_version"].startswith("16") and manifest["server_version"].startswith("16")
    assert manifest["compression"] == "gzip:1" and manifest["trigger"] == {"via": "test"}
    assert manifest["tables"] == {t: count for t, (count, _) in before.items()}
    dump = settings.storage.get_bytes(name.dump_key)
    assert dump[:5] == b"PGDMP" and manifest["size"] == len(dump)
    assert manifest["sha256"] == hashlib.sha256(dump).hexdigest()
    assert settings.storage.get_bytes(name.sha256_key) == f"{manifest['sha256']}  {info.id}.dump\n".encode()
    assert [b.id for b in list_backups(settings)] == [info.id] == [latest_backup(settings, "prod").id]

    # Verify with a restore drill: recorded in the manifest; scratch db dropped.
    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert result.ok, result.problems
    assert result.drill["ok"] and result.drill["tables"] == len(before) and result.drill["mismatches"] == []
    recorded = settings.storage.get_json(name.manifest_key)
    assert recorded["verification"]["ok"] and recorded["drill"]["ok"]
    with psycopg.connect(env.prod) as conn:
        assert conn.execute(
            "select count(*) from pg_database where datname = %s", [recorded["drill"]["scratch_database"]]
        ).fetchone()[0] == 0

    # Restore into a fresh database: every table's rows, sequences, constraints.
    restored = restore_backup(settings, info.id, "scratch")
    assert restored.safety_backup is not None and restored.safety_backup.kind == "safety"
    assert restored.safety_backup.trigger["restore_of"] == info.id
    assert fingerprint(env.scratch) == before == fingerprint(env.prod)
    assert schema_facts(env.scratch) == schema_facts(env.prod)
    facts = schema_facts(env.scratch)
    assert any("FOREIGN KEY" in c[2] and "ON DELETE CASCADE" in c[2] for c in facts["constraints"])
    assert len(facts["sequences"]) >= 5 and any(seq[1] > 1 for seq in facts["sequences"])
    assert all(row["match"] for row in restored.tables)

    # Restoring again over the now-populated target (--clean) is just as exact.
    restore_backup(settings, "latest", "scratch", db="prod")
    assert fingerprint(env.scratch) == before


def test_row_counts_come_from_the_dump_snapshot_despite_concurrent_writes(env, capsys) -> None:
    """Inserts run throughout the dump; the restore drill (dump contents)
    still matches the manifest's counts exactly."""
    add_bulk(env.prod, 150_000)
    with psycopg.connect(env.prod, autocommit=True) as conn:
        conn.execute("create table side (id bigserial primary key, at timestamptz not null default now())")
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(env.prod, autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("insert into bulk values (-1, 'x')")
                    conn.execute("insert into side default values")
                time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        info = create_backup(env.settings, "prod", "manual")
    finally:
        stop.set()
        thread.join()
    with psycopg.connect(env.prod) as conn:
        now_bulk = conn.execute("select count(*) from bulk").fetchone()[0]
        now_side = conn.execute("select count(*) from side").fetchone()[0]
    assert now_bulk > info.tables["public.bulk"] >= 150_000  # writes happened around the dump
    assert info.tables["public.bulk"] - 150_000 == info.tables["public.side"] < now_side
    result = verify_backup(env.settings, info.id, restore_drill_too=True)
    assert result.ok and result.drill["mismatches"] == [], result.problems


# --------------------------------------------------------------------------
# Interrupted backups
# --------------------------------------------------------------------------


def _kill_pg_dump(_done: int) -> None:
    for child in psutil.Process().children(recursive=True):
        if child.name() == "pg_dump":
            child.kill()


@EVERY_BACKEND
def test_pg_dump_killed_mid_backup_leaves_no_backup(env) -> None:
    settings = env.settings
    add_bulk(env.prod, 60_000)
    with pytest.raises(JobFailed, match="pg_dump was killed by signal SIGKILL"):
        create_backup(settings, "prod", "manual", progress=_kill_pg_dump)
    assert backup_objects(settings) == []  # the upload was aborted: no dump, no sidecar, no manifest
    if env.storage_url is None:
        assert not any(".tmp-" in p.name for p in Path(settings.storage.root).rglob("*"))
    assert list_backups(settings) == []
    with pytest.raises(NotFoundError):
        restore_backup(settings, "latest", "scratch", db="prod")
    info = create_backup(settings, "prod", "manual")  # the next one succeeds
    assert [b.id for b in list_backups(settings)] == [info.id]
    assert verify_backup(settings, info.id).ok


@EVERY_BACKEND
def test_crash_before_manifest_leaves_a_leftover_that_prune_removes_after_grace(env, monkeypatch) -> None:
    settings = env.settings

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("process dies between sidecar and manifest")

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(create_module, "write_manifest", crash)
        create_backup(settings, "prod", "daily")
    keys = backup_objects(settings)
    assert [k.rsplit(".", 1)[1] for k in keys] == ["dump", "sha256"]
    leftover_id = keys[0].rsplit("/", 1)[1].removesuffix(".dump")
    assert list_backups(settings) == []
    with pytest.raises(NotFoundError, match="incomplete"):
        get_backup(settings, leftover_id)
    with pytest.raises(NotFoundError):
        restore_backup(settings, leftover_id, "scratch")

    good = create_backup(settings, "prod", "manual")
    young = prune_database(settings, "prod")  # within the 6 h grace: may still be running
    assert young.deleted == [] and len(backup_objects(settings)) == 5
    later = prune_database(settings, "prod", now=utcnow() + timedelta(hours=7))
    assert later.deleted == [leftover_id]
    assert backup_objects(settings) == sorted(BackupName.parse(good.id).key(s) for s in ("dump", "json", "sha256"))


@EVERY_BACKEND
def test_a_backup_never_replaces_another_of_the_same_name(env, monkeypatch) -> None:
    """Two processes that pick the same name (the same second): the second
    dump is refused by storage itself, and the first backup stays whole."""
    settings = env.settings
    first = create_backup(settings, "prod", "manual")
    with monkeypatch.context() as patch:
        patch.setattr(create_module, "free_name", lambda storage, db, kind: BackupName.parse(first.id))
        with pytest.raises(ObjectExists, match=first.id):
            create_backup(settings, "prod", "manual")
    assert [b.id for b in list_backups(settings)] == [first.id]
    assert verify_backup(settings, first.id).ok


def _streaming_pg_dump(proc: subprocess.Popen, at_least: int) -> bool:
    """True once the CLI's pg_dump child has written ``at_least`` bytes."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        return any(c.name() == "pg_dump" and c.io_counters().write_chars >= at_least for c in children)
    except psutil.NoSuchProcess:
        return False


def test_process_killed_mid_backup_then_next_create_and_prune(make_db, write_settings, storage_url) -> None:
    """SIGKILL of the whole `safesync backup create` while it streams."""
    prod = make_db()
    create_lms(prod, variant="prod")
    add_bulk(prod, 200_000)
    toml = BACKUP_TOML.replace("compress_level = 1", "compress_level = 9\nincomplete_grace_hours = 0")
    settings = write_settings({"prod": prod}, toml, storage_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safesync.functions.cli", "backup", "create", "--db", "prod", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )
    deadline = time.monotonic() + 60
    while not _streaming_pg_dump(proc, 2 << 20):
        assert proc.poll() is None and time.monotonic() < deadline, "the backup ended before we could kill it"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert backup_objects(settings) == [] and list_backups(settings) == []
    with pytest.raises(NotFoundError):
        restore_backup(settings, "latest", "prod", db="prod", confirm="prod")
    local_root = None if storage_url else Path(settings.storage.root)
    if local_root:  # the local backend's partial write is a hidden temp file...
        assert list(local_root.rglob("*.tmp-*"))
    info = create_backup(settings, "prod", "manual")
    assert [b.id for b in list_backups(settings)] == [info.id]
    assert cli.main(["backup", "prune", "--json"]) == 0
    if local_root:  # ...that prune removes once past the grace period
        assert not list(local_root.rglob("*.tmp-*"))
    assert [b.id for b in list_backups(settings)] == [info.id]


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
@pytest.mark.parametrize("command", ["verify", "restore"])
def test_an_overlong_backup_id_is_a_usage_error(env, command, capsys) -> None:
    """A 5000-character id matched the id pattern and then failed in storage
    ("name too long"): exit 1, retryable, instead of a usage error."""
    backup_id = "prod" + "x" * 5000 + "-20260101T020000Z-manual"
    argv = ["backup", command, backup_id] + (["--to", "scratch"] if command == "restore" else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a backup id" in err and "at most 200 characters" in err and len(err) < 400, err


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
@pytest.mark.parametrize("argv", [
    ["backup", "prune", "--db", ""],  # `--db "$DB"` with DB unset: never "prune every database"
    ["backup", "list", "--db", ""],
    ["backup", "verify", ""],
    ["backup", "restore", "latest", "--db", "", "--to", "scratch"],
    ["backup", "restore", "latest", "--db", "prod", "--to", ""],
], ids=lambda argv: " ".join(argv[1:3]))
def test_an_empty_name_is_a_usage_error_never_every_database(env, argv, capsys) -> None:
    info = create_backup(env.settings, "prod", "manual")
    before = backup_objects(env.settings)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("unknown database ''" in err or "'' is not a backup id" in err), err
    assert backup_objects(env.settings) == before and [b.id for b in list_backups(env.settings)] == [info.id]


# --------------------------------------------------------------------------
# Corruption
# --------------------------------------------------------------------------


@EVERY_BACKEND
def test_flipped_byte_fails_verify_names_the_backup_and_is_never_restored(env, capsys) -> None:
    settings = env.settings
    good = create_backup(settings, "prod", "manual")
    bad = create_backup(settings, "prod", "manual")
    key = BackupName.parse(bad.id).dump_key
    data = bytearray(settings.storage.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    settings.storage.put(key, bytes(data))

    code, body = run_cli(capsys, "backup", "verify", bad.id)
    assert code == 1
    assert bad.id in body["summary"] and "SHA-256" in body["summary"]
    code, body = run_cli(capsys, "backup", "verify", "--all")
    assert code == 1 and bad.id in body["summary"] and good.id not in body["summary"]
    assert {r["id"]: r["ok"] for r in body["details"]["results"]} == {good.id: True, bad.id: False}
    assert settings.storage.get_json(BackupName.parse(bad.id).manifest_key)["verification"]["ok"] is False

    # A restore of the corrupt backup is refused before commit: target untouched.
    before = fingerprint(env.scratch)
    with pytest.raises(Refused, match="does not match its manifest"):
        restore_backup(settings, bad.id, "scratch")
    assert fingerprint(env.scratch) == before


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
def test_another_smaller_dump_stored_under_a_backups_name_is_never_committed(env, make_db, write_settings) -> None:
    """The held-back last chunk only stops pg_restore from committing a
    damaged copy of the archive written. Another, smaller dump stored under
    the backup's name (a mixed-up file, padded here to the manifest's size)
    is complete long before that chunk: pg_restore committed it into the
    target, and the restore then said "failed: pg_restore exited with 0" —
    or, when the pipe took it all, "nothing was restored". Now a restore
    proves the whole stored dump before it starts, and the stream, should
    the object change after that check, says the target was changed."""
    from safesync.functions.backup.archive import Archive
    from safesync.functions.backup.pgproc import restore_stream
    from safesync.functions.backup.verify import pg_restore_for
    from safesync.shared.pgtools import libpq_target

    add_bulk(env.prod, 100_000)  # several chunks: pg_restore stops reading long before the end
    info = create_backup(env.settings, "prod", "manual")
    other = make_db()
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("create table intruder as select 42 as x")
    settings = write_settings({"prod": env.prod, "scratch": env.scratch, "other": other}, BACKUP_TOML, env.storage_url)
    small = settings.storage.get_bytes(create_backup(settings, "other", "manual").dump_key)
    settings.storage.put(info.dump_key, small + b"\0" * (info.size - len(small)))
    before, objects = fingerprint(env.scratch), backup_objects(settings, "scratch")

    with pytest.raises(Refused, match=f"backup {info.id} does not match its manifest.*nothing was restored"):
        restore_backup(settings, info.id, "scratch")
    assert fingerprint(env.scratch) == before and backup_objects(settings, "scratch") == objects

    # The stream on its own (the object changed after the check): it cannot
    # stop that COMMIT, but it never calls the target untouched.
    conninfo, child = libpq_target(env.scratch)
    with pytest.raises(JobFailed, match="pg_restore had already committed .*the target WAS changed"):
        restore_stream(Archive(settings, info), argv=[str(pg_restore_for(info).path), "--single-transaction",
                                                      "--exit-on-error", "--dbname", conninfo], env=child)
    with psycopg.connect(env.scratch) as conn:
        assert conn.execute("select to_regclass('public.intruder')").fetchone()[0] == "intruder"


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
@pytest.mark.parametrize("damage", ["manifest truncated", "dump deleted"])
def test_verify_never_skips_a_damaged_newest_backup_to_say_all_good(env, damage, capsys) -> None:
    """verify with no id (the newest of each database) and --all used to
    scan only the *complete* backups: a newest backup whose manifest was
    cut short, or whose dump was deleted, just vanished, the one before it
    was verified and the report said "all good" (exit 0)."""
    settings = env.settings
    good = create_backup(settings, "prod", "manual")
    bad = create_backup(settings, "prod", "manual")
    if damage == "manifest truncated":
        settings.storage.put(bad.manifest_key, settings.storage.get_bytes(bad.manifest_key)[:40])
    else:
        settings.storage.delete(bad.dump_key)

    for argv in (["backup", "verify"], ["backup", "verify", "--all"]):
        code, body = run_cli(capsys, *argv)
        assert code == 1 and not body["ok"], (argv, body["summary"])
        assert "FAILED" in body["summary"] and bad.id in body["summary"] and good.id not in body["summary"]
        assert {r["id"]: r["ok"] for r in body["details"]["results"]} == {good.id: True, bad.id: False}
        assert {r["id"]: r["sha256"] for r in body["tables"]["verified"]} == {good.id: "ok", bad.id: ""}  # not computed
    assert get_backup(settings, good.id).verification["ok"]


@pytest.mark.parametrize("storage_url", ["local", "gcs"], indirect=True)
def test_an_oversized_sidecar_or_a_too_deeply_nested_manifest_is_a_failed_backup_not_an_aborted_run(env, capsys) -> None:
    """A sidecar over 4 KiB made verify raise "larger than 4096 bytes; stream
    it instead", ending the whole run (``--all``: no result for any backup);
    a manifest nested deeper than the JSON parser's recursion limit made
    list, prune and verify fail with "internal error"."""
    settings = env.settings
    good = create_backup(settings, "prod", "manual")
    big = create_backup(settings, "prod", "manual")
    deep = create_backup(settings, "prod", "manual")
    settings.storage.put(big.sha256_key, big.sha256.encode() + b" " * 8192)
    settings.storage.put(deep.manifest_key, b"[" * 100_000 + b"]" * 100_000)

    code, body = run_cli(capsys, "backup", "verify", "--all")
    assert code == 1, body
    assert {r["id"]: r["ok"] for r in body["details"]["results"]} == {good.id: True, big.id: False, deep.id: False}
    problems = {r["id"]: r["problems"][0] for r in body["details"]["results"] if not r["ok"]}
    assert "sidecar" in problems[big.id] and "unreadable manifest" in problems[deep.id], problems
    code, body = run_cli(capsys, "backup", "list")
    assert code == 0 and {b["id"] for b in body["details"]["backups"]} == {good.id, big.id}
    assert any(deep.manifest_key in w for w in body["warnings"])
    code, body = run_cli(capsys, "backup", "verify", deep.id)
    assert code == 1 and "unreadable manifest" in body["error"], body


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
@pytest.mark.parametrize("field,value", [("trigger", "cli"), ("pg_dump_version", "sixteen"), ("verification", "ok"), ("drill", [])])
def test_a_manifest_with_a_wrong_shaped_field_is_untrusted_not_an_internal_error(env, field, value, capsys) -> None:
    """Optional manifest fields were typed unchecked: a ``trigger`` that is
    not an object made list and prune crash (every other backup hidden
    behind "internal error"), a ``pg_dump_version`` that is no number
    crashed verify and restore. Such a manifest is now untrusted like an
    unparseable one: listed as unreadable, FAILED by verify, never restored."""
    from safesync.functions.backup.manifest import write_manifest

    settings = env.settings
    good = create_backup(settings, "prod", "manual")
    bad = create_backup(settings, "prod", "manual")
    manifest = dict(bad.manifest)
    manifest[field] = value
    settings.storage.put_json(bad.manifest_key, manifest)

    code, body = run_cli(capsys, "backup", "list")
    assert code == 0 and [b["id"] for b in body["details"]["backups"]] == [good.id]
    assert any(bad.manifest_key in w and field in w for w in body["warnings"]), body["warnings"]
    code, body = run_cli(capsys, "backup", "verify", bad.id)
    assert code != 0 and "internal error" not in body["error"] and "invalid manifest" in body["error"], body
    code, body = run_cli(capsys, "backup", "verify", "--all")
    assert code == 1 and bad.id in body["summary"] and field in body["summary"], body["summary"]
    before = fingerprint(env.scratch)
    code, body = run_cli(capsys, "backup", "restore", bad.id, "--to", "scratch")
    assert code != 0 and "invalid manifest" in body["error"], body
    assert fingerprint(env.scratch) == before
    code, body = run_cli(capsys, "backup", "prune", "--db", "prod")
    assert code == 0, body
    assert any(bad.manifest_key in w for w in body["warnings"]) and settings.storage.exists(bad.manifest_key)
    with pytest.raises(ValueError, match=field):
        write_manifest(settings.storage, bad.name, manifest)  # never written by us either


@pytest.mark.parametrize("storage_url", ["local", "gcs"], indirect=True)
def test_a_dump_with_bytes_appended_is_refused_before_its_restore_commits(env) -> None:
    """The restore holds back the last chunk until the checksum matches;
    with a MiB or more appended to the stored dump, the chunk held back was
    only the extra bytes: pg_restore had the whole archive, COMMITted into
    the target, and then the restore said it failed. Now bytes past the
    manifest's size are refused before the end of the archive is fed."""
    settings = env.settings
    add_bulk(env.prod, 20_000)  # a dump of more than one chunk
    info = create_backup(settings, "prod", "manual")
    dump = settings.storage.get_bytes(info.dump_key)
    assert len(dump) > 1 << 20
    settings.storage.put(info.dump_key, dump + b"\0" * (2 << 20))
    before, objects = fingerprint(env.scratch), backup_objects(settings, "scratch")

    with pytest.raises(Refused, match=f"backup {info.id} does not match its manifest.*nothing was restored"):
        restore_backup(settings, info.id, "scratch")
    assert fingerprint(env.scratch) == before
    assert backup_objects(settings, "scratch") == objects  # refused before the safety backup
    from safesync.functions.backup.archive import Archive
    from safesync.functions.backup.pgproc import restore_stream
    from safesync.functions.backup.verify import pg_restore_for
    from safesync.shared.pgtools import libpq_target

    conninfo, child = libpq_target(env.scratch)  # the stream itself, past check_stored: still refused before COMMIT
    with pytest.raises(Refused, match="nothing was restored"):
        restore_stream(Archive(settings, info), argv=[str(pg_restore_for(info).path), "--single-transaction",
                                                      "--exit-on-error", "--dbname", conninfo], env=child)
    assert fingerprint(env.scratch) == before
    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert not result.ok and any("bytes, the manifest says" in p for p in result.problems), result.problems


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
def test_a_content_only_backup_never_makes_prune_delete_the_full_backups(env, capsys) -> None:
    """Content sync's ``presync_backup = "content"`` dumps only the content
    tables, as a ``presync`` backup. Retention took it for the day's best
    copy: the newest backup of the day, week and month, so the full daily
    backup made before it was "outside the policy" and prune deleted it —
    the database was left with no full backup at all. The manifest now
    records the scope, and a partial backup counts only as an undo point."""
    from safesync.shared.db import TableRef

    settings = env.settings
    full = create_backup(settings, "prod", "daily")
    part = create_backup(settings, "prod", "presync", tables=[TableRef("public", "courses")])
    assert part.partial and not full.partial and part.manifest["scope"] == "tables" and full.manifest["scope"] == "full"
    assert list(part.tables) == ["public.courses"]

    plan = prune_database(settings, "prod", dry_run=True)
    assert {row["id"]: row["action"] for row in plan.rows} == {full.id: "keep", part.id: "keep"}
    assert "newest full" in plan.reasons[full.id] and "daily" in " ".join(plan.reasons[full.id])
    code, body = run_cli(capsys, "backup", "prune", "--db", "prod")
    assert code == 0 and body["details"]["deleted"] == []
    assert sorted(b.id for b in list_backups(settings)) == sorted([full.id, part.id])
    # the status page's timeline applies the same policy
    timeline = backup_timeline(settings, "prod")
    assert timeline["to_prune"] == 0 and {b["id"]: b["kept_by"] for b in timeline["backups"]}[full.id][0] == "newest"


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
def test_latest_is_the_newest_full_backup_never_a_content_only_one(env, capsys) -> None:
    """``restore latest`` restored the content-only presync backup when it
    was the newest ("restored …: 1 tables", exit 0), verify without an id
    proved only it ("all good" while the full backup went unverified), and
    the status page dated the database's last backup by it."""
    from safesync.functions.status.collect import last_backups
    from safesync.shared.db import TableRef

    settings = env.settings
    full = create_backup(settings, "prod", "daily")
    part = create_backup(settings, "prod", "presync", tables=[TableRef("public", "courses")])
    assert latest_backup(settings, "prod").id == full.id
    code, body = run_cli(capsys, "backup", "restore", "latest", "--db", "prod", "--to", "scratch")
    assert code == 0 and body["details"]["restore"]["backup"] == full.id, body
    assert fingerprint(env.scratch) == fingerprint(env.prod)
    code, body = run_cli(capsys, "backup", "verify")
    assert code == 0 and [r["id"] for r in body["details"]["results"]] == [full.id]
    assert [row["id"] for row in last_backups(settings, [])] == [full.id]
    # by its id, as asked: courses is referenced from outside it (a partial restore drops and recreates it,
    # which PostgreSQL refuses): refused before anything runs, naming them
    with pytest.raises(Refused, match=r"partial backup.*lessons → courses \(lessons_course_id_fkey\)"):
        restore_backup(settings, part.id, "scratch")
    leaf = create_backup(settings, "prod", "presync", tables=[TableRef("public", "user_points_history")])
    restored = restore_backup(settings, leaf.id, "scratch")  # nothing references it: restored, saying it is partial
    assert restored.backup.id == leaf.id and any("partial backup" in w and "1 table(s)" in w for w in restored.warnings), restored.warnings
    code, body = run_cli(capsys, "backup", "list", "--db", "prod")
    assert {r["id"]: r["scope"] for r in body["tables"]["backups"]} == {full.id: "full", part.id: "partial", leaf.id: "partial"}, body["tables"]

    settings.storage.delete(full.manifest_key)  # only the partial one is left: there is no latest
    with pytest.raises(NotFoundError, match="no complete full backup of prod"):
        restore_backup(settings, "latest", "scratch", db="prod")
    code, body = run_cli(capsys, "backup", "verify")
    assert code == 1 and "prod: no complete backup" in body["summary"]


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
def test_a_presync_backup_written_before_the_scope_field_is_never_taken_for_a_full_one(env) -> None:
    """Content-only presync backups were written for two days before the
    manifest said ``scope``; read as full, such a backup was "latest" (a
    restore of a few tables as if of the database) and took the day's place
    in retention, so prune deleted the full daily backup made before it."""
    from safesync.shared.db import TableRef

    settings = env.settings
    full = create_backup(settings, "prod", "daily")
    part = create_backup(settings, "prod", "presync", tables=[TableRef("public", "courses")])
    old = {k: v for k, v in part.manifest.items() if k != "scope"}  # as that safesync wrote it
    settings.storage.put_json(part.manifest_key, old)
    assert [b.id for b in list_backups(settings)] == [part.id, full.id]
    assert latest_backup(settings, "prod").id == full.id
    plan = prune_database(settings, "prod", dry_run=True)
    assert {row["id"]: row["action"] for row in plan.rows} == {full.id: "keep", part.id: "keep"}
    assert "newest full" in plan.reasons[full.id]


def test_a_sound_backup_of_tables_with_spaces_dots_or_line_breaks_in_their_names_verifies(make_db, write_settings) -> None:
    """verify split each ``pg_restore --list`` line on spaces, so a schema
    named ``my schema`` (or a table name with a line break, which the
    listing prints as a space) looked absent from the dump: a sound backup
    FAILED verification and its restore drill was skipped."""
    prod = make_db()
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute('create schema "my schema"')
        conn.execute('create table "my schema"."a b" (id int)')
        conn.execute('insert into "my schema"."a b" values (1), (2)')
        conn.execute('create table public."x\ny" (id int)')
        conn.execute('insert into public."x\ny" values (1)')
        conn.execute('create table public."a.b" (id int)')
        conn.execute('create table "my schema"."q""t" (id int)')
    settings = write_settings({"prod": prod}, BACKUP_TOML)
    info = create_backup(settings, "prod", "manual")
    assert set(info.tables) == {"my schema.a b", "public.x\ny", "public.a.b", 'my schema.q"t'}

    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert result.ok and result.drill["ok"] and result.drill["mismatches"] == [], result.all_problems
    manifest = dict(info.manifest)
    manifest["tables"] = {**info.tables, "my schema.a c": 1, "my schema.a": 2}  # near misses are still absent
    settings.storage.put_json(info.manifest_key, manifest)
    problems = verify_backup(settings, info.id, record=False).problems
    assert any("2 table(s)" in p and "my schema.a c" in p and "my schema.a," in p for p in problems), problems


# --------------------------------------------------------------------------
# Guarded restore
# --------------------------------------------------------------------------


def test_restore_into_prod_without_confirm_is_refused_and_touches_nothing(env, capsys) -> None:
    settings = env.settings
    info = create_backup(settings, "prod", "manual")
    with psycopg.connect(env.prod, autocommit=True) as conn:
        conn.execute("update courses set title = title || ' (edited after the backup)'")
    before, objects = fingerprint(env.prod), backup_objects(settings)

    code, body = run_cli(capsys, "backup", "restore", info.id, "--to", "prod")
    assert code == 1 and body["report"]["status"] == "refused" and "--confirm prod" in body["error"]
    code, body = run_cli(capsys, "backup", "restore", "latest", "--db", "prod", "--to", "prod", "--confirm", "staging")
    assert code == 1 and "must be the target's name" in body["error"]

    from safesync.functions.serve import create_app

    client = create_app().test_client()
    admin = {"Authorization": f"Bearer {os.environ['SAFESYNC_ADMIN_TOKEN']}"}
    response = client.post("/backup", json={"action": "restore", "id": info.id, "to": "prod"}, headers=admin)
    assert response.status_code == 422 and "--confirm prod" in response.get_json()["error"]
    token = {"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"}
    response = client.post("/backup", json={"action": "restore", "id": info.id, "to": "prod", "confirm": "prod"}, headers=token)
    assert response.status_code == 403  # restore over HTTP needs the admin token
    assert fingerprint(env.prod) == before and backup_objects(settings) == objects  # not even a safety backup

    # With the confirmation it runs: safety backup first, then the restore.
    code, body = run_cli(capsys, "backup", "restore", info.id, "--to", "prod", "--confirm", "prod")
    assert code == 0, body
    safety = body["details"]["restore"]["safety_backup"]
    assert safety.endswith("-safety") and get_backup(settings, safety).tables
    after = fingerprint(env.prod)
    assert after != before and after["public.courses"][0] == before["public.courses"][0]
    # ...and the safety backup undoes it.
    restore_backup(settings, safety, "prod", confirm="prod")
    assert fingerprint(env.prod) == before


def test_pg_dump_older_than_the_server_is_a_clear_error_before_anything_is_written(env, monkeypatch, capsys) -> None:
    old = shutil.which("pg_dump", path="/usr/bin")
    if not old:
        pytest.skip("no system pg_dump")
    version = subprocess.run([old, "--version"], capture_output=True, text=True).stdout
    if int(version.split(")")[1].split(".")[0]) >= 16:
        pytest.skip(f"system pg_dump is not older than the server: {version}")
    monkeypatch.setenv("PG_BIN", "/usr/bin")
    with pytest.raises(ConfigError, match="older than the server .*PG_BIN"):
        create_backup(env.settings, "prod", "manual")
    code = cli.main(["backup", "create", "--db", "prod", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 2 and "older than the server" in body["error"]  # an environment problem: exit 2
    assert backup_objects(env.settings) == []


def test_restore_drill_that_disagrees_with_the_manifest_fails_and_still_drops_its_database(make_db, write_settings) -> None:
    prod = make_db()
    create_lms(prod, variant="prod")
    settings = write_settings({"prod": prod}, BACKUP_TOML)
    info = create_backup(settings, "prod", "manual")
    name = BackupName.parse(info.id)
    manifest = settings.storage.get_json(name.manifest_key)
    manifest["tables"]["public.lessons"] += 1  # the manifest now claims a row the dump lacks
    settings.storage.put_json(name.manifest_key, manifest)

    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert result.problems == [] and result.checks["sha256_ok"]  # the bytes are fine...
    assert not result.ok and result.drill["ok"] is False  # ...the drill is not
    assert result.drill["mismatches"] == [
        {"table": "public.lessons", "expected": manifest["tables"]["public.lessons"], "restored": manifest["tables"]["public.lessons"] - 1}
    ]
    assert "public.lessons" in result.all_problems[0]
    recorded = settings.storage.get_json(name.manifest_key)
    assert recorded["verification"]["ok"] is True and recorded["drill"]["ok"] is False
    with psycopg.connect(prod) as conn:
        assert conn.execute("select count(*) from pg_database where datname like 'safesync_drill_%%'").fetchone()[0] == 0


def test_a_verify_records_its_result_on_the_manifest_as_it_is_when_it_ends(make_db, write_settings, monkeypatch) -> None:
    """Verify wrote back the manifest it read when it started, with its
    result: a drill that failed meanwhile (another verify's) came back as the
    old passing one, and a backup whose manifest prune had just deleted (the
    dump goes last) came back as a manifest without its dump."""
    from safesync.functions.backup import verify as verify_module

    prod = make_db()
    create_lms(prod, variant="prod")
    settings = write_settings({"prod": prod}, BACKUP_TOML)
    info = create_backup(settings, "prod", "manual")
    assert verify_backup(settings, info.id, restore_drill_too=True).drill["ok"]
    started = get_backup(settings, info.id)  # what a verify starting now reads (its drill passed)
    with monkeypatch.context() as m:  # meanwhile another verify's drill fails (say, the scratch server ran out of disk)
        m.setattr(verify_module, "restore_drill", lambda settings, info: {"at": utcnow().isoformat(), "ok": False, "problems": ["restore failed"]})
        assert verify_backup(settings, info.id, restore_drill_too=True).drill["ok"] is False
    assert verify_backup(settings, started).ok  # the first verify ends: its integrity check passed
    recorded = settings.storage.get_json(info.manifest_key)
    assert recorded["drill"]["ok"] is False and recorded["verification"]["ok"] is True

    settings.storage.delete(info.manifest_key)  # prune has begun deleting it (manifest first, dump last)
    result = verify_backup(settings, started)
    assert not settings.storage.exists(info.manifest_key)
    assert any("changed while being verified" in w and "no manifest" in w for w in result.warnings), result.warnings


@EVERY_BACKEND
def test_a_verify_never_writes_over_a_manifest_that_changed_after_its_re_read(make_db, write_settings, storage_url, monkeypatch) -> None:
    """Verify re-read the manifest and then wrote it back unconditionally: a
    prune deleting the manifest between the two brought it back without its
    dump, and another verify's record in between was overwritten. The write
    is now conditional on the version re-read (S3 If-Match, GCS generation,
    local file version): a prune ends the record, a concurrent record is
    re-read and kept."""
    from safesync.functions.backup import verify as verify_module

    prod = make_db()
    settings = write_settings({"prod": prod}, BACKUP_TOML, storage_url)
    info = create_backup(settings, "prod", "manual")
    storage = settings.storage
    real_read = verify_module.get_backup_versioned
    meanwhile: list = []

    def read_then(settings, backup_id):
        found = real_read(settings, backup_id)
        if meanwhile:
            meanwhile.pop(0)()  # what another process does right after our re-read
        return found

    monkeypatch.setattr(verify_module, "get_backup_versioned", read_then)

    def other_verify_records() -> None:
        manifest = storage.get_json(info.manifest_key)
        manifest["drill"] = {"at": utcnow().isoformat(), "ok": False, "problems": ["the other verify's drill failed"]}
        storage.put_json(info.manifest_key, manifest)

    meanwhile.append(other_verify_records)
    result = verify_backup(settings, info.id)
    assert result.ok and result.warnings == []
    recorded = storage.get_json(info.manifest_key)
    assert recorded["verification"]["ok"] is True  # ours, written on a second re-read...
    assert recorded["drill"]["problems"] == ["the other verify's drill failed"]  # ...keeping the other's

    meanwhile.append(lambda: storage.delete(info.manifest_key))  # prune's first step
    result = verify_backup(settings, info.id)
    assert not storage.exists(info.manifest_key), "the pruned manifest came back"
    assert any("changed while being verified" in w for w in result.warnings), result.warnings


def _drilling(proc: subprocess.Popen) -> bool:
    """True once the CLI's drill has pg_restore reading the dump."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        return any(c.name() == "pg_restore" and c.io_counters().read_chars > (1 << 20) for c in children)
    except psutil.NoSuchProcess:
        return False


def _drill_databases(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("select datname from pg_database where datname like 'safesync_drill_%%' order by 1")]


def test_a_killed_drill_leaves_its_scratch_database_only_until_the_next_drill(make_db, write_settings) -> None:
    """A drill whose process is killed (SIGKILL, a platform's request
    timeout) never ran its ``drop database``: the scratch database, maybe a
    whole copy of production, stayed on the server for good, one more per
    killed drill. The next drill now drops abandoned ones (nobody connected,
    marked by a drill over an hour ago) and never one in use."""
    from safesync.functions.backup import verify as verify_module

    prod = make_db()
    create_lms(prod, variant="prod")
    add_bulk(prod, 300_000)
    settings = write_settings({"prod": prod}, BACKUP_TOML.replace("compress_level = 1", "compress_level = 0"))
    info = create_backup(settings, "prod", "manual")
    proc = subprocess.Popen(
        [sys.executable, "-m", "safesync.functions.cli", "backup", "verify", info.id, "--restore-drill", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )
    deadline = time.monotonic() + 60
    while not _drilling(proc):
        assert proc.poll() is None and time.monotonic() < deadline, "the drill ended before we could kill it"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    [abandoned] = _drill_databases(prod)

    fresh = verify_backup(settings, info.id, restore_drill_too=True)  # marked within the hour: may be starting
    assert fresh.ok and "dropped_abandoned" not in fresh.drill, fresh.all_problems
    assert _drill_databases(prod) == [abandoned]

    # An hour later. Another drill's database still in use (connected), and
    # an unmarked one, are never touched.
    hours_ago = sql.Literal(verify_module.DRILL_MARK + (utcnow() - timedelta(hours=2)).isoformat())
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create database safesync_drill_prod_inuse template template0")
        conn.execute("create database safesync_drill_prod_unmarked template template0")
        for name in (abandoned, "safesync_drill_prod_inuse"):
            conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(name), hours_ago))
    busy = psycopg.connect(make_conninfo_for(prod, "safesync_drill_prod_inuse"))
    try:
        later = verify_backup(settings, info.id, restore_drill_too=True)
        assert later.ok and later.drill["dropped_abandoned"] == [abandoned], later.drill
        assert _drill_databases(prod) == ["safesync_drill_prod_inuse", "safesync_drill_prod_unmarked"]
    finally:
        busy.close()
        with psycopg.connect(prod, autocommit=True) as conn:
            conn.execute("drop database safesync_drill_prod_inuse")
            conn.execute("drop database safesync_drill_prod_unmarked")


def make_conninfo_for(url: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=dbname)


def test_backup_of_an_empty_database_verifies_and_its_toc_is_checked_against_the_manifest(make_db, write_settings) -> None:
    from safesync.functions.backup.manifest import write_manifest

    empty = make_db()
    settings = write_settings({"prod": empty}, BACKUP_TOML)
    info = create_backup(settings, "prod", "safety")
    assert info.tables == {}

    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert result.ok, result.all_problems  # e.g. the safety backup of a new, empty staging

    # a manifest that counts a table the dump does not hold is caught
    manifest = dict(info.manifest)
    manifest["tables"] = {"public.ghost": 3}
    write_manifest(settings.storage, info.name, manifest)
    problems = verify_backup(settings, info.id, record=False).problems
    assert any("public.ghost" in p and "not in the dump" in p for p in problems), problems


def test_a_table_of_contents_not_read_to_its_end_is_an_error_not_a_short_plan(env, monkeypatch) -> None:
    """``pg_restore --list`` is read by a thread; one that had not finished
    (or whose pipe was closed under it) left a partial listing, which a
    restore would have planned from as if it were the whole dump."""
    from safesync.functions.backup import verify as verify_module

    info = create_backup(env.settings, "prod", "manual")
    assert verify_module.read_toc(env.settings, info)  # the real reader: a full listing
    monkeypatch.setattr(verify_module._ListReader, "run", lambda self: None)  # finished without reading
    with pytest.raises(JobFailed, match="was not read to its end"):
        verify_module.read_toc(env.settings, info)


def test_a_restore_waiting_on_the_applications_lock_is_cancelled_after_the_limit(make_db, write_settings) -> None:
    """pg_restore sets lock_timeout = 0 itself: a restore into a database
    where a session sat idle in a transaction that had read a table waited
    forever for its DROP's lock, and the application's queries on that table
    queued behind it. Now it is cancelled after
    backup.restore_lock_wait_seconds, rolled back, naming the lock and who holds it."""
    prod, scratch = make_db(), make_db()
    for url in (prod, scratch):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table users (id int primary key, name text); insert into users select g, 'u' || g from generate_series(1, 50) g")
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("update users set name = 'prod'")
    settings = write_settings({"prod": prod, "scratch": scratch}, BACKUP_TOML + "restore_lock_wait_seconds = 1\n")
    info = create_backup(settings, "prod", "manual")
    before = fingerprint(scratch)
    holder = psycopg.connect(scratch, application_name="web-app")
    holder.execute("select count(*) from users")  # and then idle in its transaction, holding ACCESS SHARE
    try:
        started = time.perf_counter()
        with pytest.raises(JobFailed) as caught:
            restore_backup(settings, info.id, "scratch")
        elapsed = time.perf_counter() - started
        holder_pid = holder.info.backend_pid
        assert holder.execute("select count(*) from users").fetchone()[0] == 50  # the application's session goes on
    finally:
        holder.rollback()
        holder.close()
    message = caught.value.message
    assert "cancelled" in message and "AccessExclusiveLock on users" in message and "nothing was restored" in message, message
    assert f"pid {holder_pid} (application 'web-app'" in message and "idle in transaction" in message, message
    assert elapsed < 30
    assert fingerprint(scratch) == before
    assert restore_backup(settings, info.id, "scratch").backup.id == info.id  # the lock gone, it restores
    with psycopg.connect(scratch) as conn:
        assert conn.execute("select distinct name from users").fetchall() == [("prod",)]


@pytest.mark.parametrize("storage_url", ["local"], indirect=True)
def test_a_backup_dated_in_the_future_by_a_wrong_clock_is_never_the_latest(env, monkeypatch) -> None:
    """A backup made on a machine whose clock ran a month ahead was the
    newest for a month: ``restore latest`` restored it rather than the real
    newest, and the status page counted the database's last backup as fresh
    (a negative age) even if no backup ran after it. Its manifest says it
    started after storage received it: it is damaged, named, and passed over."""
    from safesync.functions.status.collect import last_backups

    settings = env.settings
    real_now = create_module.utcnow
    with monkeypatch.context() as m:
        m.setattr(create_module, "utcnow", lambda: real_now() + timedelta(days=30))
        skewed = create_backup(settings, "prod", "manual")
    good = create_backup(settings, "prod", "daily")
    assert latest_backup(settings, "prod").id == good.id
    catalog = backup_catalog(settings, "prod")
    assert [d.id for d in catalog.damaged] == [skewed.id] and "clock" in catalog.damaged[0].problem
    reasons: list[str] = []
    assert [row["id"] for row in last_backups(settings, reasons)] == [good.id]
    assert any(skewed.id in r and r.startswith("degraded") for r in reasons), reasons
