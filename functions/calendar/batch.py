"""Batched Calendar calls (50 per HTTP request) with per-item retries.

The client library sends a batch but never retries its items, so this does:
items that fail with a retryable error (429, 403 rate limit, 5xx, or the
whole batch call dropping) go into the next round after an exponential,
jittered backoff; everything else is returned to the caller to decide.
Requests are built by factories so each round sends a fresh request.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Generic, TypeVar

from googleapiclient.http import HttpRequest

from safesync.shared.errors import JobFailed

from . import state
from .context import SyncContext
from .google import BATCH_SIZE
from .retry import Failure, classify

K = TypeVar("K")
Factory = Callable[[], HttpRequest]


class BatchRunner(Generic[K]):
    def __init__(self, ctx: SyncContext, calendar_id: str) -> None:
        self.ctx, self.cal = ctx, calendar_id

    def run_once(self, items: list[tuple[K, Factory]]) -> list[tuple[K, Any, Failure | None]]:
        """One pass over ``items`` in batches; no retries. A batch call that
        fails for a reason retrying cannot fix (credentials refused, 400 on
        the envelope) ends the run: it says nothing about the items."""
        out: list[tuple[K, Any, Failure | None]] = []
        for start in range(0, len(items), BATCH_SIZE):
            chunk = items[start : start + BATCH_SIZE]
            try:
                results = self.ctx.client.execute_batch([(str(i), make()) for i, (_, make) in enumerate(chunk)])
            except Exception as exc:  # the whole batch call failed: every item alike
                failure = replace(classify(exc), whole_batch=True)
                self.ctx.counts["batch_failures"] += 1
                state.audit(self.ctx.conn, self.ctx.run_id, "error", "batch call failed", calendar_id=self.cal,
                            detail={"error": failure.describe(), "items": len(chunk)})
                if not failure.retryable:
                    raise JobFailed(f"calendar {self.cal}: batch call failed: {failure.describe()}", {"calendar_id": self.cal}) from None
                out += [(key, None, failure) for key, _ in chunk]
                continue
            for i, (key, _) in enumerate(chunk):
                response, error = results.get(str(i), (None, RuntimeError("no response for batch item")))
                out.append((key, response, classify(error) if error is not None else None))
        return out

    def run(self, items: list[tuple[K, Factory]]) -> list[tuple[K, Any, Failure | None]]:
        """Run with retry rounds for retryable failures; the final outcome of
        every item is returned (a retryable failure only after the last round)."""
        done: list[tuple[K, Any, Failure | None]] = []
        pending = list(items)
        factories = {id(key): make for key, make in items}
        for attempt in range(self.ctx.policy.attempts):
            results = self.run_once(pending)
            retry = [(key, failure) for key, _, failure in results if failure is not None and failure.retryable]
            done += [r for r in results if r[2] is None or not r[2].retryable]
            if not retry:
                return done
            if attempt == self.ctx.policy.attempts - 1 or any(self.ctx.policy.waits_too_long(f) for _, f in retry):
                return done + [(key, None, failure) for key, failure in retry]
            self.ctx.counts["item_retries"] += len(retry)
            self.sleep_before_retry(attempt, [f for _, f in retry])
            pending = [(key, factories[id(key)]) for key, _ in retry]
        return done

    def sleep_before_retry(self, attempt: int, failures: list[Failure]) -> None:
        after = max((f.retry_after or 0.0 for f in failures), default=0.0) or None
        self.ctx.policy.sleep(self.ctx.policy.delay(attempt, after))
