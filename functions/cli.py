"""The ``safesync`` command line: the same jobs as the HTTP targets.

Each job module registers its own sub-commands (``register_cli``); this
module owns what they share: ``--config``, ``--json``, rendering a report,
and exit codes (0 done and healthy, 1 the job found or refused a problem, 2
usage, config or auth error). Errors are one readable line, never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

from safesync.functions import registry
from safesync.shared.errors import SafesyncError
from safesync.shared.log import redact, redact_obj
from safesync.shared.runner import Answer

# Modules are imported only for the command being run (all of them for
# --help), so one job's imports never slow down or break another's command.
COMMANDS = registry.COMMANDS


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default prints usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"safesync: error: {message} (see --help)\n")


def common_options(*, top: bool) -> argparse.ArgumentParser:
    """``--json`` and ``--config``, accepted before or after the command.

    Sub-commands use SUPPRESS defaults so they do not overwrite a value given
    before the command name.
    """
    parent = argparse.ArgumentParser(add_help=False)
    default = dict(default=None) if top else dict(default=argparse.SUPPRESS)
    parent.add_argument("--json", action="store_true", help="print one JSON report on stdout", **({"default": False} if top else default))
    parent.add_argument("--config", metavar="FILE", help="config file (default: $SAFESYNC_CONFIG or ./safesync.toml)", **default)
    return parent


def _wanted_command(argv: Sequence[str]) -> str | None:
    """The command named on the command line (None: show them all)."""
    words = [a for a in argv if not a.startswith("-")]
    skip_value = "--config" in argv and argv.index("--config") + 1 < len(argv) and argv[argv.index("--config") + 1]
    words = [w for w in words if w != skip_value]
    return words[0] if words and words[0] in COMMANDS else None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parent = common_options(top=False)
    parser = _Parser(prog="safesync", description=__doc__.splitlines()[0], parents=[common_options(top=True)])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = _wanted_command(argv)
    for command, module_name in COMMANDS.items():
        if wanted is not None and command != wanted:
            sub.add_parser(command)  # a name only: not the one being run
            continue
        importlib.import_module(f"safesync.functions.{module_name}").register_cli(sub, parent)
    return parser


def render(answer: Answer, as_json: bool, out=None) -> None:
    """Print an answer: JSON, or a short human report with its tables."""
    out = out or sys.stdout
    body = redact_obj(answer.body)  # every report printed leaves the process
    if as_json:
        out.write(json.dumps(body, indent=2, default=str, ensure_ascii=False) + "\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Reports carry text from databases and configs ("[content_sync.options.lessons] on_conflict …", a
    # table named "[bold]"): printed as it is, never read as rich markup (which drops what looks like a tag).
    console = Console(file=out, highlight=False, soft_wrap=True)
    report = body.get("report", body)
    if body.get("error"):
        console.print(f"[bold red]✗[/] {escape(str(body['error']))}")
    status = report.get("status")
    if status:
        mark = {"ok": "[green]✓[/]", "problems": "[yellow]![/]", "refused": "[red]✗ refused[/]", "failed": "[red]✗ failed[/]"}
        line = f"{report.get('job', '')} {report.get('action', '')}: {report.get('summary', '')}"
        console.print(f"{mark.get(status, escape(str(status)))} {escape(line)}")
    for title, rows in (report.get("tables") or {}).items():
        if not rows:
            continue
        table = Table(title=escape(title), title_justify="left")
        # a column empty in every row says nothing; an id cut to "prod…" says less than nothing: wrap, never cut
        columns = [c for c in dict.fromkeys(k for row in rows for k in row) if any(_cell(row.get(c)) for row in rows)]
        for column in columns:
            table.add_column(escape(column), overflow="fold")
        for row in rows:
            table.add_row(*(escape(_cell(row.get(c))) for c in columns))
        console.print(table)
    for warning in report.get("warnings") or []:
        console.print(f"[yellow]![/] {escape(str(warning))}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    from safesync.shared import log

    # A person at a terminal reads the report; JSON logs only for warnings.
    log.setup(default="WARNING")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        from safesync.shared.config import load_settings

        settings = load_settings(args.config) if getattr(args, "needs_settings", True) else None
        answer = args.func(args, settings)
    except SafesyncError as exc:
        if args.json:
            render(Answer(exc.status, exc.to_dict(), exc.exit_code), True)
        else:
            print(f"safesync: error: {redact(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("safesync: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # our bug: one line here, the traceback in the log
        log.get_logger("cli").exception("internal error", command=args.command)
        print(f"safesync: internal error: {redact(str(exc))}", file=sys.stderr)
        return 1
    if answer is None:
        return 0
    if answer.exit_code == 2 and not args.json and answer.body.get("error"):
        # A usage or config error found inside a run: one line, like any other.
        print(f"safesync: error: {redact(str(answer.body['error']))}", file=sys.stderr)
        return 2
    render(answer, args.json)
    return answer.exit_code


if __name__ == "__main__":
    sys.exit(main())
