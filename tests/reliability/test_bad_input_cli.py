"""Bad input on the command line: exit 2, one readable line, no traceback,
nothing changed. ``safesync.functions.cli.main`` runs in-process (output
captured); one subprocess run per case family proves the same through the
real entry point."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st

from safesync.functions.cli import main as cli_main

from .conftest import subprocess_env
from .inputs import INJECTIONS, hostile_text
from .scale import SEED, pick

AREA = "bad input: CLI"
EXAMPLES = pick(30, 120, 600)
HYPOTHESIS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# A value no option of any command accepts (not a configured name, id, mode, date or digest).
value = hostile_text.filter(lambda s: s.strip() not in ("dev", "staging", "prod", "primary", "latest") and not s.startswith("-") and s.strip())
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12).filter(lambda s: not s.startswith("-"))
# argparse accepts unambiguous prefixes of real options (--h is --help): not unknown options.
OPTIONS = ("help", "json", "config", "db", "all", "restore-drill", "dry-run", "mode", "calendar", "from", "to", "force",
           "retry-failed", "kind", "deployment", "against", "expect-plan", "confirm")
option = word.filter(lambda w: not any(o.startswith(w) for o in OPTIONS))

# (argv template, how many hostile values it takes); every line is a usage,
# config or input error. A new command is one more line.
TEMPLATES: list[tuple[str, ...]] = [
    ("backup", "create", "--db", "{}"),
    ("backup", "create", "--db", "prod", "--kind", "{}"),
    ("backup", "create", "--db", "prod", "--deployment", "{}"),
    ("backup", "list", "--db", "{}"),
    ("backup", "verify", "{}"),
    ("backup", "restore", "{}", "--to", "staging"),
    ("backup", "restore", "latest", "--db", "prod", "--to", "{}"),
    ("backup", "restore", "latest", "--db", "{}", "--to", "staging"),
    ("backup", "prune", "--db", "{}"),
    ("backup", "{}"),
    ("content", "{}"),
    ("content", "sync", "--expect-plan", "{}"),
    ("content", "dry-run", "--expect-plan", "{}"),
    ("staging", "{}"),
    ("staging", "clone", "--dry-run", "{}"),
    ("validate", "--db", "{}"),
    ("validate", "--db", "prod", "--against", "{}"),
    ("calendar", "sync", "--mode", "{}"),
    ("calendar", "sync", "--mode", "incremental", "--calendar", "{}"),
    ("calendar", "events", "--from", "{}", "--to", "2024-01-02"),
    ("calendar", "events", "--from", "2024-01-01", "--to", "{}"),
    ("calendar", "{}"),
    ("migrate", "{}"),
    ("schedules", "{}"),
    ("{}",),
    ("--config", "/nonexistent/{}.toml", "status"),
]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse: usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def clean_usage_error(code: int, out: str, err: str) -> tuple[bool, str]:
    lines = [line for line in err.splitlines() if line.strip()]
    where = f"exit {code}, stdout {out[:160]!r}, stderr {err[:200]!r}"
    ok = (
        code == 2
        and len(lines) == 1
        and lines[0].startswith("safesync: ")
        and not out.strip()
        and "Traceback" not in out + err
    )
    return ok, where


def test_hostile_values_exit_2_with_one_line(shared_world, tally) -> None:
    t = tally(AREA)
    before = shared_world.state()

    @seed(SEED)
    @HYPOTHESIS
    @given(template=st.sampled_from(TEMPLATES), text=value, as_json=st.booleans())
    def run(template, text, as_json):
        argv = [part.replace("{}", text) for part in template] + (["--json"] if as_json and template[0] != "{}" else [])
        code, out, err = run_cli(argv)
        if as_json and code == 2 and out.strip() and not err.strip():
            # --json: the error is one JSON object on stdout instead
            import json

            ok = "error" in json.loads(out) and "Traceback" not in out
            where = f"exit {code}, stdout {out[:200]!r}"
        else:
            ok, where = clean_usage_error(code, out, err)
        t.check(ok, f"safesync {' '.join(argv)!r} → {where}")

    run()
    t.unchanged(before, shared_world.state(), "after hostile CLI values")


def test_unknown_commands_and_options_exit_2(shared_world, tally) -> None:
    t = tally(AREA)

    @seed(SEED)
    @HYPOTHESIS
    @given(
        argv=st.one_of(
            st.tuples(word).map(list),
            st.tuples(st.sampled_from(["backup", "content", "staging", "calendar", "migrate"]), word).map(list),
            st.tuples(st.sampled_from([["backup", "list"], ["validate"], ["status"], ["calendar", "status"]]), option).map(lambda p: [*p[0], "--" + p[1]]),
            st.just([]),
        ).filter(lambda a: a not in (["status"], ["doctor"], ["demo"], ["serve"]) and not (len(a) == 1 and a[0] in ("roles", "validate")))
    )
    def run(argv):
        code, out, err = run_cli(argv)
        ok, where = clean_usage_error(code, out, err)
        t.check(ok, f"safesync {' '.join(argv)!r} → {where}")

    run()


def test_the_real_entry_point_says_one_line(shared_world, tally) -> None:
    """The same through ``python -m safesync.functions.cli`` (imports, argv
    decoding, exit status of the process)."""
    t = tally(AREA)
    before = shared_world.state()
    cases = [
        ["backup", "create", "--db", INJECTIONS[0]],
        ["validate", "--db", INJECTIONS[1]],
        ["backup", "restore", INJECTIONS[-1], "--to", "staging"],
        ["calendar", "sync", "--mode", "everything"],
        ["nonsense"],
    ]
    for argv in cases:
        proc = subprocess.run([sys.executable, "-m", "safesync.functions.cli", *argv], capture_output=True, text=True, env=subprocess_env(), timeout=60)
        ok, where = clean_usage_error(proc.returncode, proc.stdout, proc.stderr)
        t.check(ok, f"safesync {' '.join(argv)!r} (subprocess) → {where}")
    t.unchanged(before, shared_world.state(), "after CLI subprocess cases")


# TOML no loader may take: nesting past the limit (arrays, inline tables,
# dotted table headers), at any of the file's keys.
@st.composite
def hostile_toml(draw) -> str:
    depth = draw(st.integers(33, 60_000))
    how = draw(st.sampled_from(["arrays", "inline", "mixed", "headers"]))
    key = draw(st.sampled_from(["backup.databases", "content_sync.tables", "x", "databases.prod"]))
    section, _, name = key.rpartition(".")
    if how == "headers":
        return "[" + ".".join(["t"] * min(depth, 2000)) + "]\nx = 1\n"
    if how == "arrays":
        value = "[" * depth + "]" * depth
    elif how == "inline":
        depth = min(depth, 3000)
        value = "{ a = " * depth + "1" + " }" * depth
    else:
        depth = min(depth, 3000)
        value = "[{ a = " * depth + "1" + " }]" * depth
    return (f"[{section}]\n" if section else "") + f"{name} = {value}\n"


def test_deeply_nested_config_files_exit_2_with_one_line(shared_world, tally, tmp_path) -> None:
    t = tally(AREA)
    before = shared_world.state()
    path = tmp_path / "deep.toml"

    @seed(SEED)
    @HYPOTHESIS
    @given(text=hostile_toml(), command=st.sampled_from([["status"], ["backup", "list"], ["doctor"], ["validate"]]))
    def run(text, command):
        path.write_text(text)
        code, out, err = run_cli(["--config", str(path), *command])
        ok, where = clean_usage_error(code, out, err)
        t.check(ok and "deeper than" in err, f"safesync {' '.join(command)} with {text[:60]!r}… → {where}")

    run()
    t.unchanged(before, shared_world.state(), "after deep config files")
