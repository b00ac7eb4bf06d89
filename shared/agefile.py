"""age files (https://age-encryption.org/v1, c2sp.org/age) with X25519
recipients: keys, and streaming encryption and decryption.

Built on ``cryptography``'s primitives (X25519, HKDF-SHA-256, HMAC-SHA-256,
ChaCha20-Poly1305) exactly as the spec composes them, one 64 KiB chunk at a
time on the calling thread. Why not ``pyrage`` (the Rust age crate): its
streaming API drives Python file objects itself while holding the GIL for
the whole stream, so bridging it to our chunk pipelines (pg_dump → storage,
storage → pg_restore) needs a worker thread, and the two threads then
convoy on the GIL — measured at about 90 MB/s, against about 400 MB/s here.
The stock ``age`` CLI reads what ``encrypt`` writes and ``decrypt`` reads
what it writes (``tests/test_agefile.py``).

Memory is constant: one chunk of input and one piece of output (≤ 1 MiB)
are held at a time. Decryption yields only authenticated plaintext, and
proves the end of the file: a file cut at any byte (a chunk boundary too)
raises DamagedFile after its last whole chunk.

Identities are secrets: they come only from the environment
(``SAFESYNC_AGE_IDENTITY``, inline, or the file ``SAFESYNC_AGE_IDENTITY_FILE``
names), and every secret line of them is handed to the redaction as it is
read. Recipients are public keys and live in the config.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ConfigError
from .redaction import key_lines, remember

IDENTITY_ENV = "SAFESYNC_AGE_IDENTITY"
IDENTITY_FILE_ENV = "SAFESYNC_AGE_IDENTITY_FILE"
MAX_IDENTITY_FILE = 64_000

VERSION_LINE = b"age-encryption.org/v1\n"
X25519_INFO = b"age-encryption.org/v1/X25519"
CHUNK = 64 * 1024  # plaintext per payload chunk (the spec's)
TAG = 16
SEALED_CHUNK = CHUNK + TAG
OUTPUT_PIECE = 1 << 20  # what the iterators yield at a time
MAX_HEADER = 64 * 1024  # ours is ~130 bytes a recipient; more is not an age header we can use
_ZERO_NONCE = bytes(12)


class AgeError(Exception):
    """An age stream failed (the message never holds key material)."""


class NoMatchingIdentity(AgeError):
    """No identity opens the file's header: the wrong key — or a damaged
    stanza (an X25519 stanza that does not decrypt looks the same)."""


class DamagedFile(AgeError):
    """Not an age file, or a header or payload chunk that fails its
    authentication (tampered, truncated, or corrupt)."""


# --- keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """An X25519 public key files are encrypted to. Its ``age1…`` text is
    its own fingerprint: ``age-keygen -y key.txt`` prints it."""

    text: str

    @property
    def fingerprint(self) -> str:
        return self.text

    @property
    def public_bytes(self) -> bytes:
        return _bech32_decode(self.text, "age")

    def describe(self) -> dict[str, str]:
        return {"type": "X25519", "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Identity:
    """An X25519 private key (``AGE-SECRET-KEY-1…``). ``repr`` shows only
    the public side."""

    key: X25519PrivateKey
    recipient: str

    def __repr__(self) -> str:
        return f"Identity(for {self.recipient})"


def parse_recipient(text: str) -> Recipient:
    """An ``age1…`` X25519 recipient (what ``age-keygen`` prints as the
    public key); ValueError says what is wrong."""
    text = text.strip()
    shown = f"{text[:12]}…" if len(text) > 12 else repr(text)
    if not text.lower().startswith("age1") or text.lower().startswith(("age1pq1", "age1tag")):
        raise ValueError(f"{shown} is not an X25519 age recipient: only age1… keys (as age-keygen prints them) are supported")
    try:
        data = _bech32_decode(text, "age")
    except ValueError as exc:
        raise ValueError(f"{shown} is not an age1… X25519 recipient ({exc})") from None
    if len(data) != 32:
        raise ValueError(f"{shown} is not an age1… X25519 recipient (it holds {len(data)} bytes, not 32)")
    return Recipient(text.lower())


def parse_recipients(texts: Iterable[str]) -> list[Recipient]:
    return [parse_recipient(text) for text in texts]


def load_identities(env: Mapping[str, str], *, purpose: str) -> list[Identity]:
    """The identities in ``SAFESYNC_AGE_IDENTITY`` and the file
    ``SAFESYNC_AGE_IDENTITY_FILE`` names (either or both; ``age-keygen``
    output). ConfigError (exit 2 / HTTP 400) when there are none or they
    cannot be read; ``purpose`` says what needs them."""
    texts: list[tuple[str, str]] = []
    inline = env.get(IDENTITY_ENV, "").strip()
    if inline:
        texts.append((IDENTITY_ENV, inline))
    path = env.get(IDENTITY_FILE_ENV, "").strip()
    if path:
        texts.append((f"{IDENTITY_FILE_ENV} ({path})", _read_identity_file(path)))
    if not texts:
        raise ConfigError(
            f"{purpose} needs the age identity (the private key): set {IDENTITY_ENV} to it, "
            f"or {IDENTITY_FILE_ENV} to the file that holds it (e.g. made by `age-keygen -o key.txt`)"
        )
    identities: list[Identity] = []
    for where, text in texts:
        remember(text, *key_lines(text))
        identities += _parse_identities(text, where)
    return identities


def _read_identity_file(path: str) -> str:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_IDENTITY_FILE:
            raise ConfigError(f"{IDENTITY_FILE_ENV}: {path} is over {MAX_IDENTITY_FILE} bytes: not an identity file")
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{IDENTITY_FILE_ENV}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _parse_identities(text: str, where: str) -> list[Identity]:
    """Never echoes the text: a message names the line number only."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-----BEGIN"):
            raise ConfigError(f"{where}: line {number} starts an SSH/PEM key; only age X25519 identities (AGE-SECRET-KEY-1…) are supported")
        if not line.upper().startswith("AGE-SECRET-KEY-1") or line.upper().startswith("AGE-SECRET-KEY-PQ-"):
            kind = "an age plugin identity (plugins are not supported)" if line.startswith("AGE-PLUGIN-") else "not an age X25519 identity"
            raise ConfigError(f"{where}: line {number} is {kind}")
        try:
            secret = _bech32_decode(line, "age-secret-key-")
            if len(secret) != 32:
                raise ValueError("not 32 bytes")
        except ValueError:
            raise ConfigError(f"{where}: line {number} is not a valid age identity (its checksum or length is wrong)") from None
        key = X25519PrivateKey.from_private_bytes(secret)
        found.append(Identity(key, _bech32_encode("age", key.public_key().public_bytes_raw())))
    if not found:
        raise ConfigError(f"{where} holds no identity (expected AGE-SECRET-KEY-1… lines)")
    return found


