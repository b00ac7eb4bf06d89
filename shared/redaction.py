"""Keeping secrets inside the process: every text that leaves it — log lines,
reports, run files, HTTP bodies, CLI output, notifications — goes through
``redact``.

What is secret is known, not guessed from the text's shape: the values of
the secret environment variables (``*_TOKEN``, ``*_KEY``, ``*_SECRET``,
``*_PASSWORD``, ``*_CREDENTIALS``, ``*_URL``, ``*DATABASE_URL*``,
``PGPASSWORD``), values handed to ``remember``, and what they contain:

- database passwords, parsed *tolerantly* from each URL or DSN: a password
  with an unencoded ``%``, ``@``, ``:`` or ``/`` is still found (every
  reading of the userinfo is a candidate), because libpq then echoes it, or
  a piece of it, in its errors (``invalid percent-encoded token:
  "Sup3r%Secret_77"``, ``could not translate host name "…"``);
- the secret fields of Google credentials (inline JSON or the file
  ``GOOGLE_APPLICATION_CREDENTIALS`` names), each line of a PEM key;
- age identities (``SAFESYNC_AGE_IDENTITY``, inline, or the file
  ``SAFESYNC_AGE_IDENTITY_FILE`` names): the whole text and each of its key
  lines (``AGE-SECRET-KEY-1…``, the lines of an OpenSSH private key).

Each secret is redacted in every form a message may spell it: as given,
percent-decoded and -encoded, JSON- and repr-escaped, SQL-quoted, and each
piece between URL delimiters long enough to mean something. Every
occurrence anywhere in a text is replaced, whatever surrounds it. Shapes
are a second net: ``scheme://user:…@`` and ``password=…`` lose their
password even when the value is not configured here.

Database URLs (``postgres://``, ``postgresql://``) keep their user, host and
database visible (``postgresql://app:***@db:5432/prod``): only the password
is secret; every other secret value is redacted whole.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from threading import Lock
from typing import Any, Iterable
from urllib.parse import quote, unquote

REDACTED = "[redacted]"
SECRET_ENV_SUFFIXES = ("_URL", "_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_CREDENTIALS")
SECRET_ENV_NAMES = ("PGPASSWORD", "SAFESYNC_AGE_IDENTITY")
# variables naming a file of secrets, and how to find the secrets in it
SECRET_FILE_ENV = ("GOOGLE_APPLICATION_CREDENTIALS", "SAFESYNC_AGE_IDENTITY_FILE")
NOT_SECRET = frozenset({"SAFESYNC_GOOGLE_API_ROOT", "STORAGE_EMULATOR_HOST", "QSTASH_URL"})
MIN_VALUE = 6  # a whole secret value shorter than this would redact common words
MIN_PASSWORD = 4
MIN_PIECE = 5  # a piece of a password between delimiters
MAX_SECRET_FILE = 64_000

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_DB_SCHEME = re.compile(r"postgres(?:ql)?://", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#\s]*)", re.IGNORECASE)
_KV_PASSWORD_VALUE = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PIECE_SPLIT = re.compile(r"""[@:/?#\[\]&=%'"\\\s;,]+""")
_SECRET_FIELD = re.compile(r"key|secret|token|password", re.IGNORECASE)
# Shapes (the second net): a URL's userinfo password up to the last "@" of
# the URL, and libpq's key=value password.
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s'\"]*):(?P<pw>[^\s'\"]*)@")
_KV_PASSWORD = re.compile(r"(?P<key>password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)

_remembered: set[str] = set()
_cache: dict[str, Any] = {"key": None, "pattern": None}
_lock = Lock()


def remember(*values: str | None) -> None:
    """Treat ``values`` (e.g. a URL from a settings mapping that is not
    ``os.environ``) as secrets from now on."""
    new = {v for v in values if v and v not in _remembered}
    if new:
        with _lock:
            _remembered.update(new)


def is_secret_env(name: str) -> bool:
    """Public service addresses (``SAFESYNC_PUBLIC_URL``, ``SAFESYNC_<TARGET>_BASE_URL``,
    ``SAFESYNC_NOTIFY_PUBLIC_URL``) are not secrets; every other ``*_URL`` may carry credentials."""
    if name in NOT_SECRET or (name.startswith("SAFESYNC_") and name.endswith(("_PUBLIC_URL", "_BASE_URL"))):
        return False
    return name.endswith(SECRET_ENV_SUFFIXES) or "DATABASE_URL" in name or name in SECRET_ENV_NAMES


def passwords_in(value: str) -> set[str]:
    """Every string that may be a password inside a URL or DSN ``value``.

    URLs are read the way a lenient parser might read a malformed one: the
    userinfo may end at any ``@``, the password start after any ``:`` of it.
    """
    found: set[str] = set()
    for scheme in _SCHEME.finditer(value):
        rest = value[scheme.end():]  # a configured value: quotes and spaces may be the password's own
        for at in (i for i, c in enumerate(rest) if c == "@"):
            userinfo = rest[:at]
            found.update(userinfo[i + 1:] for i, c in enumerate(userinfo) if c == ":")
    found.update(m[1] for m in _QUERY_PASSWORD.finditer(value))
    for m in _KV_PASSWORD_VALUE.finditer(value):
        raw = m[1]
        found.add(raw)
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            found.add(re.sub(r"\\(.)", r"\1", raw[1:-1]))
    return {p for p in found if p}


def credential_secrets(text: str) -> set[str]:
    """The secret fields of a JSON credentials document (service account,
    OAuth user), and each line of a PEM key among them."""
    try:
        data = json.loads(text)
    except ValueError:
        return set()
    found: set[str] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and _SECRET_FIELD.search(key):
            found.add(value)
            found.update(line.strip() for line in value.splitlines() if "-----" not in line)

    walk(data)
    return {s for s in found if len(s) >= MIN_VALUE}


def key_lines(text: str) -> set[str]:
    """The secret lines of a key text: every line that is not blank, a ``#``
    comment (``age-keygen`` writes the public key in one) or PEM armour."""
    lines = (line.strip() for line in text.splitlines())
    return {line for line in lines if line and not line.startswith("#") and "-----" not in line and len(line) >= MIN_VALUE}


def forms(secret: str) -> set[str]:
    """The spellings of ``secret`` a message may carry."""
    decoded = unquote(secret)
    out = {secret, decoded, quote(secret, safe=""), quote(decoded, safe=""), quote(decoded, safe="%")}
    for s in list(out):
        out.add(json.dumps(s)[1:-1])
        out.add(json.dumps(s, ensure_ascii=False)[1:-1])
        out.add(repr(s)[1:-1])
        out.add(s.replace("'", "''"))
        out.add(s.replace('"', '""'))
    return out


def pieces(secret: str) -> set[str]:
    """The parts of ``secret`` between URL delimiters: what a parser that
    split it there would echo back."""
    return {p for form in (secret, unquote(secret)) for p in _PIECE_SPLIT.split(form) if len(p) >= MIN_PIECE}


def _env_secrets(name: str, value: str) -> tuple[set[str], set[str]]:
    """(whole values, passwords) one environment variable holds."""
    whole: set[str] = set()
    if is_secret_env(name) and not _DB_SCHEME.match(value.strip()):
        whole.add(value.strip())
        if value.lstrip().startswith("{"):
            whole |= credential_secrets(value)
        elif name in SECRET_FILE_ENV:
            whole |= _secret_file(value.strip())
        else:
            whole |= key_lines(value)
    elif name in SECRET_FILE_ENV:
        whole |= _secret_file(value.strip())
    passwords = passwords_in(value) if is_secret_env(name) or "://" in value or "password" in value.lower() else set()
    return whole, passwords


def _secret_file(path: str) -> set[str]:
    """The secrets in a credentials JSON or key file a variable names."""
    try:
        file = Path(path)
        if file.is_file() and file.stat().st_size <= MAX_SECRET_FILE:
            text = file.read_text(encoding="utf-8", errors="replace")
            return credential_secrets(text) if text.lstrip().startswith("{") else {text.strip(), *key_lines(text)}
    except OSError:
        pass
    return set()


def needles(env: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """Every string ``redact`` replaces, longest first."""
    whole: set[str] = set()
    passwords: set[str] = set()
    items = list(env if env is not None else os.environ.items())
    items += [("REMEMBERED_SECRET", value) for value in list(_remembered)]
    for name, value in items:
        w, p = _env_secrets(name, value)
        whole |= w
        passwords |= p
    out = {f for w in whole if len(w) >= MIN_VALUE for f in forms(w)}
    for password in passwords:
        if len(password) >= MIN_PASSWORD:
            out |= forms(password)
        out |= pieces(password)
    return sorted((n for n in out if len(n) >= MIN_PASSWORD), key=lambda n: (-len(n), n))


def _environment_key() -> int:
    """Changes whenever the environment does; cheap (every log line asks).
    ``os.environ._data`` holds the raw entries: hashing them skips decoding
    every value on every call."""
    raw = getattr(os.environ, "_data", None)
    return hash(frozenset(raw.items() if isinstance(raw, dict) else os.environ.items()))


def _pattern() -> re.Pattern[str] | None:
    key = (_environment_key(), len(_remembered))
    if _cache["key"] != key:
        found = needles()
        pattern = re.compile("|".join(map(re.escape, found))) if found else None
        with _lock:
            _cache.update(key=key, pattern=pattern)
    return _cache["pattern"]


def redact(text: str) -> str:
    """``text`` with every occurrence of every known secret replaced, and
    URL/DSN passwords removed by shape."""
    return _redact_with(_pattern(), text)


def _redact_with(pattern: re.Pattern[str] | None, text: str) -> str:
    if not text:
        return text
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    if "assword" in text.lower():
        text = _KV_PASSWORD.sub(lambda m: f"{m['key']}***", text)
    return text


def redact_url(url: str) -> str:
    """A URL for display: its password (however malformed) replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def redact_obj(obj: Any) -> Any:
    """Redact every string (keys included) inside a JSON-like structure."""
    pattern = _pattern()  # once per structure: a report can hold many thousand strings

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _redact_with(pattern, value)
        if isinstance(value, dict):
            return {_redact_with(pattern, k) if isinstance(k, str) else k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        return value

    return walk(obj)
