"""The app's engine: one pass of "apply user commands, tick the scheduler (if this app is it), read the store".

`Engine.step` runs in a thread worker, never on the event loop, and never twice at once (a lock, and the app
reschedules the next pass only when the previous one ended). It holds the only store connection the UI uses.
The app is the scheduler only after the user asks for it (a run key, `s`, or `steertui run`) and the
workspace's scheduler lock is free; otherwise it is a viewer, and its actions go through the store for
whichever scheduler runs (`steertui.control`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import InputError, SteerError
from pipeline.store import Store
from pipeline.workspace import Workspace
from steertui.plan import STAGES
from steertui.screens.snapshot import (
    EventView,
    JobView,
    MatrixLayout,
    Notice,
    Role,
    Snapshot,
    build_layout,
    in_config,
    last_event_id,
    read_events,
    read_jobs,
    read_spend,
    signature,
)
from steertui.screens.snapshot import planned as planned_job

if TYPE_CHECKING:
    from steertui.screens.scheduling import SelectiveScheduler

RERUNNABLE = ("failed", "cancelled", "skipped")
FINAL = ("done", *RERUNNABLE)


@dataclass(frozen=True)
class Command:
    """A user action for the engine: run / retry / cancel job ids, or schedule everything / stop."""

    action: str  # "run" | "retry" | "cancel" | "schedule_all" | "stop"
    job_ids: tuple[int, ...] = ()


@dataclass
class EngineOptions:
    """The stages to schedule (`steertui run --stages`), and test seams: executor, GPU list, environment."""

    stages: tuple[str, ...] = STAGES
    executor: Any = None
    gpus: Any = None
    env: Mapping[str, str] | None = None


class Engine:
    """Store connection, scheduler role and command queue of one app; `step` is one pass."""

    def __init__(self, ws: Workspace, config: Config | None, options: EngineOptions | None = None) -> None:
        self.ws = ws
        self.config = config
        self.options = options or EngineOptions()
        self.commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self.store: Store | None = None
        self.scheduler: SelectiveScheduler | None = None
        self._lock_file: Any = None
        self._mutex = threading.Lock()
        self._last_event: int | None = None
        self._layout = MatrixLayout()
        self._planned: dict[int, JobView] | None = None  # the plan's cells before any scheduler synced them
        self._version: tuple[int, int] = (-1, -1)  # (PRAGMA data_version, our own total_changes)
        self._cached: dict[int, JobView] = {}
        self._derived: tuple[dict[int, JobView], Counter[str], int] = ({}, Counter(), 0)  # jobs -> counts, digest
        self._seq = 0

    def submit(self, command: Command) -> None:
        self.commands.put(command)

    # -- one pass ------------------------------------------------------------------------------------
    def step(self) -> Snapshot:
        with self._mutex:
            notices: list[Notice] = []
            while not self.commands.empty():
                notices.extend(self._apply(self.commands.get()))
            if self.scheduler is not None:
                try:
                    self.scheduler.tick()
                except Exception as exc:  # a tick that fails must not stop the app; say why
                    notices.append(Notice(f"{type(exc).__name__}: {exc}", "error", "scheduler tick failed"))
            return self._read(notices)

    def close(self) -> None:
        """Give up the scheduler role (running workers carry on) and close the store."""
        with self._mutex:
            self._stop()
            if self.store is not None:
                self.store.close()
                self.store = None

    # -- reading -------------------------------------------------------------------------------------
    def _open(self, create: bool = False) -> Store | None:
        if self.store is None and (create or self.ws.db_path.exists()):
            from pipeline.store import open_store

            self.store = open_store(self.ws.db_path)
        return self.store

    def _read(self, notices: list[Notice]) -> Snapshot:
        self._seq += 1
        budget = self.config.judge.budget_usd if self.config else None
        snap = Snapshot(role=self.role(), notices=notices, seq=self._seq,
                        budget_usd=budget if budget is not None and budget != float("inf") else None)  # fmt: skip
        store = self._open()
        jobs = self._jobs(store)
        if not jobs and self.config is not None:
            jobs = self._planned_jobs()
        snap.jobs = jobs
        if not jobs:
            snap.problem = "the plan is empty: add [[models]] to steertui.toml (and check it loads)"
        if jobs is not self._derived[0]:
            shown = in_config(jobs.values(), self.config)
            if signature(shown) != self._layout.signature:
                self._layout = build_layout(shown)
            counts = Counter(jobs[jid].shown_state for line in self._layout.grid for jid in line if jid)
            self._derived = (jobs, counts, hash(tuple(jobs.values())))
        snap.layout, snap.counts = self._layout, self._derived[1]
        if store is not None:
            snap.events = self._events(store.conn)
            snap.spend_usd = read_spend(store.conn)
        snap.digest = hash((self._derived[2], snap.role, snap.spend_usd, snap.problem, self._layout.signature))
        return snap

    def _jobs(self, store: Store | None) -> dict[int, JobView]:
        """The jobs table, re-read only when someone wrote to the store since the last pass."""
        if store is None:
            return {}
        conn = store.conn
        version = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        if version != self._version:
            self._version, self._cached = version, read_jobs(conn)
        return self._cached

    def _planned_jobs(self) -> dict[int, JobView]:
        """The plan's cells as pending jobs with negative ids (the store has none yet)."""
        if self._planned is None:
            from steertui.plan import build_plan  # deferred: the plan module's artifact checks import torch

            assert self.config is not None
            cells = build_plan(self.ws, self.config, self.options.stages, gpu_machine=False).cells
            self._planned = {-(i + 1): planned_job(-(i + 1), c) for i, c in enumerate(cells)}
        return self._planned

    def _events(self, conn: Any) -> list[EventView]:
        if self._last_event is None:
            self._last_event = last_event_id(conn)
            return []
        events = read_events(conn, self._last_event)
        if events:
            self._last_event = events[-1].id
        return events

    def role(self) -> Role:
        if self.scheduler is not None:
            return Role("scheduler", os.getpid(), self.scheduler.scope)
        pid = _scheduler_pid(self.ws)
        return Role("remote", pid) if pid else Role("none")

    # -- commands ------------------------------------------------------------------------------------
    def _apply(self, cmd: Command) -> list[Notice]:
        try:
            if cmd.action == "schedule_all":
                return self._schedule_all()
            if cmd.action == "stop":
                return self._stop()
            if cmd.action == "cancel":
                return self._cancel(cmd.job_ids)
            return self._run(cmd.job_ids, retry_only=cmd.action == "retry")
        except SteerError as exc:
            return [Notice(exc.message, "error", cmd.action)]

    def _become_scheduler(self) -> bool:
        """Take the workspace's scheduler lock and build the scheduler (False: another process schedules)."""
        if self.scheduler is not None:
            return True
        if self.config is None:
            raise InputError("the workspace config did not load; fix steertui.toml and reopen")
        from steertui.scheduler import scheduler_lock  # deferred: the plan's artifact checks import torch

        try:
            self._lock_file = scheduler_lock(self.ws)
        except InputError:
            return False
        from steertui.screens.scheduling import SelectiveScheduler

        store = self._open(create=True)
        assert store is not None
        opts = self.options
        try:
            self.scheduler = SelectiveScheduler(self.ws, self.config, store, stages=opts.stages,
                                                executor=opts.executor, gpus=opts.gpus, env=opts.env)  # fmt: skip
        except BaseException:
            self._lock_file.release()
            self._lock_file = None
            raise
        self._layout = MatrixLayout()  # the scheduler has synced the plan's cells into the store
        self._planned = None
        return True

    def _schedule_all(self) -> list[Notice]:
        if not self._become_scheduler():
            return [Notice(f"another scheduler runs this workspace (pid {_scheduler_pid(self.ws)})", "warning")]
        assert self.scheduler is not None
        self.scheduler.allowed = None
        return [Notice("scheduling every cell of the plan; running workers are adopted", title="scheduler")]

    def _stop(self) -> list[Notice]:
        if self.scheduler is None:
            return []
        self.scheduler = None
        if self._lock_file is not None:
            self._lock_file.release()
            self._lock_file = None
        return [Notice("stopped scheduling; running workers carry on", title="scheduler")]

    def _rows(self, job_ids: tuple[int, ...]) -> list[dict[str, Any]]:
        """id, cell and state of each job (planned cells, with negative ids, included)."""
        planned = [self._planned[j] for j in job_ids if j < 0 and self._planned and j in self._planned]
        rows = [{"id": j.id, "cell": j.cell, "state": j.state} for j in planned]
        real = tuple(j for j in job_ids if j > 0)
        store = self._open()
        if store is not None and real:
            marks = ",".join("?" * len(real))
            rows += [dict(r) for r in store.query(f"SELECT id, cell, state FROM jobs WHERE id IN ({marks})", real)]
        return rows

    def _run(self, job_ids: tuple[int, ...], *, retry_only: bool) -> list[Notice]:
        from steertui.control import request_run

        rows = self._rows(job_ids)
        if retry_only:
            rows = [r for r in rows if r["state"] in RERUNNABLE]
            if not rows:
                return [Notice("nothing to retry: only failed, cancelled or skipped cells retry", "warning")]
        if not rows:
            return []
        store = self._open()
        ids = [r["id"] for r in rows if r["state"] in RERUNNABLE and r["id"] > 0]
        again = request_run(store, ids) if store is not None else 0
        if not self._become_scheduler():
            pid = _scheduler_pid(self.ws)
            return [Notice(f"{again} cell(s) made eligible again; the scheduler (pid {pid}) runs them", title="run")]
        assert self.scheduler is not None
        if self.scheduler.allowed is not None:
            self.scheduler.allow(r["cell"] for r in rows if r["state"] != "done")
        todo = [r for r in rows if r["state"] != "done"]
        what = todo[0]["cell"] if len(todo) == 1 else f"{len(todo)} cells"
        if not todo:
            return [Notice("already done", title="run")]
        return [Notice(f"running {what} (and the cells it needs)", title="run")]

    def _cancel(self, job_ids: tuple[int, ...]) -> list[Notice]:
        from steertui.control import request_cancel

        rows = [r for r in self._rows(job_ids) if r["state"] not in FINAL and r["id"] > 0]
        store = self._open()
        if not rows or store is None:
            return [Notice("nothing to cancel", "warning")]
        running = self.scheduler is not None or _scheduler_pid(self.ws) is not None
        n = request_cancel(store, [r["id"] for r in rows], scheduler_running=running, workspace=self.ws,
                           config=self.config)  # fmt: skip
        return [Notice(f"cancel requested for {n} cell(s)", title="cancel")]


def _scheduler_pid(ws: Workspace) -> int | None:
    """The pid of a live scheduler of this workspace other than us, from `.steertui/scheduler.pid`.

    The file outlives its writer, so a pid counts only if that process started before the file was written
    (a reused pid is younger). The lock itself is never probed: a probe could make a starting scheduler fail.
    """
    path = ws.state_dir / "scheduler.pid"
    try:
        pid = int(path.read_text().strip())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        started, dead = proc.create_time(), proc.status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped
    except psutil.Error:
        return None
    return pid if started <= written + 1.0 and not dead else None
