"""No input reaches a 500: JSON bodies and config files are parsed within
limits (depth, numbers, duplicate keys, Unicode), each refusal a 400 (CLI:
exit 2) that names the limit — checked on the parser and on real servers
(``safesync serve`` and functions-framework) and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safesync.functions.main import TARGETS
from safesync.shared.errors import BadRequest, ConfigError
from safesync.shared.parsing import MAX_DEPTH, bracket_depth, parse_json_object, parse_toml
from tests import sentinels
from tests.live_server import LiveServer

BEARER = {"Authorization": f"Bearer {sentinels.SECRETS['SAFESYNC_API_TOKEN']}", "Content-Type": "application/json"}

# body -> what the 400 must say
HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {
    "[ x 500000": (b"[" * 500_000, f"deeper than {MAX_DEPTH} levels"),
    "100k nested objects": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, f"deeper than {MAX_DEPTH} levels"),
    "nesting inside a field": (b'{"action":"list","db":' + b"[" * 50_000 + b"]" * 50_000 + b"}", f"deeper than {MAX_DEPTH} levels"),
    "one level too deep": (b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", f"deeper than {MAX_DEPTH} levels"),
    "duplicate key": (b'{"action":"list","action":"create","db":"prod"}', "duplicate key 'action'"),
    "10^6-digit integer": (b'{"action":"list","n":' + b"9" * 999_000 + b"}", "number longer than"),
    "1e999": (b'{"action":"list","n":1e999}', "out of range"),
    "-1e999": (b'{"action":"list","n":-1e999}', "out of range"),
    "NaN": (b'{"action":"list","n":NaN}', "NaN is not a JSON value"),
    "Infinity": (b'{"action":"list","n":Infinity}', "Infinity is not a JSON value"),
    "invalid UTF-8": (b'{"action":"list","db":"\xff\xfe"}', "not UTF-8"),
    "UTF-8 encoded surrogate": (b'{"action":"list","db":"\xed\xa0\x80"}', "not UTF-8"),
    "lone surrogate escape": (b'{"action":"list","db":"\\ud800"}', "lone surrogate"),
    "lone surrogate in a key": (b'{"action":"list","\\udfff":1}', "lone surrogate"),
    "U+0000 in a string": (b'{"action":"create","db":"prod","deployment":"dpl\\u0000x"}', "U+0000"),
    "U+0000 in a nested key": (b'{"payload":{"a\\u0000":1}}', "U+0000"),
}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_parser_refuses_with_the_limit_named(name: str) -> None:
    body, expected = HOSTILE_BODIES[name]
    with pytest.raises(BadRequest) as info:
        parse_json_object(body)
    assert expected in info.value.message


def test_what_is_within_the_limits_parses() -> None:
    nested = b'{"a":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert bracket_depth(nested) == MAX_DEPTH
    parse_json_object(nested)
    # brackets and escaped quotes inside strings are text, not nesting
    assert parse_json_object(b'{"a": "[[[[{{{{\\"[[[["}') == {"a": '[[[[{{{{"[[[['}
    assert parse_json_object(('{"a": "' + "[" * 10_000 + '"}').encode()) == {"a": "[" * 10_000}
    assert parse_json_object('{"db": "pröd \\ud83d\\ude00", "n": -12.5e3, "big": 12345678901234567890}'.encode()) == {
        "db": "pröd 😀", "n": -12500.0, "big": 12345678901234567890}
    assert parse_json_object(b"  ") == {}


@pytest.mark.parametrize("text, expected", [
    ("a = " + "[" * 100_000 + "]" * 100_000, f"nests deeper than {MAX_DEPTH} levels"),
    ("a = " + "[" * 200 + "]" * 200, f"nests deeper than {MAX_DEPTH} levels"),
    ("a = " + "{ b = " * 40 + "1" + " }" * 40, f"nests deeper than {MAX_DEPTH} levels"),
    ("[" + ".".join(["t"] * 40) + "]\nx = 1", f"nests deeper than {MAX_DEPTH} levels"),
    ("x = 1\n" * 200_000, "larger than"),
], ids=["arrays-100k", "arrays-200", "inline-tables", "dotted-tables", "huge"])
def test_config_limits_are_one_config_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_toml(text, source="safesync.toml")
    assert expected in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize("content", [
    "[databases]\nprod = \"PROD_DATABASE_URL\"\n[backup]\ndatabases = " + "[" * 50_000 + "]" * 50_000 + "\n",
    "[databases]\nprod = \"PROD_DATABASE_URL\"\nx = " + "{ a = " * 500 + "1" + " }" * 500 + "\n",
], ids=["arrays", "inline-tables"])
@pytest.mark.parametrize("command", [["doctor"], ["backup", "list"], ["schedules", "plan", "--file", "{config}"]], ids=lambda c: c[0])
def test_deep_config_files_are_exit_2_one_line(tmp_path: Path, content: str, command: list[str]) -> None:
    config = tmp_path / "safesync.toml"
    config.write_text(content)
    argv = [a.replace("{config}", str(config)) for a in command]
    env = {**os.environ, "SAFESYNC_CONFIG": str(config), "PYTHONDONTWRITEBYTECODE": "1", "QSTASH_TOKEN": "x"}
    result = subprocess.run([sys.executable, "-m", "safesync.functions.cli", *argv], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"deeper than {MAX_DEPTH} levels" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def serve() -> LiveServer:
    with LiveServer() as server:
        yield server


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_real_server_answers_400_naming_the_limit(serve: LiveServer, name: str) -> None:
    body, expected = HOSTILE_BODIES[name]
    for target in TARGETS:
        reply = serve.post(target, body, BEARER)
        if target == "calendar_notify":  # its credentials are Google's channel headers, checked first
            assert reply.status == 401, reply.text[:300]
            continue
        assert reply.status == 400, (target, reply.status, reply.text[:300])
        assert expected in reply.json()["error"], (target, reply.text[:300])


def test_functions_framework_answers_400_too() -> None:
    with LiveServer(target="content_sync") as server:
        for name in ("[ x 500000", "100k nested objects", "duplicate key", "1e999", "lone surrogate escape"):
            body, expected = HOSTILE_BODIES[name]
            reply = server.post("content_sync", body, BEARER)
            assert reply.status == 400 and expected in reply.json()["error"], (name, reply.status, reply.text[:300])


def test_the_server_log_has_no_traceback(serve: LiveServer) -> None:
    serve.post("backup", HOSTILE_BODIES["[ x 500000"][0], BEARER)
    log = serve.log_text()
    assert "RecursionError" not in log and "Traceback" not in log and '"severity": "ERROR"' not in log
    json.dumps(log)  # the log is text
