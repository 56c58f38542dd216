"""Numbered, append-only schema migrations, applied once and recorded in `_migrations`.

Never edit a shipped migration; add the next number. Migrations run under a file lock so concurrent
processes opening a new store do not race. The fast path (everything applied) needs only sqlite3.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import StoreError

Migration = Callable[[Any], None]  # receives a sqlite_utils.Database
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_settings_and_jobs(db: Any) -> None:
    db["settings"].create({"key": str, "value": str, "updated_at": float}, pk="key")
    db["jobs"].create(
        {
            "id": int,
            "cell": str,  # e.g. "generate:smollm2-135m:L12:E2", unique per unit of work
            "kind": str,  # train | generate | score | prompting | ...
            "model": str,
            "layer": int,
            "epoch": int,
            "task": str,
            "state": str,  # pending | queued | running | done | failed | cancelled | skipped
            "attempts": int,
            "gpus": str,  # JSON list of GPU indices
            "pid": int,
            "pid_start": float,  # psutil create_time, to tell a reused pid from ours
            "log_path": str,
            "progress_done": int,
            "progress_total": int,
            "metrics": str,  # JSON of the last reported metrics
            "message": str,
            "rate": float,
            "eta_s": float,
            "heartbeat_at": float,
            "created_at": float,
            "started_at": float,
            "ended_at": float,
            "next_attempt_at": float,
            "exit_code": int,
            "error": str,
            "executor": str,
            "external_id": str,  # e.g. a Slurm job id
            "node": str,
        },
        pk="id",
        not_null={"cell", "kind", "state"},
        defaults={"attempts": 0, "state": "pending"},
    )
    db["jobs"].create_index(["cell"], unique=True)
    db["jobs"].create_index(["state"])
    db["job_attempts"].create(
        {
            "id": int,
            "job_id": int,
            "attempt": int,
            "pid": int,
            "external_id": str,
            "started_at": float,
            "ended_at": float,
            "exit_code": int,
            "error": str,
        },
        pk="id",
        foreign_keys=[("job_id", "jobs", "id")],
    )
    db["job_attempts"].create_index(["job_id", "attempt"], unique=True)


def applied(conn: sqlite3.Connection) -> list[str]:
    try:
        return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY id")]
    except sqlite3.OperationalError:
        return []


def ensure_migrated(conn: sqlite3.Connection, path: Path) -> list[str]:
    """Apply pending migrations; returns the names applied now."""
    known = [name for name, _ in MIGRATIONS]
    done = applied(conn)
    unknown = [n for n in done if n not in known]
    if unknown:
        raise StoreError(f"{path}: written by a newer steertui (migration {unknown[0]}); upgrade steertui")
    if len(done) == len(known):
        return []
    from filelock import FileLock

    with FileLock(str(path) + ".migrate.lock"):
        return _apply_pending(conn)


def _apply_pending(conn: sqlite3.Connection) -> list[str]:
    import sqlite_utils

    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT UNIQUE, applied_at REAL)")
    done = set(applied(conn))
    db = sqlite_utils.Database(conn)
    now_applied = []
    for number, (name, fn) in enumerate(MIGRATIONS, start=1):
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(db)
            conn.execute("INSERT INTO _migrations (id, name, applied_at) VALUES (?, ?, ?)", (number, name, time.time()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        now_applied.append(name)
    return now_applied


@migration
def m002_judge_ledger(db: Any) -> None:
    """Exactly-once judging: one ledger row per deterministic request key, batches, and their items."""
    db["ledger"].create(
        {
            "key": str,  # sha256 of (provider, model, messages, params): the same request -> the same key
            "provider": str,
            "model": str,
            "task": str,
            "cell": str,  # the score cell (model/layer/epoch/task) the request belongs to
            "item": str,  # generation id, pair id, ... within the cell
            "state": str,  # pending | inflight | submitted | done | invalid | failed
            "mode": str,  # sync | batch
            "batch_id": int,  # batches.id while submitted in a batch
            "attempts": int,
            "reserved_usd": float,  # budget held while in flight
            "cost_usd": float,  # what the provider charged (from usage and the price table)
            "input_tokens": int,
            "output_tokens": int,
            "result": str,  # JSON: answer, valid, reason, raw text, usage
            "created_at": float,
            "updated_at": float,
        },
        pk="key",
        defaults={"attempts": 0, "reserved_usd": 0.0, "cost_usd": 0.0},
    )
    db["ledger"].create_index(["cell", "state"])
    db["ledger"].create_index(["batch_id"])
    db["batches"].create(
        {
            "id": int,
            "provider": str,
            "model": str,
            "task": str,
            "cell": str,
            "tag": str,  # deterministic; stored in provider metadata so an interrupted create is found again
            "chunk": int,
            "state": str,  # building | uploaded | created | ended | downloaded | failed
            "input_file_id": str,
            "remote_id": str,  # the provider's batch id, stored before the first poll
            "remote_status": str,
            "output_file_id": str,
            "error_file_id": str,
            "n_requests": int,
            "reserved_usd": float,
            "error": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
    )
    db["batches"].create_index(["tag"], unique=True)
    db["batch_items"].create(
        {"batch_id": int, "custom_id": str, "key": str},
        pk=("batch_id", "custom_id"),
        foreign_keys=[("batch_id", "batches", "id")],
    )


@migration
def m003_scheduler(db: Any) -> None:
    """GPU leases (backed by per-GPU file locks) and an event timeline for the TUI and reports."""
    db["gpu_leases"].create(
        {"gpu": int, "job_id": int, "pid": int, "pid_start": float, "leased_at": float, "holder": str},
        pk="gpu",
    )
    db["events"].create(
        {"id": int, "at": float, "job_id": int, "kind": str, "message": str},
        pk="id",
    )
    db["events"].create_index(["job_id"])


@migration
def m004_judge_spend(db: Any) -> None:
    """A running total of judge spending (settled costs plus in-flight reservations), so a budget check is
    one row read inside the reserving transaction instead of a sum over the whole ledger."""
    db["judge_spend"].create({"id": int, "total_usd": float}, pk="id")
    db.execute(
        "INSERT INTO judge_spend (id, total_usd) "
        "SELECT 1, COALESCE(SUM(cost_usd), 0) + COALESCE(SUM(reserved_usd), 0) FROM ledger"
    )


@migration
def m005_job_control(db: Any) -> None:
    """Cancel requests travel through the store, so a viewer can ask the scheduler to stop a job."""
    db["jobs"].add_column("cancel_requested_at", float)
