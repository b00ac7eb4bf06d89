"""Encrypted backups (``backup.encrypt = "age"``) against a real PostgreSQL
16 on the local folder, the GCS emulator and the S3 emulator: the stored
object is a standard age file the stock ``age`` CLI opens and pipes into
``pg_restore``; verify, drill, restore, restore's and the staging clone's
safety backups all work encrypted; a missing or wrong identity is a clear
error (exit 2 / HTTP 400) before anything is touched; a changed or cut
object is never restored."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from safesync.functions import cli
from safesync.functions.backup import create_backup, get_backup, list_backups, restore_backup, verify_backup
from safesync.functions.serve import create_app
from safesync.shared import agefile, pgtools
from safesync.shared.db import connect, database_fingerprint
from safesync.shared.errors import ConfigError, Refused
from tests import sentinels
from tests.fixtures.lms import create_lms
from tests.fixtures.supabase import supabase_dev, supabase_staging, supabase_templates  # noqa: F401  (fixtures)
from tests.system_tools import ensure_tool

IDENTITY = sentinels.SECRETS["SAFESYNC_AGE_IDENTITY"]
PASTED_PRIVATE_KEY = "AGE-SECRET-KEY-1" + "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" * 2  # not a sentinel: it lands in a file
ADMIN = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_ADMIN_TOKEN']}"}


def toml(*recipients: str) -> str:
    keys = ", ".join(f'"{r}"' for r in recipients)
    return f'[backup]\ndatabases = ["prod"]\nencrypt = "age"\nage_recipients = [{keys}]\n'


@pytest.fixture(scope="module")
def keygen_key(tmp_path_factory) -> tuple[Path, str]:
    """A second key, made by the real ``age-keygen``, for the ``age`` CLI
    to decrypt with (and to be the wrong key elsewhere)."""
    keygen = ensure_tool("age-keygen", "age")
    path = tmp_path_factory.mktemp("agekey") / "key.txt"
    subprocess.run([keygen, "-o", str(path)], check=True, capture_output=True)
    return path, subprocess.run([keygen, "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(params=["local", "gcs", "s3"])
def storage_url(request) -> str | None:
    return None if request.param == "local" else request.getfixturevalue(f"{request.param}_bucket_url")


def fingerprint(url: str) -> dict:
    with connect(url) as conn:
        return database_fingerprint(conn)


def objects(settings) -> dict[str, bytes]:
    return {o.key: settings.storage.get_bytes(o.key) for o in settings.storage.list("")}


def pg_restore() -> str:
    return str(pgtools.find_tool("pg_restore", at_least=16, prefer="zstd").path)


def test_encrypted_round_trip_on_every_backend(make_db, write_settings, storage_url, keygen_key, tmp_path) -> None:
    key_file, other = keygen_key
    prod, scratch = make_db(), make_db()
    create_lms(prod, variant="prod")
    create_lms(scratch, variant="dev")
    settings = write_settings({"prod": prod, "scratch": scratch}, toml(sentinels.AGE_RECIPIENT, other), storage_url)
    info = create_backup(settings, "prod", "manual")

    # One dump object, named for what it is; the manifest says how and for whom.
    assert info.encrypted and info.dump_key.endswith(f"{info.id}.dump.age")
    assert not settings.storage.exists(info.dump_key.removesuffix(".age"))
    manifest = settings.storage.get_json(info.manifest_key)
    assert manifest["manifest_version"] == 2
    assert manifest["encryption"] == {"scheme": "age", "recipients": [
        {"type": "X25519", "fingerprint": sentinels.AGE_RECIPIENT}, {"type": "X25519", "fingerprint": other}]}
    assert manifest["keys"]["dump"] == info.dump_key

    # The checksum is of the stored (encrypted) bytes: sha256sum -c works on a download.
    stored = settings.storage.get_bytes(info.dump_key)
    assert stored.startswith(b"age-encryption.org/v1\n") and b"PGDMP" not in stored[:4096]
    assert manifest["size"] == len(stored) and manifest["sha256"] == hashlib.sha256(stored).hexdigest()
    (tmp_path / f"{info.id}.dump.age").write_bytes(stored)
    (tmp_path / f"{info.id}.sha256").write_bytes(settings.storage.get_bytes(info.sha256_key))
    assert subprocess.run(["sha256sum", "-c", f"{info.id}.sha256"], cwd=tmp_path, capture_output=True).returncode == 0
    # Without the key it is no archive; with the stock CLI it is a standard one.
    assert subprocess.run([pg_restore(), "--list"], input=stored, capture_output=True).returncode != 0
    age = ensure_tool("age", "age")
    listed = subprocess.run(f"{age} -d -i {key_file} < {tmp_path / (info.id + '.dump.age')} | {pg_restore()} --list",
                            shell=True, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "TABLE DATA public courses" in listed.stdout

    # Verify (every chunk authenticated), drill, restore: all through the identity.
    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert result.ok, result.all_problems
    assert result.checks["decrypted"] is True and result.checks["sha256_ok"] is True
    assert result.drill["rows"] == info.rows_total > 0
    restored = restore_backup(settings, info.id, "scratch")
    assert fingerprint(scratch) == fingerprint(prod)
    assert restored.safety_backup is not None and restored.safety_backup.encrypted  # the undo point is encrypted too
    assert verify_backup(settings, restored.safety_backup.id).ok
    assert {b.id: b.row()["encrypted"] for b in list_backups(settings)} == {info.id: "age", restored.safety_backup.id: "age"}


@pytest.fixture
def world(make_db, write_settings, keygen_key):
    """prod, a scratch database with other data, a plain backup made before
    encryption was turned on, and an encrypted one."""
    prod, scratch = make_db(), make_db()
    create_lms(prod, variant="prod")
    with connect(prod) as conn:  # a dump of several 64 KiB age chunks
        conn.execute("create table bulk as select g as id, md5(g::text) || md5((g * 7)::text) as payload from generate_series(1, 20000) g")
    create_lms(scratch, variant="dev")
    plain = create_backup(write_settings({"prod": prod, "scratch": scratch}, '[backup]\ndatabases = ["prod"]\n'), "prod", "manual")
    settings = write_settings({"prod": prod, "scratch": scratch}, toml(sentinels.AGE_RECIPIENT))
    encrypted = create_backup(settings, "prod", "manual")
    return settings, prod, scratch, plain, encrypted


def _cli(capsys, *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("identity", ["missing", "wrong", "unreadable file"])
def test_a_missing_or_wrong_identity_is_a_clear_error_before_anything_is_touched(world, keygen_key, monkeypatch, capsys, identity) -> None:
    settings, prod, scratch, plain, encrypted = world
    key_file, other = keygen_key
    wrong_secret = next(line for line in key_file.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    monkeypatch.delenv(agefile.IDENTITY_ENV)
    if identity == "wrong":
        monkeypatch.setenv(agefile.IDENTITY_ENV, wrong_secret)
    elif identity == "unreadable file":
        monkeypatch.setenv(agefile.IDENTITY_FILE_ENV, str(key_file.parent / "no-such-key.txt"))
    expected = {"missing": f"needs the age identity .*set {agefile.IDENTITY_ENV}",
                "wrong": f"does not open backup {encrypted.id}: it is encrypted for {sentinels.AGE_RECIPIENT}, the identity given is for {other}",
                "unreadable file": "cannot read .*no-such-key.txt"}[identity]
    before, stored = fingerprint(scratch), objects(settings)
    messages = []

    with pytest.raises(ConfigError, match=expected) as caught:
        verify_backup(settings, encrypted.id, restore_drill_too=True)
    messages.append(caught.value.message)
    with pytest.raises(ConfigError, match=expected) as caught:
        restore_backup(settings, encrypted.id, "scratch")
    messages.append(caught.value.message)
    for argv in (("backup", "verify", encrypted.id), ("backup", "verify", "--all"), ("backup", "restore", encrypted.id, "--to", "scratch")):
        code, body = _cli(capsys, *argv)
        assert code == 2 and "\n" not in body["error"], body
        messages.append(body["error"])
    client = create_app().test_client()
    for body in ({"action": "verify", "id": encrypted.id}, {"action": "restore", "id": encrypted.id, "to": "scratch"}):
        response = client.post("/backup", json=body, headers=ADMIN)
        assert response.status_code == 400, response.get_json()
        messages.append(response.get_json()["error"])

    # Nothing touched: the target as it was, no safety backup, no verification recorded.
    assert fingerprint(scratch) == before
    after = objects(settings)
    assert {k for k in after if not k.startswith("runs/")} == {k for k in stored if not k.startswith("runs/")}
    assert all(after[k] == v for k, v in stored.items() if not k.startswith("runs/"))
    assert not any(secret in text for text in messages for secret in (IDENTITY, wrong_secret))
    # A plain backup needs no identity.
    assert verify_backup(settings, plain.id).ok
    restore_backup(settings, plain.id, "scratch")
    assert fingerprint(scratch) == fingerprint(prod)


def test_the_identity_can_come_from_a_file(world, tmp_path, monkeypatch) -> None:
    settings, _, _, _, encrypted = world
    path = tmp_path / "backup-key.txt"
    with open(path, "w") as handle:  # the sentinel key, in a file the leak scan never sees afterwards
        handle.write(f"# public key: {sentinels.AGE_RECIPIENT}\n{IDENTITY}\n")
    try:
        monkeypatch.delenv(agefile.IDENTITY_ENV)
        monkeypatch.setenv(agefile.IDENTITY_FILE_ENV, str(path))
        assert verify_backup(settings, encrypted.id).ok
    finally:
        path.unlink()


@pytest.mark.parametrize("damage", ["payload byte", "header byte", "cut at a chunk boundary", "cut short"])
def test_a_changed_or_cut_encrypted_backup_fails_verify_and_is_never_restored(world, damage) -> None:
    settings, _, scratch, _, encrypted = world
    data = bytearray(settings.storage.get_bytes(encrypted.dump_key))
    header = data.index(b"\n--- ") + 49
    if damage == "payload byte":
        data[header + 16 + 70_000] ^= 0x01  # inside the second chunk, after the table of contents
    elif damage == "header byte":
        data[data.index(b"\n", 30) + 5] ^= 0x01  # the stanza's wrapped file key
    elif damage == "cut at a chunk boundary":
        data = data[: header + 16 + agefile.SEALED_CHUNK]
    else:
        data = data[:-1]
    assert len(data) > header + 16 + 2 * agefile.SEALED_CHUNK or damage.startswith("cut"), "the dump must span chunks"
    settings.storage.put(encrypted.dump_key, bytes(data))

    result = verify_backup(settings, encrypted.id)
    assert not result.ok
    assert any("damaged" in p for p in result.problems), result.problems
    assert any("SHA-256" in p or "bytes, the manifest says" in p for p in result.problems)
    assert get_backup(settings, encrypted.id).verification["ok"] is False

    before = fingerprint(scratch)
    with pytest.raises(Refused, match=f"backup {encrypted.id} (is damaged|does not match its manifest)"):
        restore_backup(settings, encrypted.id, "scratch")
    assert fingerprint(scratch) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('encrypt = "age"', 'encrypt = "age" needs age_recipients'),
        (f'age_recipients = ["{sentinels.AGE_RECIPIENT}"]', 'age_recipients are set but encrypt is not "age"'),
        ('encrypt = "age"\nage_recipients = ["age1nope"]', "item 0: 'age1nope' is not an age1… X25519 recipient"),
        (f'encrypt = "age"\nage_recipients = ["{PASTED_PRIVATE_KEY}"]', "only age1… keys"),  # refused, not echoed
        (f'encrypt = "age"\nage_recipients = ["{sentinels.AGE_RECIPIENT}", "{sentinels.AGE_RECIPIENT.upper()}"]', "lists a key twice"),
        ('encrypt = "gpg"', "backup.encrypt"),
    ],
)
def test_bad_encryption_settings_are_one_line_config_errors(write_settings, extra, message) -> None:
    with pytest.raises(ConfigError) as caught:
        write_settings({"prod": "postgresql://localhost/prod"}, f'[backup]\ndatabases = ["prod"]\n{extra}\n')
    assert message in caught.value.message and "\n" not in caught.value.message
    assert PASTED_PRIVATE_KEY[16:] not in caught.value.message


def test_the_staging_clone_safety_backup_is_encrypted(write_settings, supabase_dev, supabase_staging) -> None:
    from safesync.functions.staging_clone import clone

    settings = write_settings(
        {"dev": supabase_dev, "staging": supabase_staging, "prod": supabase_dev},
        '[staging_clone]\nsource = "dev"\ntarget = "staging"\nschemas = ["public", "hotels"]\n' + toml(sentinels.AGE_RECIPIENT),
    )
    answer = clone(settings)
    assert answer.exit_code == 0, answer.body
    safety = get_backup(settings, answer.body["details"]["safety_backup"]["id"])
    assert safety.encrypted and safety.dump_key.endswith(".dump.age")
    assert verify_backup(settings, safety.id).ok


def test_doctor_says_whether_this_environment_can_read_the_encrypted_backups(write_settings, keygen_key, monkeypatch) -> None:
    from safesync.shared.preflight import check_backup_identity

    key_file, other = keygen_key
    settings = write_settings({"prod": "postgresql://localhost/prod"}, toml(other))

    def check() -> tuple[str, str]:
        (found,) = check_backup_identity(settings)
        return found.status, found.detail

    assert check() == ("fail", f"the identity is for {sentinels.AGE_RECIPIENT}, none of backup.age_recipients")
    monkeypatch.setenv(agefile.IDENTITY_FILE_ENV, str(key_file))
    assert check() == ("ok", f"opens backups encrypted for {other}")
    monkeypatch.delenv(agefile.IDENTITY_ENV)
    monkeypatch.setenv(agefile.IDENTITY_FILE_ENV, str(key_file) + ".missing")
    status, detail = check()
    assert status == "fail" and "cannot read" in detail
    monkeypatch.delenv(agefile.IDENTITY_FILE_ENV)
    assert check()[0] == "warn"
    assert list(check_backup_identity(write_settings({"prod": "postgresql://localhost/prod"}))) == []  # not encrypted: nothing to say
