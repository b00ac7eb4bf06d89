"""backup — placeholder until its issue lands (HTTP 501, CLI exit 1)."""

from safesync.functions._pending import pending

handle_http, register_cli = pending("backup", "backup", ['create', 'list', 'verify', 'restore', 'prune'])