# --- encryption -------------------------------------------------------------------


def encrypt(chunks: Iterable[bytes], recipients: list[Recipient]) -> Iterator[bytes]:
    """``chunks`` as one binary age file for ``recipients``, streamed."""
    if not recipients:
        raise ValueError("age encryption needs at least one recipient")
    file_key = os.urandom(16)
    header = VERSION_LINE + b"".join(_x25519_stanza(file_key, r) for r in recipients) + b"---"
    nonce = os.urandom(16)
    out = _Pieces()
    out.add(header + b" " + _b64(_header_mac(file_key, header)) + b"\n" + nonce)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    counter = 0
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        data = memoryview(rest + chunk if rest else chunk)
        start = 0
        while len(data) - start > CHUNK:  # a whole chunk with more after it: not the last
            out.add(aead.encrypt(_chunk_nonce(counter, last=False), data[start : start + CHUNK], None))
            counter += 1
            start += CHUNK
            if out.full:
                yield out.take()
        rest = bytes(data[start:])
    out.add(aead.encrypt(_chunk_nonce(counter, last=True), rest, None))  # empty only for an empty payload
    yield out.take()


class _Pieces:
    """Output gathered into pieces of about ``OUTPUT_PIECE`` bytes (one copy
    each), so storage and hashing see few, large writes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        if data:
            self.parts.append(data)
            self.size += len(data)

    @property
    def full(self) -> bool:
        return self.size >= OUTPUT_PIECE

    def take(self) -> bytes:
        piece = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return piece


def _x25519_stanza(file_key: bytes, recipient: Recipient) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    their = recipient.public_bytes
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(their))
    body = ChaCha20Poly1305(_hkdf(shared, share + their, X25519_INFO)).encrypt(_ZERO_NONCE, file_key, None)
    return b"-> X25519 " + _b64(share) + b"\n" + _wrap64(_b64(body))


# --- decryption -------------------------------------------------------------------


def decrypt(chunks: Iterable[bytes], identities: list[Identity]) -> Iterator[bytes]:
    """The plaintext of the age file ``chunks``, streamed: every chunk is
    authenticated before it is yielded, and the end of the file is proven.
    NoMatchingIdentity when no identity opens the header; DamagedFile for
    anything that is not the age file that was written."""
    source = iter(chunks)
    header, body = _read_header(source)
    file_key = _unwrap(header, identities)
    if not hmac.compare_digest(_header_mac(file_key, header.signed), header.mac):
        raise DamagedFile("age header MAC does not match: the header was changed")
    while len(body) < 16:
        more = next(source, None)
        if more is None:
            raise DamagedFile("age file is truncated: it ends inside the payload nonce")
        body += more
    aead = ChaCha20Poly1305(_hkdf(file_key, bytes(body[:16]), b"payload"))
    rest = b""
    counter = 0
    out = _Pieces()
    for chunk in itertools.chain([bytes(body[16:])], source):
        if not chunk:
            continue
        data = memoryview(rest + chunk if rest else chunk)
        start = 0
        while len(data) - start > SEALED_CHUNK:  # more follows: not the last chunk
            out.add(_open_chunk(aead, counter, data[start : start + SEALED_CHUNK], last=False))
            counter += 1
            start += SEALED_CHUNK
            if out.full:
                yield out.take()
        rest = bytes(data[start:])
    if len(rest) < TAG:
        raise DamagedFile("age file is truncated: its final chunk is missing")
    last = _open_chunk(aead, counter, memoryview(rest), last=True)
    if not last and counter:
        raise DamagedFile("age file ends with an empty chunk (not allowed after data)")
    out.add(last)
    if out.size:
        yield out.take()


def _open_chunk(aead: ChaCha20Poly1305, counter: int, sealed: memoryview, *, last: bool) -> bytes:
    try:
        return aead.decrypt(_chunk_nonce(counter, last=last), sealed, None)
    except InvalidTag:
        if last:
            raise DamagedFile(f"age payload chunk {counter} fails authentication: the file is truncated or changed") from None
        raise DamagedFile(f"age payload chunk {counter} fails authentication: the file was changed") from None


@dataclass
class _Header:
    stanzas: list[tuple[list[bytes], bytes]]  # (arguments, body)
    signed: bytes  # everything up to and including "---"
    mac: bytes


def _read_header(source: Iterator[bytes]) -> tuple[_Header, bytearray]:
    """Parse the header off the front of ``source``; returns it and the
    bytes read past it."""
    buffer = bytearray()
    while b"\n--- " not in buffer or buffer.find(b"\n", buffer.find(b"\n--- ") + 1) < 0:
        if len(buffer) > MAX_HEADER:
            raise DamagedFile(f"not an age file this reads: no header end in its first {MAX_HEADER} bytes")
        more = next(source, None)
        if more is None:
            raise DamagedFile("not an age file: it ends before its header does" if buffer.startswith(VERSION_LINE[:8]) or not buffer else "not an age file")
        buffer += more
        if len(buffer) >= len(VERSION_LINE) and not buffer.startswith(VERSION_LINE):
            raise DamagedFile("not an age v1 file (its first line is not age-encryption.org/v1)")
    mac_at = buffer.find(b"\n--- ") + 1
    end = buffer.find(b"\n", mac_at)
    lines = bytes(buffer[len(VERSION_LINE) : mac_at]).split(b"\n")[:-1]
    stanzas: list[tuple[list[bytes], bytes]] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith(b"-> "):
            raise DamagedFile("age header is malformed (a stanza does not start with '-> ')")
        args = lines[i][3:].split(b" ")
        if not args or any(not a or any(c < 33 or c > 126 for c in a) for a in args):
            raise DamagedFile("age header is malformed (a stanza argument is empty or not printable)")
        i += 1
        body_lines = []
        while True:
            if i >= len(lines):
                raise DamagedFile("age header is malformed (a stanza body does not end)")
            line = lines[i]
            i += 1
            if len(line) > 64:
                raise DamagedFile("age header is malformed (a stanza body line is over 64 columns)")
            body_lines.append(line)
            if len(line) < 64:
                break
        stanzas.append((args, _unb64(b"".join(body_lines))))
    if not stanzas:
        raise DamagedFile("age header has no recipient stanza")
    mac = _unb64(bytes(buffer[mac_at + 4 : end]))
    if len(mac) != 32:
        raise DamagedFile("age header MAC is not 32 bytes")
    return _Header(stanzas, bytes(buffer[: mac_at + 3]), mac), buffer[end + 1 :]


def _unwrap(header: _Header, identities: list[Identity]) -> bytes:
    """The file key from the first X25519 stanza an identity opens (other
    stanza types are ignored, as the spec says)."""
    for args, body in header.stanzas:
        if args[0] != b"X25519":
            continue
        if len(args) != 2:
            raise DamagedFile("age X25519 stanza must have exactly two arguments")
        share = _unb64(args[1])
        if len(share) != 32 or len(body) != 32:
            raise DamagedFile("age X25519 stanza has the wrong share or body length")
        for identity in identities:
            try:
                shared = identity.key.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:  # all-zero shared secret (a low-order share): the spec says abort
                raise DamagedFile("age X25519 stanza has a low-order share") from None
            ours = identity.key.public_key().public_bytes_raw()
            try:
                return ChaCha20Poly1305(_hkdf(shared, share + ours, X25519_INFO)).decrypt(_ZERO_NONCE, body, None)
            except InvalidTag:
                continue
    raise NoMatchingIdentity("no identity given opens the age header")


# --- the format's pieces -------------------------------------------------------------


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _header_mac(file_key: bytes, signed: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), signed, hashlib.sha256).digest()


def _chunk_nonce(counter: int, *, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    """Canonical unpadded base64 only (the spec: reject anything else)."""
    if b"=" in text or len(text) % 4 == 1:
        raise DamagedFile("age header holds invalid base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DamagedFile("age header holds invalid base64") from None
    if _b64(data) != text:
        raise DamagedFile("age header holds non-canonical base64")
    return data


def _wrap64(text: bytes) -> bytes:
    """A stanza body: 64-column lines, the last one shorter (maybe empty)."""
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append(b"")
    return b"".join(line + b"\n" for line in lines)


# Bech32 (BIP 173, without its length limit, as age uses it).
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: Iterable[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            check ^= generator[i] if (top >> i) & 1 else 0
    return check


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: Iterable[int], source: int, target: int, *, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    for value in data:
        acc = (acc << source) | value
        bits += source
        while bits >= target:
            bits -= target
            out.append((acc >> bits) & ((1 << target) - 1))
    if pad and bits:
        out.append((acc << (target - bits)) & ((1 << target) - 1))
    elif not pad and (bits >= source or (acc << (target - bits)) & ((1 << target) - 1)):
        raise ValueError("bad padding")
    return out


def _bech32_encode(hrp: str, data: bytes) -> str:
    values = _convert(data, 8, 5, pad=True)
    check = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    values += [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values)


def _bech32_decode(text: str, hrp: str) -> bytes:
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    cut = text.rfind("1")
    if text[:cut] != hrp or len(text) - cut < 7:
        raise ValueError(f"it does not start with {hrp}1")
    try:
        values = [_CHARSET.index(c) for c in text[cut + 1 :]]
    except ValueError:
        raise ValueError("a character outside the bech32 alphabet") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise ValueError("its checksum is wrong")
    return bytes(_convert(values[:-6], 5, 8, pad=False))
