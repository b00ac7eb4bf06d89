"""The human form of a report (``safesync … `` without ``--json``), as a
terminal of 80 columns or a CI log shows it."""

from __future__ import annotations

import io

from safesync.functions.cli import render
from safesync.shared.report import Answer


def test_a_table_shows_every_value_whole_and_leaves_out_columns_empty_in_every_row() -> None:
    backup_id = "prod-20261204T045950Z-manual"
    rows = [{"id": backup_id, "age": "0m", "size": "50.9 KiB", "scope": "full", "tables": 18, "rows": 554,
             "verified": None, "drill": "", "encrypted": None, "trigger": "demo"}]
    out = io.StringIO()
    render(Answer(200, {"job": "backup", "action": "list", "status": "ok", "summary": "1 backup", "tables": {"backup": rows}}), False, out)
    text = out.getvalue()
    id_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert id_column == backup_id and "…" not in text  # wrapped where it must be, never cut
    assert "verified" not in text and "drill" not in text and "encrypted" not in text
    assert "trigger" in text and "demo" in text


def test_text_from_databases_and_configs_is_printed_as_it_is_never_as_markup() -> None:
    """A refusal's advice names a config section in brackets; rich read
    "[content_sync.options.lessons]" as a style tag and dropped it, so the
    line said "choose with  on_conflict" (which section?)."""
    summary = 'nothing synced — choose with [content_sync.options.lessons] on_conflict = "source"'
    rows = [{"table": "[bold]users[/bold]", "note": "[red]x"}]
    body = {"job": "content_sync", "action": "sync", "status": "refused", "summary": summary,
            "tables": {"[t]": rows}, "warnings": ["[b]careful[/b]"], "error": "[i]why[/i]"}
    out = io.StringIO()
    render(Answer(422, body), False, out)
    text = out.getvalue()
    for piece in ("[content_sync.options.lessons] on_conflict", "[bold]users[/bold]", "[red]x", "[b]careful[/b]", "[i]why[/i]", "[t]"):
        assert piece in text, piece
