"""A cell's details (config, timings, artifacts and row counts, cost, last log lines), read in a worker thread.

Everything shown is relative (paths to the workspace root, times as durations against the app's clock), so
the same data always renders the same way.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.progress import format_duration
from pipeline.workspace import Workspace, short_model_name


@dataclass(frozen=True)
class CellInfo:
    """What the details panel shows for one job."""

    job_id: int
    cell: str
    state: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    error: str = ""
    log_tail: list[str] = field(default_factory=list)
    log_path: str = ""


def read_details(ws: Workspace, config: Config | None, db: Path, job_id: int, now: float) -> CellInfo | None:
    """Details of `job_id` from a fresh read-only connection (safe beside the engine's)."""
    from pipeline.store import connect

    conn = connect(db, readonly=True)
    try:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = dict(row)
        cost = _cost(conn, job["cell"])
    finally:
        conn.close()
    lines = [("cell", _what(job)), ("settings", _settings(job, config)), ("run", _timing(job, now))]
    lines += _artifacts(ws, config, job)
    lines.append(("cost", cost))
    if job.get("message"):
        lines.append(("message", str(job["message"]).splitlines()[0][:200]))
    log = job.get("log_path") or ""
    return CellInfo(job_id, job["cell"], job["state"], lines, str(job.get("error") or "").strip(), tail(log, 8),
                    relative(ws, log))  # fmt: skip


def relative(ws: Workspace, path: str | Path) -> str:
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(ws.root.resolve()))
    except ValueError:
        return str(path)


def tail(path: str, lines: int) -> list[str]:
    """The last lines of a log, read from its end (a large log costs nothing)."""
    if not path or not os.path.exists(path):
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 16384))
        data = fh.read().decode("utf-8", "replace")
    from steertui.widgets.glyphs import printable

    return [printable(line).rstrip() for line in data.splitlines() if line.strip()][-lines:]


def _what(job: dict[str, Any]) -> str:
    parts = [job["kind"], short_model_name(job.get("model") or ""), f"layer {job.get('layer')}"]
    if job["kind"] != "train":
        parts.append(f"epoch {job.get('epoch')}")
    if job.get("task"):
        parts.append(str(job["task"]))
    return " · ".join(parts)


def _settings(job: dict[str, Any], config: Config | None) -> str:
    if config is None:
        return "—"
    if job["kind"] == "train":
        t = config.train
        return f"{t.epochs} epochs · lr {t.lr:g} · batch {t.batch_size} · β {t.beta:g}"
    if job["kind"] == "generate":
        g = config.generate
        how = "greedy" if g.greedy else f"T {g.temperature:g} · top_p {g.top_p:g}"
        return f"{len(g.multipliers)} multipliers · {g.max_new_tokens} new tokens · {how}"
    j = config.judge
    return f"{j.judge} · {j.mode}"


def _timing(job: dict[str, Any], now: float) -> str:
    parts = [f"attempt {job.get('attempts') or 0}"]
    started, ended = job.get("started_at"), job.get("ended_at")
    if started and ended and ended >= started:
        parts.append(f"took {format_duration(ended - started)}")
    elif started and job["state"] in ("running", "cancelling"):
        parts.append(f"running {format_duration(max(0.0, now - started))}")
    if job.get("progress_total"):
        parts.append(f"{job.get('progress_done') or 0}/{job['progress_total']}")
    if job.get("eta_s") and job["state"] == "running":
        parts.append(f"eta {format_duration(job['eta_s'])}")
    if job.get("pid") and job["state"] in ("running", "cancelling"):
        parts.append(f"pid {job['pid']}")
    gpus = json.loads(job.get("gpus") or "[]")
    if gpus:
        parts.append("GPU " + ",".join(map(str, gpus)))
    if job.get("exit_code") is not None:
        parts.append(f"exit {job['exit_code']}")
    return " · ".join(parts)


def _artifacts(ws: Workspace, config: Config | None, job: dict[str, Any]) -> list[tuple[str, str]]:
    """Artifact paths (relative) with their row counts."""
    from pipeline.files import count_lines

    if config is None:
        return []
    model, layer, epoch = job.get("model") or "", int(job.get("layer") or 0), int(job.get("epoch") or 0)
    if job["kind"] == "train":
        folder = ws.vector_dir(config.behavior, model, layer)
        vectors = len(list(folder.glob("vec_ep*_layer*.pt"))) if folder.is_dir() else 0
        metrics = count_lines(ws.metrics_path(config.behavior, model, layer))
        return [("vectors", f"{relative(ws, folder)}/ ({vectors} of {config.train.epochs} epochs)"),
                ("metrics", f"evaluation_metrics.jsonl ({metrics} rows)")]  # fmt: skip
    if job["kind"] == "generate":
        path = ws.generations_path(model, layer, epoch)
        return [("output", f"{relative(ws, path)} ({count_lines(path)} rows)")]
    task = str(job.get("task") or "")
    pairwise = task == "pairwise"
    name = _behaviour_task(ws, config) if pairwise else task
    path = ws.scores_path(model, layer, epoch, name, pairwise=pairwise)
    return [("output", f"{relative(ws, path)} ({count_lines(path)} rows)")]


def _behaviour_task(ws: Workspace, config: Config) -> str:
    from pipeline.artifacts import behaviour_task

    return behaviour_task(ws, config)


def _cost(conn: sqlite3.Connection, cell: str) -> str:
    try:
        row = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(reserved_usd), 0), "
            "SUM(state = 'done') FROM ledger WHERE cell = ?",
            (cell,),
        ).fetchone()
    except sqlite3.OperationalError:
        return "—"
    n, cost, reserved, done = row
    if not n:
        return "—"
    held = f" · ${reserved:.4f} in flight" if reserved else ""
    return f"${cost:.4f} · {done or 0}/{n} requests done{held}"
