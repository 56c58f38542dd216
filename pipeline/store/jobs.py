"""Job rows: what workers report (progress, heartbeat) and what the scheduler reads.

Workers write with short transactions at most once a second, so SQLite stays responsive for the
scheduler and for any number of viewers polling at ~1 Hz.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.progress import eta_seconds
from pipeline.store.db import Store

TERMINAL_STATES = ("done", "failed", "cancelled", "skipped")


def record_event(store: Store, job_id: int | None, kind: str, message: str) -> None:
    with store.tx():
        store.conn.execute(
            "INSERT INTO events (at, job_id, kind, message) VALUES (?, ?, ?, ?)", (time.time(), job_id, kind, message)
        )


def record_exit(store: Store, job_id: int, code: int, error: str) -> None:
    """The worker's own account of how it ended (the scheduler decides the job's state)."""
    with store.tx():
        store.conn.execute(
            "UPDATE jobs SET exit_code = ?, error = ?, heartbeat_at = ? WHERE id = ?",
            (code, error[:2000], time.time(), job_id),
        )


@dataclass
class StoreReporter:
    """A `Reporter` that writes a job's progress into its `jobs` row (and echoes to another reporter)."""

    store: Store
    job_id: int
    echo: Any = None  # another Reporter, e.g. PrintReporter for the worker's log file
    interval: float = 1.0
    _last: float = 0.0
    _start: float = field(default_factory=time.monotonic)

    def progress(self, done: int, total: int, **metrics: Any) -> None:
        if self.echo is not None:
            self.echo.progress(done, total, **metrics)
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 else None
        clean = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
        with self.store.tx():
            self.store.conn.execute(
                "UPDATE jobs SET progress_done = ?, progress_total = ?, metrics = ?, rate = ?, eta_s = ?, "
                "heartbeat_at = ? WHERE id = ?",
                (done, total, json.dumps(clean), rate, eta_seconds(done, total, elapsed), time.time(), self.job_id),
            )

    def message(self, text: str) -> None:
        if self.echo is not None:
            self.echo.message(text)
        with self.store.tx():
            self.store.conn.execute(
                "UPDATE jobs SET message = ?, heartbeat_at = ? WHERE id = ?", (text[:500], time.time(), self.job_id)
            )

    def artifact(self, path: str) -> None:
        if self.echo is not None:
            self.echo.artifact(path)
        record_event(self.store, self.job_id, "artifact", path)

    def should_stop(self) -> bool:
        return False
