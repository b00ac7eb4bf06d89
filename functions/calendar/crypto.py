"""Conference data at rest: AES-256-GCM with ``SAFESYNC_ENCRYPTION_KEY``.

Meeting links and dial-in PINs are credentials to a meeting, so the column
holds ``v1 || nonce || ciphertext`` and never plaintext. The key is 32 bytes,
given base64 (standard or URL-safe) or as 64 hex digits. A fresh random nonce
per write; the associated data binds the blob to this use so a ciphertext
copied into another encrypted column does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safesync.shared.errors import ConfigError, JobFailed

KEY_ENV = "SAFESYNC_ENCRYPTION_KEY"
_VERSION = b"v1"
_AAD = b"safesync:calendar:conference_data"


class UnreadableConference(JobFailed):
    """A stored blob that does not decrypt (not ours, damaged, or sealed
    with another key): the sync fails that row, never the whole run."""


def parse_key(text: str | None) -> bytes | None:
    """The 32-byte key from its text form, None when unset; ConfigError
    (naming the variable, never the value) when malformed."""
    if not text:
        return None
    text = text.strip()
    candidates: list[bytes] = []
    if len(text) == 64:
        try:
            candidates.append(bytes.fromhex(text))
        except ValueError:
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            pass
    for key in candidates:
        if len(key) == 32:
            return key
    raise ConfigError(f"{KEY_ENV} must be 32 bytes, base64 or hex encoded")


class Cipher:
    """Encrypts/decrypts the conference JSON; a missing key only fails when
    there is conference data to protect."""

    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key else None

    @classmethod
    def from_env(cls, env=None) -> "Cipher":
        env = env if env is not None else os.environ
        return cls(parse_key(env.get(KEY_ENV)))

    def _require(self) -> AESGCM:
        if self._aead is None:
            raise ConfigError(f"{KEY_ENV} is not set: needed to store calendar conference data encrypted")
        return self._aead

    def encrypt(self, value: dict[str, Any] | None) -> bytes | None:
        if value is None:
            return None
        nonce = os.urandom(12)
        plain = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        return _VERSION + nonce + self._require().encrypt(nonce, plain, _AAD)

    def decrypt(self, blob: bytes | memoryview | None) -> dict[str, Any] | None:
        if blob is None:
            return None
        blob = bytes(blob)
        if not blob.startswith(_VERSION) or len(blob) < len(_VERSION) + 12 + 16:
            raise UnreadableConference("calendar conference_data is not in the expected encrypted format")
        nonce, sealed = blob[2:14], blob[14:]
        try:
            return json.loads(self._require().decrypt(nonce, sealed, _AAD))
        except InvalidTag:
            raise UnreadableConference(f"calendar conference_data does not decrypt with {KEY_ENV} (wrong or rotated key?)") from None
