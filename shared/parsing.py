"""Parsing untrusted text — request bodies (JSON) and config files (TOML) —
within limits, so that no input can crash a parser or what reads its result.

Python's parsers recurse: ``[`` × 500 000 in a body or deeply nested arrays
in a config file raise ``RecursionError`` (an HTTP 500, a CLI traceback), and
what survives parsing is walked again by validation, redaction and JSON
encoding. So nesting is capped at ``MAX_DEPTH`` *before* parsing (a linear
scan of the brackets outside strings) and checked again on the result. A
JSON body must also be exactly one unambiguous object: duplicate keys (two
parsers may keep different ones), numbers beyond what a field can mean
(a 10⁶-digit integer, ``1e999`` → infinity, ``NaN``) and strings that are not
Unicode (lone surrogates: ``"\\ud800"``) are 400s that name the limit, and so
is U+0000 in a string: PostgreSQL text and jsonb cannot hold it, and what a
body says reaches the target database (a delivery's recorded answer echoes
the trigger), where it failed *after* the job had run, leaving the delivery
``running`` for the next retry to run again.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable

from .errors import BadRequest, ConfigError

MAX_DEPTH = 32  # objects/arrays inside each other; every documented body uses 2
MAX_NUMBER_CHARS = 40  # a JSON number longer than this is not a count, a size or an id
MAX_CONFIG_BYTES = 1_000_000

# A JSON string (escapes included) — removed before counting brackets so
# that "[[[" inside a string is text, not nesting. Possessive: linear time.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")


def bracket_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text, strings excluded.

    For invalid JSON the figure may be off, never lower than what a parser
    would recurse into."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _BRACKETS)
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BadRequest(f"body is not valid JSON: duplicate key {key[:60]!r}")
        obj[key] = value
    return obj


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise BadRequest(f"body is not valid JSON: a number longer than {MAX_NUMBER_CHARS} characters")
        value = kind(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"body is not valid JSON: number {text[:MAX_NUMBER_CHARS]} is out of range")
        return value

    return parse


def _no_constant(name: str) -> Any:
    raise BadRequest(f"body is not valid JSON: {name} is not a JSON value")


def _check_text(value: Any, depth: int = 0) -> None:
    """Every string and key must be encodable (no lone surrogates) and free
    of U+0000 (which PostgreSQL cannot store), and the
    parsed value no deeper than the limit (the scan above already made sure)."""
    if depth > MAX_DEPTH:
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("body is not valid JSON: a string holds a lone surrogate (\\ud800-\\udfff) that is not Unicode text") from None
        if "\x00" in value:
            raise BadRequest("body: a string holds U+0000 (\\u0000), which PostgreSQL cannot store")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, depth)
            _check_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_text(item, depth + 1)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a dict; BadRequest (400) naming what is wrong.
    An empty body is ``{}``."""
    if not raw.strip():
        return {}
    if bracket_depth(raw) > MAX_DEPTH:
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_int=_number(int),
            parse_float=_number(float),
            parse_constant=_no_constant,
        )
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    _check_text(value)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """True when tables/arrays nest more than ``limit`` levels (stops there)."""
    if not isinstance(value, (dict, list)):
        return False
    if limit == 0:
        return True
    items = value.values() if isinstance(value, dict) else value
    return any(_deeper_than(v, limit - 1) for v in items)


def parse_toml(text: str, *, source: str) -> dict[str, Any]:
    """A config file's TOML; ConfigError (exit 2, one line) when it is not
    TOML, too big, or nested deeper than ``MAX_DEPTH``."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes")
    too_deep = ConfigError(f"{source}: nests deeper than {MAX_DEPTH} levels")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array / inline table
        raise too_deep from None
    if _deeper_than(data, MAX_DEPTH):
        raise too_deep
    return data


def read_toml_file(path: Path, *, what: str = "config file") -> dict[str, Any]:
    """Read and parse a TOML file (at most ``MAX_CONFIG_BYTES``); every
    problem, a missing file included, is one ConfigError line."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse_toml(text, source=str(path))
