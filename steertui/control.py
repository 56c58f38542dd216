"""Actions on jobs that any process may take (the TUI, `steertui` commands): they go through the store,
and the running scheduler carries them out on its next tick. With no scheduler running, a cancel signals
the worker directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from pipeline.config import Config
from pipeline.store import Store
from pipeline.workspace import Workspace
from steertui.executor import Executor, LocalExecutor


def request_cancel(
    store: Store, job_ids: Iterable[int], *, scheduler_running: bool, workspace: Workspace | None = None,
    config: Config | None = None,
) -> int:  # fmt: skip
    """Cancel running jobs (SIGINT, then SIGKILL after the grace period) and drop queued ones.

    Without a running scheduler the cancel is sent here, through the executor that started the job
    (needs `workspace` and `config` for Slurm jobs; local jobs are signalled directly)."""
    n = 0
    for job_id in job_ids:
        row = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None or row["state"] in ("done", "failed", "cancelled", "skipped"):
            continue
        now = time.time()
        if row["state"] in ("running", "cancelling"):
            with store.tx():
                store.conn.execute("UPDATE jobs SET cancel_requested_at = ? WHERE id = ?", (now, job_id))
            if not scheduler_running:
                _executor_for(dict(row), workspace, config).cancel(dict(row))
        else:
            with store.tx():
                store.conn.execute("UPDATE jobs SET state = 'cancelled', ended_at = ? WHERE id = ?", (now, job_id))
        n += 1
    return n


def _executor_for(row: dict[str, object], ws: Workspace | None, config: Config | None) -> Executor:
    if ws is not None and config is not None and row.get("executor") not in (None, "local"):
        from steertui.executors import executor_for_row

        return executor_for_row(row, config, ws)
    return LocalExecutor()


def request_run(store: Store, job_ids: Iterable[int]) -> int:
    """Make failed, cancelled or skipped cells eligible again (attempts reset); the scheduler re-plans them."""
    n = 0
    with store.tx():
        for job_id in job_ids:
            cur = store.conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, error = NULL, next_attempt_at = NULL, "
                "cancel_requested_at = NULL WHERE id = ? AND state IN ('failed', 'cancelled', 'skipped')",
                (job_id,),
            )
            n += cur.rowcount
    return n
