"""age files (https://age-encryption.org/v1): recipients, identities, and
streaming encryption and decryption through ``pyrage`` (the Rust ``age``
crate).

Why a thread: pyrage streams only through file-like objects it drives
itself (``encrypt_io(reader, writer, …)``), while our pipelines are chunk
iterators (pg_dump → storage, storage → pg_restore). ``encrypt`` and
``decrypt`` run pyrage on a worker thread that reads the chunks this thread
hands it (a queue of two) and leaves its output in ≤ 1 MiB pieces for this
thread to yield. Memory stays constant: at most a few MiB are in flight, and
the worker never blocks on output, so the hand-over cannot deadlock. The
source iterator runs on the calling thread, so its exceptions (pg_dump
failed) and its clean-up (kill pg_dump) happen where they always did.

Identities are secrets: they come only from the environment
(``SAFESYNC_AGE_IDENTITY``, inline, or the file ``SAFESYNC_AGE_IDENTITY_FILE``
names), and every secret line of them is handed to the redaction as it is
read. Recipients are public keys and live in the config.
"""

from __future__ import annotations

import base64
import hashlib
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from .errors import ConfigError
from .redaction import key_lines, remember

IDENTITY_ENV = "SAFESYNC_AGE_IDENTITY"
IDENTITY_FILE_ENV = "SAFESYNC_AGE_IDENTITY_FILE"
OUTPUT_CHUNK = 1 << 20
MAX_IDENTITY_FILE = 64_000
_NO_MATCH = "No matching keys found"  # rage's DecryptError::NoMatchingKeys, as pyrage words it


class AgeError(Exception):
    """An age stream failed (the message is the library's, never a secret)."""


class NoMatchingIdentity(AgeError):
    """No identity opens the file's header: the wrong key — or a damaged
    header (an X25519 stanza that does not decrypt looks the same)."""


class DamagedFile(AgeError):
    """Not an age file, or a header or payload chunk that fails its
    authentication (tampered, truncated, or corrupt)."""


@dataclass(frozen=True)
class Recipient:
    """A public key files are encrypted to. ``fingerprint`` is what a person
    compares: an X25519 recipient is its own (``age-keygen -y key.txt``
    prints it); an SSH key's is the SHA-256 one ``ssh-keygen -lf key.pub``
    prints."""

    kind: str  # "x25519", "ssh-ed25519", "ssh-rsa"
    text: str  # the key without its comment
    fingerprint: str

    def key(self) -> Any:
        import pyrage

        module = pyrage.x25519 if self.kind == "x25519" else pyrage.ssh
        return module.Recipient.from_str(self.text)

    def describe(self) -> dict[str, str]:
        return {"type": self.kind, "fingerprint": self.fingerprint}


def parse_recipient(text: str) -> Recipient:
    """An ``age1…`` X25519 recipient or an ``ssh-ed25519``/``ssh-rsa`` public
    key (as in ``~/.ssh/id_ed25519.pub``); ValueError says what is wrong."""
    import pyrage

    fields = text.strip().split()
    if not fields:
        raise ValueError("an empty recipient")
    if fields[0].startswith("age1"):
        if len(fields) != 1:
            raise ValueError(f"{fields[0][:12]}…: an age recipient is one word")
        try:
            pyrage.x25519.Recipient.from_str(fields[0])
        except pyrage.RecipientError as exc:
            raise ValueError(f"{fields[0][:12]}… is not an age X25519 recipient ({exc})") from None
        return Recipient("x25519", fields[0], fields[0])
    if fields[0] in ("ssh-ed25519", "ssh-rsa") and len(fields) >= 2:
        key = f"{fields[0]} {fields[1]}"
        try:
            pyrage.ssh.Recipient.from_str(key)
            blob = base64.b64decode(fields[1], validate=True)
        except (pyrage.RecipientError, ValueError) as exc:
            raise ValueError(f"{fields[0]} {fields[1][:16]}… is not a usable SSH public key ({exc})") from None
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        return Recipient(fields[0], key, f"SHA256:{digest}")
    raise ValueError(f"{fields[0][:16]}… is neither an age1… recipient nor an ssh-ed25519 / ssh-rsa public key")


def parse_recipients(texts: Iterable[str]) -> list[Recipient]:
    return [parse_recipient(text) for text in texts]


def load_identities(env: Mapping[str, str], *, purpose: str) -> list[Any]:
    """The identities in ``SAFESYNC_AGE_IDENTITY`` and the file
    ``SAFESYNC_AGE_IDENTITY_FILE`` names (either or both; ``age-keygen``
    output or an unencrypted OpenSSH private key). ConfigError (exit 2 /
    HTTP 400) when there are none or they cannot be read; ``purpose`` says
    what needs them."""
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
    identities: list[Any] = []
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


