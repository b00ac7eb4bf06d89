"""Requests per caller identity per minute, counted in Postgres so every
instance of the function shares one budget (429 + Retry-After beyond it)."""

from __future__ import annotations

import math

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import RateLimited

from .schema import ensure_migrated, tables_required


def check(settings: Settings, identity: str) -> int:
    """Count one request for ``identity``; raise RateLimited when over the
    per-minute limit. Returns the hits so far in this minute."""
    cfg = settings.config.calendar
    url = settings.database_url(cfg.database)
    with connect(url, autocommit=True, application_name="safesync-calendar-ratelimit") as conn, tables_required(url, cfg.database):
        ensure_migrated(conn, url)
        hits, remaining = conn.execute(
            """
            insert into calendar.rate_limits (identity, window_start, hits)
            values (%s, date_trunc('minute', now()), 1)
            on conflict (identity, window_start) do update set hits = calendar.rate_limits.hits + 1
            returning hits, extract(epoch from date_trunc('minute', now()) + interval '1 minute' - now())
            """,
            [identity],
        ).fetchone()
    if hits > cfg.rate_limit_per_minute:
        retry_after = max(1, math.ceil(float(remaining)))
        raise RateLimited(
            f"rate limit of {cfg.rate_limit_per_minute} calendar requests per minute exceeded; retry in {retry_after}s",
            retry_after=retry_after,
            detail={"retry_after": retry_after, "limit": cfg.rate_limit_per_minute},
        )
    return hits
