"""What the screens show, read from the store in one pass (sqlite3 only: no pandas, no torch).

`read_jobs` turns the `jobs` table into light `JobView`s; `build_layout` arranges them as the matrix
(rows model/layer, columns train then epoch × stage) and is recomputed only when the set of cells changes.
A `Snapshot` is immutable once posted to the UI thread, so widgets can keep references to it.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline.config import Config
from pipeline.workspace import short_model_name

STATES = ("pending", "queued", "running", "cancelling", "done", "failed", "cancelled", "skipped")
ACTIVE = ("running", "cancelling")
JOB_COLUMNS = (
    "id, cell, kind, COALESCE(model, ''), COALESCE(layer, 0), COALESCE(epoch, 0), COALESCE(task, ''), state, "
    "COALESCE(attempts, 0), COALESCE(gpus, ''), pid, log_path, progress_done, progress_total, COALESCE(message, ''), "
    "rate, eta_s, started_at, ended_at, heartbeat_at, cancel_requested_at, exit_code"
)
STAGE_LABELS = {"train": "train", "generate": "gen", "coherence": "coh", "pairwise": "pair"}


class JobView(NamedTuple):
    """One row of the `jobs` table, minus the bulky columns (error text, metrics JSON).

    A named tuple: built from a SQLite row in C, hashed and compared as a tuple (8,000 a second stay cheap).
    """

    id: int
    cell: str
    kind: str
    model: str
    layer: int
    epoch: int
    task: str
    state: str
    attempts: int
    gpus: str
    pid: int | None
    log_path: str | None
    progress_done: int | None
    progress_total: int | None
    message: str
    rate: float | None
    eta_s: float | None
    started_at: float | None
    ended_at: float | None
    heartbeat_at: float | None
    cancel_requested_at: float | None
    exit_code: int | None

    @property
    def fraction(self) -> float | None:
        if self.progress_total and self.progress_done is not None:
            return min(1.0, max(0.0, self.progress_done / self.progress_total))
        return None

    @property
    def shown_state(self) -> str:
        """The state, with a pending cancel shown as cancelling."""
        if self.state == "running" and self.cancel_requested_at is not None:
            return "cancelling"
        return self.state


@dataclass(frozen=True)
class Column:
    """A matrix column: train (epoch 0), or one stage of one epoch."""

    epoch: int
    kind: str
    task: str

    @property
    def label(self) -> str:
        name = self.task or self.kind
        return STAGE_LABELS.get(name, name[:3])


@dataclass(eq=False)
class MatrixLayout:
    """Rows (model, layer) × columns; `grid[r][c]` is a job id or None (no such cell)."""

    rows: list[tuple[str, int]] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    grid: list[list[int | None]] = field(default_factory=list)
    signature: tuple[int, int, int] = (0, 0, 0)

    row_labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.row_labels = [f"{short_model_name(model)} L{layer}" for model, layer in self.rows]

    def position(self, job_id: int) -> tuple[int, int] | None:
        for r, line in enumerate(self.grid):
            for c, jid in enumerate(line):
                if jid == job_id:
                    return r, c
        return None


@dataclass(frozen=True)
class EventView:
    id: int
    at: float
    job_id: int | None
    kind: str
    message: str
    cell: str


@dataclass(frozen=True)
class Role:
    """Who schedules this workspace: this app, another process (`pid`), or nobody."""

    kind: str  # "scheduler" | "remote" | "none"
    pid: int | None = None
    scope: str = ""  # for "scheduler": "all" or "N cells"

    @property
    def text(self) -> str:
        if self.kind == "scheduler":
            return f"scheduling {self.scope}" if self.scope else "scheduler"
        if self.kind == "remote":
            return f"viewer · scheduler pid {self.pid}"
        return "viewer · no scheduler"


@dataclass(frozen=True)
class Notice:
    """A line for the user from the engine (notify toast)."""

    message: str
    severity: str = "information"  # information | warning | error
    title: str = ""


@dataclass(eq=False)
class Snapshot:
    """One poll of the store, with the matrix layout and anything new since the previous poll."""

    jobs: dict[int, JobView] = field(default_factory=dict)
    layout: MatrixLayout = field(default_factory=MatrixLayout)
    counts: Counter[str] = field(default_factory=Counter)
    role: Role = field(default_factory=lambda: Role("none"))
    events: list[EventView] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    spend_usd: float = 0.0
    budget_usd: float | None = None
    problem: str = ""  # e.g. "no store yet"
    seq: int = 0
    digest: int = 0  # equal for two polls that would show the same thing (the UI then skips the refresh)

    def active(self) -> list[JobView]:
        """Running, cancelling, queued and failed jobs, in that order (the Jobs screen)."""
        rank = {"running": 0, "cancelling": 0, "queued": 1, "failed": 2}
        chosen = [j for j in self.jobs.values() if j.state in rank]
        return sorted(chosen, key=lambda j: (rank[j.state], j.id))


def read_jobs(conn: sqlite3.Connection) -> dict[int, JobView]:
    """Every job, light columns only, NULLs of the text/number columns normalised (one row → one `JobView`)."""
    make = JobView._make
    return {r[0]: make(r) for r in conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY id")}


def planned(job_id: int, cell: Any) -> JobView:
    """A plan cell (`steertui.plan.Cell`) that has no job row yet, shown as pending."""
    return JobView(job_id, cell.key, cell.kind, cell.model, cell.layer, cell.epoch, cell.task, "pending", 0, "",
                   None, None, None, None, "", None, None, None, None, None, None, None)  # fmt: skip


def read_events(conn: sqlite3.Connection, after: int, limit: int = 200) -> list[EventView]:
    rows = conn.execute(
        "SELECT e.id, e.at, e.job_id, e.kind, e.message, COALESCE(j.cell, '') FROM events e "
        "LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id > ? ORDER BY e.id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [EventView(int(r[0]), float(r[1] or 0), r[2], str(r[3]), str(r[4] or ""), str(r[5])) for r in rows]


def last_event_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
    return int(row[0])


def read_spend(conn: sqlite3.Connection) -> float:
    try:
        row = conn.execute("SELECT total_usd FROM judge_spend WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return 0.0
    return float(row[0]) if row and row[0] is not None else 0.0


def in_config(jobs: Iterable[JobView], config: Config | None) -> list[JobView]:
    """Jobs of the configured models, layers and epochs (cells of an older config stay out of the matrix)."""
    if config is None:
        return list(jobs)
    wanted: dict[str, tuple[set[int], set[int]]] = {}
    for spec in config.models:
        entry = (set(spec.layers), set(config.eval_epochs(spec)))
        wanted[spec.name] = entry
        wanted.setdefault(spec.short, entry)
    out = []
    for job in jobs:
        found = wanted.get(job.model) or wanted.get(short_model_name(job.model))
        if found and job.layer in found[0] and (job.kind == "train" or job.epoch in found[1]):
            out.append(job)
    return out


def build_layout(jobs: list[JobView]) -> MatrixLayout:
    """Rows and columns in the plan's order (first appearance by job id); train first, then epoch by epoch."""
    rows: dict[tuple[str, int], int] = {}
    tasks: dict[str, int] = {}
    epochs: set[int] = set()
    for job in jobs:
        rows.setdefault((job.model, job.layer), len(rows))
        if job.kind == "score":
            tasks.setdefault(job.task, len(tasks))
        if job.kind != "train":
            epochs.add(job.epoch)
    has_train = any(j.kind == "train" for j in jobs)
    columns = [Column(0, "train", "")] if has_train else []
    for epoch in sorted(epochs):
        columns.append(Column(epoch, "generate", ""))
        columns.extend(Column(epoch, "score", task) for task in tasks)
    col_index = {c: i for i, c in enumerate(columns)}
    grid: list[list[int | None]] = [[None] * len(columns) for _ in rows]
    for job in jobs:
        col = Column(0, "train", "") if job.kind == "train" else Column(job.epoch, job.kind, job.task)
        c = col_index.get(col)
        if c is not None:
            grid[rows[(job.model, job.layer)]][c] = job.id
    return MatrixLayout(list(rows), columns, grid, signature(jobs))


def signature(jobs: list[JobView]) -> tuple[int, int, int]:
    """Changes when cells come or go (ids are stable and only grow), so the layout is rebuilt only then."""
    ids = [j.id for j in jobs]
    return (len(ids), min(ids, default=0), max(ids, default=0))