def _parse_identities(text: str, where: str) -> list[Any]:
    """Never echoes the text: a message names the line number only."""
    import pyrage

    if "-----BEGIN" in text:
        try:
            return [pyrage.ssh.Identity.from_buffer(text.encode("utf-8"))]
        except pyrage.IdentityError as exc:  # e.g. "ssh key must be decrypted first"
            raise ConfigError(f"{where}: not a usable OpenSSH private key ({exc})") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("AGE-SECRET-KEY-1"):
            kind = "an age plugin identity (plugins are not supported)" if line.startswith("AGE-PLUGIN-") else "not an age identity"
            raise ConfigError(f"{where}: line {number} is {kind}")
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError as exc:
            raise ConfigError(f"{where}: line {number} is not a valid age identity ({exc})") from None
    if not found:
        raise ConfigError(f"{where} holds no identity (expected AGE-SECRET-KEY-1… lines)")
    return found


def public_keys(identities: Iterable[Any]) -> list[str]:
    """The recipients of the X25519 identities (SSH identities cannot say)."""
    return [str(i.to_public()) for i in identities if hasattr(i, "to_public")]


def opens(identities: list[Any], recipients: list[Recipient]) -> bool:
    """Whether ``identities`` decrypt what is encrypted to ``recipients``:
    a real round trip, so SSH identities are judged as well as X25519 ones."""
    import pyrage

    probe = pyrage.encrypt(b"safesync", [r.key() for r in recipients])
    try:
        return pyrage.decrypt(probe, identities) == b"safesync"
    except pyrage.DecryptError:
        return False


def encrypt(chunks: Iterable[bytes], recipients: list[Recipient]) -> Iterator[bytes]:
    """``chunks`` as one binary age file for ``recipients``, streamed."""
    import pyrage

    keys = [r.key() for r in recipients]
    return _through(lambda reader, writer: pyrage.encrypt_io(reader, writer, keys), chunks, _encrypt_error)


def decrypt(chunks: Iterable[bytes], identities: list[Any]) -> Iterator[bytes]:
    """The plaintext of the age file ``chunks``, streamed: every chunk is
    authenticated before it is yielded, and the end of the file is proven
    (a truncated file raises DamagedFile after its last whole chunk)."""
    import pyrage

    return _through(lambda reader, writer: pyrage.decrypt_io(reader, writer, identities), chunks, _decrypt_error)


def _encrypt_error(exc: BaseException) -> AgeError:
    return AgeError(f"age encryption failed: {exc}")


def _decrypt_error(exc: BaseException) -> AgeError:
    text = str(exc)
    if _NO_MATCH in text:
        return NoMatchingIdentity(text)
    return DamagedFile(f"age decryption failed: {text or type(exc).__name__}")


_END = object()
_ABORT = object()


class _Aborted(Exception):
    """Raised inside pyrage's read when the caller stopped early."""


class _Input:
    """The file pyrage reads: the chunks the calling thread hands over."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._view = memoryview(b"")
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        if not self._view and not self.ended:
            item = self.queue.get()
            if item is _ABORT:
                raise _Aborted()
            if item is _END:
                self.ended = True
            else:
                self._view = memoryview(item)
        size = len(self._view) if size is None or size < 0 else size
        out = bytes(self._view[:size])
        self._view = self._view[size:]
        return out


class _Output:
    """The file pyrage writes: pieces of ≥ 1 MiB for the calling thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()  # never blocks the worker: the caller drains it
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= OUTPUT_CHUNK:
            self._emit()
        return len(data)

    def flush(self) -> None:
        """Pieces leave when full or at the end (``finish``)."""

    def finish(self) -> None:
        if self._buffer:
            self._emit()

    def _emit(self) -> None:
        self.queue.put(bytes(self._buffer))
        self._buffer.clear()


def _through(
    run: Callable[[_Input, _Output], None], chunks: Iterable[bytes], error: Callable[[BaseException], AgeError]
) -> Iterator[bytes]:
    """Feed ``chunks`` to ``run`` (on a worker thread) and yield its output."""
    source, sink = _Input(), _Output()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            run(source, sink)
            sink.finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failure.append(exc)
        finally:
            sink.queue.put(_END)

    worker = threading.Thread(target=work, name="age-stream", daemon=True)
    worker.start()
    finished = False

    def hand_over(item: Any) -> bool:
        """False once the worker stopped (it failed and reads no more)."""
        while True:
            try:
                source.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if not worker.is_alive():
                    return False

    def ready(block: bool) -> Iterator[bytes]:
        nonlocal finished
        while not finished:
            try:
                item = sink.queue.get(block)
            except queue.Empty:
                return
            if item is _END:
                finished = True
                return
            block = False
            yield item

    try:
        for chunk in chunks:
            if not hand_over(chunk):
                break
            yield from ready(False)
            if finished:
                break
        else:
            hand_over(_END)
        while not finished:
            yield from ready(True)
        worker.join()
        if failure:
            raise error(failure[0]) from None
        if source.queue.qsize() or not source.ended:
            raise error(RuntimeError("the age stream ended before its input"))
    finally:
        if worker.is_alive():  # the caller stopped early (or the source raised): stop the worker
            while True:
                try:
                    source.queue.get_nowait()
                except queue.Empty:
                    break
            source.queue.put(_ABORT)
            worker.join()
