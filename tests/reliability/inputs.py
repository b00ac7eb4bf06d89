"""Hypothesis strategies for bad input: hostile names, wrong JSON types, and
per-target bodies that are invalid by construction.

Every HTTP target is described by a few valid *bases* (one per action or
mode) and the kind of each field that base's model accepts. A bad body is a
base with exactly one thing broken: a field set to a value of the wrong kind,
an unknown field added, or a required field removed. A new target or action
is one more line in ``TARGET_BASES``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

CONFIGURED_DATABASES = ("dev", "staging", "prod")
CALENDAR_IDS = ("primary",)
BACKUP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*-\d{8}T\d{6}Z-[a-z]+")  # fullmatch: "id\n" is a bad id

# Names carrying quotes, semicolons and SQL: none may reach a query as text.
INJECTIONS = (
    "prod'; drop table users; --",
    'prod"; drop schema public cascade; --',
    "prod' or '1'='1",
    "prod; select pg_sleep(5)",
    "users; truncate enrollments",
    '"public"."users"',
    "public.users; delete from payments",
    "$$; drop table courses; $$",
    "prod\x00",
    "../../etc/passwd",
    "prod\nDROP TABLE users",
    "pröd",
    "PROD",
    " prod",
    "prod ",
    "",
    "*",
    "%",
    "-- ",
    "prod-20240101T000000Z-manual'; drop table users; --",
)

BOOL_LIKE = {"true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0"}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)

hostile_text = st.sampled_from(INJECTIONS) | st.text(max_size=60) | st.builds(
    lambda a, b: a + b, st.sampled_from(CONFIGURED_DATABASES), st.sampled_from(["'", '"', ";", " --", "\\", "\x00", "; drop table users"])
)

# Values that are not strings (and not null: null means "not given" for optional fields).
not_a_string = st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.lists(json_scalars, max_size=3) | st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)
# Values no JSON decoder should take for a boolean (lax "yes"/0/1 coercion is tested on its own).
not_a_bool = (
    st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)
    | st.text(max_size=20).filter(lambda s: s.strip().lower() not in BOOL_LIKE)
    | st.integers().filter(lambda i: i not in (0, 1))
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f not in (0.0, 1.0))
)


def not_one_of(values: tuple[str, ...]):
    """A string outside ``values`` (hostile or random), or a non-string."""
    return hostile_text.filter(lambda s: s not in values) | not_a_string


KINDS: dict[str, Any] = {
    "database": not_one_of(CONFIGURED_DATABASES),
    "calendar": not_one_of(CALENDAR_IDS),
    "bool": not_a_bool,
    "backup_id": (hostile_text.filter(lambda s: s != "latest" and not BACKUP_ID.fullmatch(s)) | not_a_string),
    "digest": (hostile_text.filter(lambda s: not re.fullmatch(r"[0-9a-f]{64}", s)) | not_a_string),
    "window": (hostile_text.filter(lambda s: not re.match(r"^\d{4}-\d{2}-\d{2}", s)) | not_a_string),
    "any": json_values.filter(lambda v: v is not None),  # any value is wrong for this field in this base
    "long_text": st.text(min_size=301, max_size=400) | not_a_string,
}


def enum(*values: str):
    return not_one_of(values)


BACKUP_ACTIONS = ("create", "list", "verify", "restore", "prune")
CALENDAR_ACTIONS = ("sync", "status", "events", "watch", "resync", "retry_all")

# target -> [(valid base body, {field: kind of bad value}, required fields)]
TARGET_BASES: dict[str, list[tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]]] = {
    "backup": [
        ({"action": "create", "db": "prod"},
         {"action": enum(*BACKUP_ACTIONS), "db": KINDS["database"], "kind": enum("manual", "daily", "predeploy"), "deployment": KINDS["any"]},
         ("action", "db")),
        ({"action": "list"}, {"action": enum(*BACKUP_ACTIONS), "db": KINDS["database"]}, ("action",)),
        ({"action": "verify", "all": True},
         {"id": KINDS["backup_id"], "all": KINDS["bool"], "restore_drill": KINDS["bool"]}, ("action",)),
        ({"action": "restore", "id": "latest", "db": "prod", "to": "staging", "confirm": "staging"},
         {"id": KINDS["backup_id"], "db": KINDS["database"], "to": KINDS["database"], "confirm": not_a_string}, ("action", "id", "to")),
        ({"action": "prune", "dry_run": True}, {"db": KINDS["database"], "dry_run": KINDS["bool"]}, ("action",)),
    ],
    "content_sync": [
        ({"mode": "dry-run"}, {"mode": enum("compare", "dry-run", "sync"), "expect_plan": KINDS["any"], "adopt": KINDS["bool"]}, ("mode",)),
        ({"mode": "sync", "expect_plan": "0" * 64}, {"expect_plan": KINDS["digest"]}, ("mode",)),
    ],
    "staging_clone": [
        ({"dry_run": True}, {"dry_run": KINDS["bool"]}, ()),
    ],
    "validate": [
        ({"db": "prod"}, {"db": KINDS["database"], "against": KINDS["database"]}, ()),
        ({"db": "prod", "against": "dev"}, {"db": KINDS["database"], "against": KINDS["database"]}, ()),
    ],
    "calendar_sync": [
        ({"mode": "incremental"}, {"mode": enum("incremental", "full", "cleanup"), "calendar_id": KINDS["calendar"], "force": KINDS["bool"]}, ("mode",)),
        ({"action": "events", "from": "2024-01-01", "to": "2024-01-08"},
         {"action": enum(*CALENDAR_ACTIONS), "from": KINDS["window"], "to": KINDS["window"]}, ("action", "from", "to")),
        ({"action": "status"}, {"action": enum(*CALENDAR_ACTIONS)}, ("action",)),
    ],
    "status": [
        ({}, {}, ()),
    ],
    "migrate": [
        ({"action": "plan"}, {"action": enum("plan", "rehearse", "apply"), "skip_rehearsal": KINDS["bool"]}, ("action",)),
    ],
    # Google push notifications: the body is not read, the channel headers are (see test_auth_matrix).
    "calendar_notify": [
        ({}, {}, ()),
    ],
}

# Every field any model of the target knows: an added key outside it is unknown.
KNOWN_FIELDS = {target: {f for base, fields, _ in bases for f in (*base, *fields)} | {"action", "mode"} for target, bases in TARGET_BASES.items()}
KNOWN_FIELDS["calendar_sync"] |= {"calendar_id", "force", "from", "to"}


@st.composite
def bad_body(draw, target: str) -> tuple[str, dict[str, Any]]:
    """(what was broken, body) for ``target``: invalid by construction."""
    base, fields, required = draw(st.sampled_from(TARGET_BASES[target]))
    body = dict(base)
    how = draw(st.sampled_from([m for m in ("field", "unknown", "missing") if m != "field" or fields if m != "missing" or required]))
    if how == "field":
        name = draw(st.sampled_from(sorted(fields)))
        body[name] = draw(fields[name])
        return f"{name}={body[name]!r}", body
    if how == "missing":
        name = draw(st.sampled_from(required))
        del body[name]
        if target == "calendar_sync":  # without mode/action the body names nothing to do
            body.pop("action", None), body.pop("mode", None)
        return f"without {name}", body
    key = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in KNOWN_FIELDS[target]) | st.sampled_from(["Action", "DB", "mode ", "__proto__", "db; drop table users"]).filter(lambda k: k not in KNOWN_FIELDS[target]))
    body[key] = draw(json_values)
    return f"unknown field {key!r}", body


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict) if raw.strip() else True
    except (ValueError, UnicodeDecodeError):
        return False


# Raw bodies that are not a JSON object: garbage bytes, truncated JSON, other JSON types.
not_an_object = st.one_of(
    st.binary(min_size=1, max_size=200).filter(lambda b: not _is_json_object(b)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=8), json_scalars, min_size=1, max_size=4).map(lambda d: json.dumps(d).encode()[:-1]),
    st.sampled_from([b"{", b"}", b"{'action': 'create'}", b'{"action": "create",}', b"\xff\xfe{}", b"NaN", b"[{}]", b'"{}"', b"{\"a\":1}{\"b\":2}"]),
)


# --- JSON no parser may take: nesting past the limit, duplicate keys, numbers
# out of range, text that is not Unicode. Each is (what the 400 names, body).
def _nest(depth: int, pattern: str) -> str:
    """``depth`` levels of arrays and objects, cycling through ``pattern``."""
    levels = [pattern[i % len(pattern)] for i in range(depth)]
    return "".join('{"k":' if o == "{" else "[" for o in levels) + "1" + "".join("}" if o == "{" else "]" for o in reversed(levels))


@st.composite
def hostile_json(draw, target: str) -> tuple[str, str, bytes]:
    """(case, what the error must name, raw body) built on a valid base of ``target``."""
    from safesync.shared.parsing import MAX_DEPTH

    base = dict(draw(st.sampled_from(TARGET_BASES[target]))[0]) or {"action": "status"}  # {} has no key to repeat
    head, sep = json.dumps(base)[:-1], ", "  # the base object, still open
    field = draw(st.sampled_from(["extra", "pad", "n", "ключ"]))  # a key the base does not have
    how = draw(st.sampled_from(["deep", "deep-top", "duplicate", "big-int", "non-finite", "constant", "surrogate", "surrogate-key", "not-utf8"]))
    if how == "deep":
        depth = draw(st.integers(MAX_DEPTH + 1, 100_000))  # bodies stay under the 1 MB limit
        opener = draw(st.sampled_from(["[", "{", "[{", "{[", "[[{"]))
        return how, f"deeper than {MAX_DEPTH} levels", (head + sep + json.dumps(field) + ": " + _nest(depth, opener) + "}").encode()
    if how == "deep-top":
        unit = draw(st.sampled_from([b"[", b'{"a":']))
        return how, f"deeper than {MAX_DEPTH} levels", unit * draw(st.integers(MAX_DEPTH + 1, 900_000 // len(unit)))
    if how == "duplicate":
        value = draw(json_scalars)
        key = draw(st.sampled_from(sorted(base)))
        return how, "duplicate key", (head + sep + json.dumps(key) + ": " + json.dumps(value) + "}").encode()
    if how == "big-int":
        digits = draw(st.integers(41, 900_000))
        return how, "number longer than", (head + sep + json.dumps(field) + ": " + draw(st.sampled_from(["", "-"])) + "9" * digits + "}").encode()
    if how == "non-finite":
        number = draw(st.sampled_from(["1e999", "-1e999", "1E400", "123456789e308"]))
        return how, "out of range", (head + sep + json.dumps(field) + ": " + number + "}").encode()
    if how == "constant":
        name = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return how, "is not a JSON value", (head + sep + json.dumps(field) + ": " + name + "}").encode()
    if how in ("surrogate", "surrogate-key"):
        unit = "\\u" + format(draw(st.integers(0xD800, 0xDFFF)), "04x")
        text = draw(st.text(max_size=5).map(lambda t: json.dumps(t)[1:-1]))
        item = f'"{text}{unit}": 1' if how == "surrogate-key" else f'{json.dumps(field)}: "{text}{unit}"'
        return how, "lone surrogate", (head + sep + item + "}").encode()
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
    return how, "not UTF-8", (head + sep).encode() + json.dumps(field).encode() + b': "' + bad + b'"}'
