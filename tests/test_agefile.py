"""age files (shared/agefile.py) against the stock ``age`` CLI (Debian's
``age``, the reference Go implementation): each reads what the other
writes; every truncation and every flipped byte is refused, and nothing
unauthenticated is ever yielded; memory stays constant on a long stream;
keys come only from the environment and never appear in a message."""

from __future__ import annotations

import os
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from safesync.shared import agefile
from safesync.shared.errors import ConfigError
from safesync.shared.log import redact
from tests import sentinels
from tests.system_tools import ensure_tool

IDENTITY = sentinels.SECRETS["SAFESYNC_AGE_IDENTITY"]
RECIPIENT = sentinels.AGE_RECIPIENT
# the spec's example X25519 recipient (c2sp.org/age): a second recipient whose key we lack
OTHER_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
# sizes around the 64 KiB chunk: empty, one byte, a chunk less/exactly/more, several
SIZES = [0, 1, 65535, 65536, 65537, 2 * 65536, 3 * 65536 + 17, 1_500_000]


@pytest.fixture(scope="module")
def age_cli() -> str:
    return ensure_tool("age", "age")


@pytest.fixture(scope="module")
def keypair(tmp_path_factory) -> tuple[Path, str]:
    """A key made by the real ``age-keygen`` (its file format, comments included)."""
    keygen = ensure_tool("age-keygen", "age")
    path = tmp_path_factory.mktemp("agekey") / "key.txt"
    subprocess.run([keygen, "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run([keygen, "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()
    return path, public


def identities() -> list[agefile.Identity]:
    return agefile.load_identities({agefile.IDENTITY_ENV: IDENTITY}, purpose="the test")


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def encrypt(data: bytes, recipients: list[str], piece: int = 100_000) -> bytes:
    return b"".join(agefile.encrypt(pieces(data, piece), agefile.parse_recipients(recipients)))


@pytest.mark.parametrize("size", SIZES)
def test_the_age_cli_decrypts_what_we_write(age_cli, keypair, size) -> None:
    key, public = keypair
    data = os.urandom(size)
    sealed = encrypt(data, [OTHER_RECIPIENT, public], piece=7_777)
    assert sealed.startswith(b"age-encryption.org/v1\n-> X25519 ")
    out = subprocess.run([age_cli, "--decrypt", "-i", str(key)], input=sealed, capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data


@pytest.mark.parametrize("size", SIZES)
def test_we_decrypt_what_the_age_cli_writes(age_cli, keypair, size) -> None:
    key, public = keypair
    data = os.urandom(size)
    sealed = subprocess.run([age_cli, "-r", OTHER_RECIPIENT, "-r", public], input=data, capture_output=True, check=True).stdout
    mine = agefile.load_identities({agefile.IDENTITY_FILE_ENV: str(key)}, purpose="the test")
    assert [i.recipient for i in mine] == [public]
    for piece in (1, 4096, 65552, 1 << 20):
        if piece == 1 and size > 70_000:
            continue
        assert b"".join(agefile.decrypt(pieces(sealed, piece), mine)) == data


def test_the_wrong_identity_opens_nothing(age_cli) -> None:
    sealed = encrypt(b"secret rows", [OTHER_RECIPIENT])
    with pytest.raises(agefile.NoMatchingIdentity):
        list(agefile.decrypt([sealed], identities()))


def _yields_only_truth(sealed: bytes, data: bytes) -> agefile.AgeError:
    """Decrypt ``sealed`` (which must fail): everything yielded before the
    failure is a true prefix of ``data``."""
    got = bytearray()
    with pytest.raises(agefile.AgeError) as caught:
        for piece in agefile.decrypt(pieces(sealed, 50_000), identities()):
            got += piece
    assert data.startswith(bytes(got))
    return caught.value


def test_every_truncation_is_refused() -> None:
    data = os.urandom(3 * 65536 + 100)
    sealed = encrypt(data, [RECIPIENT])
    header = sealed.index(b"\n--- ") + 1 + 48  # "--- " + 43 + "\n"
    payload = header + 16
    cuts = {1, 20, header - 1, header, header + 8, payload, payload + 1, len(sealed) - 1, len(sealed) - 16}
    cuts |= {payload + n * agefile.SEALED_CHUNK for n in (1, 2, 3)}  # exactly at chunk boundaries: looks whole
    cuts |= {payload + n * agefile.SEALED_CHUNK + d for n in (1, 2) for d in (-1, 1, 16)}
    for cut in sorted(c for c in cuts if 0 < c < len(sealed)):
        _yields_only_truth(sealed[:cut], data)


def test_every_changed_byte_is_refused() -> None:
    data = os.urandom(2 * 65536 + 5)
    sealed = encrypt(data, [RECIPIENT])
    header_end = sealed.index(b"\n--- ") + 49
    positions = set(range(0, header_end + 20)) | set(range(header_end + 16, len(sealed), 4099)) | {len(sealed) - 1}
    for at in sorted(positions):
        changed = bytearray(sealed)
        changed[at] ^= 0x01
        _yields_only_truth(bytes(changed), data)
    # bytes appended after the final chunk are a change too
    _yields_only_truth(sealed + b"\x00" * 20, data)
    _yields_only_truth(sealed + os.urandom(agefile.SEALED_CHUNK + 3), data)


def test_not_an_age_file_is_refused_clearly() -> None:
    for junk, needle in ((b"PGDMP\x01\x0e\x00" + os.urandom(5000), "not an age v1 file"), (b"", "not an age file"),
                         (b"age-encryption.org/v1\n" + b"x" * (agefile.MAX_HEADER + 10), "no header end")):
        with pytest.raises(agefile.DamagedFile, match=needle):
            list(agefile.decrypt(pieces(junk, 4096), identities()))


def test_memory_stays_constant_on_a_long_stream() -> None:
    """256 MiB through encryption and decryption: the peak of Python's
    allocations stays a few MiB (one chunk in, one piece out)."""
    block = os.urandom(1 << 20)

    def source():
        for _ in range(256):
            yield block

    tracemalloc.start()
    try:
        total = 0
        for piece in agefile.decrypt(agefile.encrypt(source(), agefile.parse_recipients([RECIPIENT])), identities()):
            total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 256 << 20
    assert peak < 12 << 20, f"peak {peak / (1 << 20):.1f} MiB"


def test_identities_come_from_the_environment_or_a_file_and_never_show(keypair, tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        agefile.load_identities({}, purpose="restoring prod-1")
    assert agefile.IDENTITY_ENV in caught.value.message and agefile.IDENTITY_FILE_ENV in caught.value.message
    assert "restoring prod-1" in caught.value.message

    key, public = keypair  # age-keygen's file: comments, then the key
    secret = next(line for line in key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    both = agefile.load_identities({agefile.IDENTITY_FILE_ENV: str(key), agefile.IDENTITY_ENV: IDENTITY}, purpose="x")
    assert [i.recipient for i in both] == [RECIPIENT, public]
    assert secret not in repr(both) and IDENTITY not in repr(both)
    assert secret not in redact(f"boom: {secret}")

    broken = IDENTITY[:-3] + ("QQQ" if not IDENTITY.endswith("QQQ") else "PPP")  # its checksum fails
    for text, needle in (
        (f"# a comment\n{broken}\n", "line 2 is not a valid age identity"),
        ("AGE-PLUGIN-YUBIKEY-1QQQQQQ\n", "plugins are not supported"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "only age X25519 identities"),
        ("# only comments\n", "holds no identity"),
    ):
        with pytest.raises(ConfigError, match=needle) as caught:
            agefile.load_identities({agefile.IDENTITY_ENV: text}, purpose="x")
        assert broken not in caught.value.message and "b3BlbnNzaC1rZXktdjEAAAAA" not in caught.value.message
    with pytest.raises(ConfigError, match="cannot read"):
        agefile.load_identities({agefile.IDENTITY_FILE_ENV: str(tmp_path / "missing.txt")}, purpose="x")
    # what was read is redacted from every later message, in any case
    assert IDENTITY not in redact(f"boom: {IDENTITY} / {IDENTITY.lower()}")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwq", "checksum is wrong"),
        ("age1qqqq", "does not start with age1"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN", "only age1… keys"),
        (IDENTITY, "only age1… keys"),  # a private key pasted by mistake: refused, and not echoed
    ],
)
def test_bad_recipients_say_what_is_wrong(text, needle) -> None:
    with pytest.raises(ValueError, match=needle) as caught:
        agefile.parse_recipient(text)
    assert IDENTITY not in str(caught.value)
