"""The status page and its login page: self-contained HTML (inline CSS and
SVG, no scripts, every value escaped), served with a strict CSP."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any, Iterable

COLOURS = {"ok": "#1a7f37", "degraded": "#9a6700", "failing": "#cf222e", "refused": "#9a6700", "failed": "#cf222e", "problems": "#9a6700"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STYLE = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;color:#1f2328}"
    "h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em}h3{margin:.8em 0 .3em}"
    "table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}"
    "th{background:#f6f8fa}.badge{color:#fff;border-radius:4px;padding:1px 7px;font-weight:600}"
    ".attention{border:2px solid #d0d7de;border-radius:6px;padding:.6em 1.2em}.attention li:first-child{font-weight:700}"
    ".card{border:1px solid #d0d7de;border-radius:6px;padding:.4em 1em;margin:.8em 0}.muted{color:#57606a}"
    "form.inline{display:inline;float:right}button{font:inherit;padding:3px 10px}"
    "input{font:inherit;padding:4px;width:22em}.error{color:#cf222e}"
)

e = html.escape


def _text(value: Any) -> str:
    return "" if value is None else e(str(value))


def _size(n: int | None) -> str:
    from safesync.functions.backup import human_bytes

    return "" if n is None else human_bytes(int(n))


def _when(iso: str | None) -> str:
    """``2026-12-01 20:15Z (3 h ago)`` for an ISO timestamp."""
    if not iso:
        return ""
    at = datetime.fromisoformat(iso).astimezone(timezone.utc)
    seconds = (datetime.now(timezone.utc) - at).total_seconds()
    span = abs(seconds)
    amount = f"{span / 60:.0f} min" if span < 5400 else f"{span / 3600:.0f} h" if span < 172800 else f"{span / 86400:.0f} days"
    return f"{at:%Y-%m-%d %H:%M}Z ({amount} ago)" if seconds >= 0 else f"{at:%Y-%m-%d %H:%M}Z (in {amount})"


def _badge(word: str | None) -> str:
    word = word or "unknown"
    return f'<span class="badge" style="background:{COLOURS.get(word, "#57606a")}">{e(word)}</span>'


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("✓" if ok else "✗ failed")


def _table(columns: list[tuple[str, str]], rows: Iterable[dict[str, Any]], cell=_text) -> str:
    head = "".join(f"<th>{e(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(key)) if key != '_html' else row['_html']}</td>" for key, _ in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def size_chart(db: str, backups: list[dict[str, Any]], width: int = 360, height: int = 70) -> str:
    """The size of the last backups, oldest left, as an inline SVG line."""
    points = [(b["started_at"], int(b["size"])) for b in reversed(backups)]
    if not points:
        return ""
    pad = 6
    sizes = [s for _, s in points]
    low, high = min(sizes), max(sizes)
    span = (high - low) or 1
    step = (width - 2 * pad) / max(len(points) - 1, 1)
    xy = [(pad + i * step, height - pad - (s - low) / span * (height - 2 * pad)) for i, (_, s) in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    last_x, last_y = xy[-1]
    title = f"Size of the last {len(points)} backups of {db}: {_size(sizes[0])} → {_size(sizes[-1])} (min {_size(low)}, max {_size(high)})"
    return (
        f'<svg role="img" aria-label="{e(title)}" width="{width + 90}" height="{height}" viewBox="0 0 {width + 90} {height}">'
        f"<title>{e(title)}</title>"
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f6f8fa"/>'
        f'<polyline fill="none" stroke="#0969da" stroke-width="2" points="{line}"/>'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="3" fill="#0969da"/>'
        f'<text x="{width + 6}" y="{pad + 8}" font-size="11" fill="#57606a">{e(_size(high))}</text>'
        f'<text x="{width + 6}" y="{height - pad}" font-size="11" fill="#57606a">{e(_size(low))}</text>'
        "</svg>"
    )


def _database(line: dict[str, Any], last: dict[str, Any] | None) -> str:
    db = line["db"]
    kept = line.get("kept") or {}
    rules = " · ".join(f"{n} {rule}" for rule, n in kept.items()) or "none"
    verify, drill = line.get("last_verify"), line.get("last_drill")

    def result(what: str, r: dict[str, Any] | None) -> str:
        if not r:
            return f"<li>last {what}: never</li>"
        problems = "; ".join(r.get("problems") or [])
        return f"<li>last {what}: {_mark(r['ok'])} {_when(r.get('at'))} — {e(r['backup'])}{(' — ' + e(problems)) if problems else ''}</li>"

    latest = ""
    if last and last.get("id"):
        latest = f"<li>last backup: {e(last['id'])}, {e(str(last.get('age', '')))} old, {e(str(last.get('size', '')))}</li>"
    elif last:
        latest = '<li class="error">no complete backup</li>'
    backups = line.get("backups") or []
    rows = [
        {**b, "started_at": _when(b["started_at"]), "size": _size(b["size"]), "kept_by": ", ".join(b["kept_by"]) or "— (prune deletes it)",
         "verified": _mark(b.get("verified")), "drill": _mark(b.get("drill"))}
        for b in backups[:10]
    ]
    columns = [("id", "backup"), ("kind", "kind"), ("started_at", "started"), ("size", "size"), ("kept_by", "kept by"), ("verified", "verified"), ("drill", "drill")]
    return (
        f'<div class="card"><h3>{e(db)}</h3><ul>{latest}'
        f"<li>{line.get('complete', 0)} complete backups; kept: {e(rules)}; {line.get('to_prune', 0)} to prune</li>"
        f"{result('verify', verify)}{result('restore drill', drill)}</ul>"
        f"{size_chart(db, backups)}"
        f"{_table(columns, rows) if rows else ''}</div>"
    )


def _content_sync(sync: dict[str, Any] | None) -> str:
    if not isinstance(sync, dict) or "error" in sync:
        return "<h2>Last content sync</h2><p>" + (e(sync["error"]) if isinstance(sync, dict) else "none yet") + "</p>"
    columns = [("table", "table"), ("new", "new"), ("changed", "changed"), ("written", "written"), ("deleted", "deleted"), ("conflicts", "conflicts")]
    return (
        f"<h2>Last content sync</h2><p>{_badge(sync.get('status'))} {_when(sync.get('finished_at'))}: "
        f"<b>{sync['written']} rows written</b>, {sync['deleted']} deleted, <b>{sync['conflicts']} conflicts</b> — {_text(sync.get('summary'))}</p>"
        + _table(columns, sync.get("tables") or [])
    )


def _calendar(calendar: Any) -> str:
    if not isinstance(calendar, dict):
        return ""
    channels = calendar.get("push_channels") or []
    listed = "".join(
        f"<li>{e(c['calendar_id'])}: push channel expires {_when(c['expires_at'])}</li>" if c.get("expires_at")
        else f"<li>{e(c['calendar_id'])}: no active push channel</li>"
        for c in channels
    )
    return (
        f"<h2>Calendar</h2><p>{_badge(calendar.get('health'))} {_text(calendar.get('reason'))} — "
        f"pending {_text(calendar.get('pending', 0))}, failed {_text(calendar.get('failed_total', len(calendar.get('failed') or [])))}, "
        f"conflicts this week {_text(calendar.get('conflicts_this_week', 0))}</p>"
        f"<ul>{listed or '<li>no push channel open</li>'}</ul>"
    )


def render_status(body: dict[str, Any], *, logout_path: str | None = None) -> str:
    """The whole page from a status answer's body."""
    details = body.get("details", {})
    health = details.get("health", "failing" if body.get("error") else "unknown")
    reasons = details.get("reasons") or ([str(body["error"])] if body.get("error") else [])
    logout = (
        f'<form class="inline" method="post" action="{e(logout_path)}"><input type="hidden" name="action" value="logout">'
        '<button type="submit">Log out</button></form>'
        if logout_path else ""
    )
    attention = (
        "<ol>" + "".join(f"<li>{e(r)}</li>" for r in reasons) + "</ol>" if reasons else "<p>Nothing needs attention.</p>"
    )
    last = {row.get("db"): row for row in details.get("backups") or [] if isinstance(row, dict)}
    timeline = details.get("timeline")
    databases = (
        "".join(_database(line, last.get(line["db"])) for line in timeline) if isinstance(timeline, list)
        else f"<p class='error'>{_text((timeline or {}).get('error'))}</p>"
    )
    runs = details.get("runs") if isinstance(details.get("runs"), list) else []
    run_rows = [{**r, "_html": _badge(r.get("status")), "finished_at": _when(r.get("finished_at"))} for r in runs]
    run_columns = [("job", "job"), ("action", "action"), ("_html", "outcome"), ("finished_at", "finished"), ("summary", "summary")]
    storage = details.get("storage") or {}
    parts = [
        f"{logout}<h1>safesync {_badge(health)}</h1>",
        f'<p class="muted">as of {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}Z</p>',
        f'<section class="attention"><h2>Needs attention</h2>{attention}</section>',
        f"<h2>Backups</h2>{databases or '<p>no database in backup.databases</p>'}",
        f"<h2>Last run of every job and action</h2>{_table(run_columns, run_rows) if run_rows else '<p>no runs yet</p>'}",
        _content_sync(details.get("content_sync")),
        _calendar(details.get("calendar")),
    ]
    if isinstance(storage, dict) and "bytes" in storage:
        parts.append(f"<h2>Storage</h2><p>{_text(storage['url'])}: {storage['objects']} objects, {_size(storage['bytes'])}</p>")
    return _document(f"safesync status: {health}", "".join(parts))


def render_login(action: str, message: str, *, error: bool = True) -> str:
    """The login form: the token goes in a POST body, never in a URL."""
    note = f'<p class="{"error" if error else "muted"}">{e(message)}</p>'
    return _document(
        "safesync status: log in",
        "<h1>safesync status</h1>"
        f"{note}<form method=\"post\" action=\"{e(action)}\">"
        '<p><label>Token (SAFESYNC_API_TOKEN)<br><input type="password" name="token" autocomplete="current-password" required autofocus></label></p>'
        '<p><button type="submit">Log in</button></p></form>'
        '<p class="muted">Or run <code>safesync status --link</code> and open the one-time link it prints.</p>',
    )


def render_error(message: str) -> str:
    return _document("safesync status: error", f"<h1>safesync status</h1><p class=\"error\">{e(message)}</p>")


def _document(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">"
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )
