"""One scheduler per workspace: reconcile artifacts with the store, then launch what can run.

Each `tick` (about once a second):
1. watch running jobs: an exited worker's cell is done iff its artifact is complete; otherwise it is
   retried with exponential backoff up to `scheduler.max_attempts` (never for bad input or budget), then
   shown failed with the log's last lines;
2. classify idle cells from their artifacts and inputs (pending, queued, done, skipped);
3. launch queued cells while GPUs (leased), CPU slots and judge slots allow.
A lock file makes the scheduler unique per workspace; viewers only read the store.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.store import Store
from pipeline.store.jobs import record_event
from pipeline.workspace import Workspace
from steertui.executor import Executor, LocalExecutor
from steertui.gpus import GPU, Leases, inventory
from steertui.plan import STAGES, Cell, Plan, build_plan

ACTIVE = ("running", "cancelling")
NO_RETRY_ERRORS = ("BudgetExceeded", "CredentialsError")
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass
class Event:
    kind: str  # launch | adopt | done | retry | failed | skipped | cancelled
    key: str
    message: str = ""
    at: float = field(default_factory=time.time)


@dataclass
class Tick:
    states: Counter[str]
    launched: int

    @property
    def finished(self) -> bool:
        return self.states["running"] + self.states["cancelling"] + self.states["queued"] == 0


def scheduler_lock(ws: Workspace) -> FileLock:
    """Held for the scheduler's lifetime; refuse a second one with a message naming the holder."""
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(ws.state_dir / "scheduler.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = (
            (ws.state_dir / "scheduler.pid").read_text().strip() if (ws.state_dir / "scheduler.pid").exists() else "?"
        )
        raise InputError(
            f"{ws.root}: another scheduler is running here (pid {holder}); open `steertui` as a viewer, "
            "or stop that one first"
        ) from None
    (ws.state_dir / "scheduler.pid").write_text(str(os.getpid()))
    return lock


class Scheduler:
    def __init__(
        self,
        ws: Workspace,
        config: Config,
        store: Store,
        *,
        stages: tuple[str, ...] = STAGES,
        executor: Executor | None = None,
        on_event: Callable[[Event], None] | None = None,
        env: Mapping[str, str] | None = None,
        gpus: list[GPU] | None = None,
    ) -> None:
        self.ws = ws
        self.config = config
        self.store = store
        self.env = dict(os.environ if env is None else env)
        self.gpus = inventory() if gpus is None else gpus
        self.executor: Executor = executor or LocalExecutor()
        # On a cluster the jobs' GPUs are on other nodes: plan GPU cells even on a GPU-less login node.
        gpu_machine = bool(self.gpus) or bool(getattr(self.executor, "gpu_cluster", False))
        self.plan: Plan = build_plan(ws, config, stages, gpu_machine=gpu_machine)
        self.cells: dict[str, Cell] = self.plan.by_key()
        self.leases = Leases(store, ws.locks_dir)
        self.on_event = on_event or (lambda e: None)
        self.allowed: set[str] | None = None  # cell keys that may be launched; None = every cell of the plan
        self.ids = self._sync_jobs()
        self.leases.free_dead()

    # -- store ---------------------------------------------------------------------------------------
    def _sync_jobs(self) -> dict[str, int]:
        now = time.time()
        with self.store.tx():
            self.store.conn.executemany(
                "INSERT OR IGNORE INTO jobs (cell, kind, model, layer, epoch, task, state, attempts, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?)",
                [(c.key, c.kind, c.model, c.layer, c.epoch, c.task, now) for c in self.cells.values()],
            )
        rows = self.store.query("SELECT id, cell FROM jobs")
        return {r["cell"]: int(r["id"]) for r in rows if r["cell"] in self.cells}

    def rows(self) -> dict[str, Any]:
        return {r["cell"]: r for r in self.store.query("SELECT * FROM jobs") if r["cell"] in self.cells}

    def _update(self, job_id: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.store.tx():
            self.store.conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def _emit(self, kind: str, cell: Cell, message: str = "") -> None:
        record_event(self.store, self.ids[cell.key], kind, message)
        self.on_event(Event(kind, cell.key, message))

    # -- the loop ------------------------------------------------------------------------------------
    def tick(self) -> Tick:
        self.leases.free_dead()
        rows = self.rows()
        for key, row in rows.items():
            if row["state"] in ACTIVE:
                self._watch(self.cells[key], row)
        rows = self.rows()
        for key, row in rows.items():
            if row["state"] not in ACTIVE:
                self._classify(self.cells[key], row)
        launched = self._launch_ready()
        states = Counter(r["state"] for r in self.rows().values())
        return Tick(states, launched)

    def run(self, *, once: bool = False, stop: Callable[[], bool] = lambda: False) -> int:
        """Tick until nothing more can run (0 all done/skipped, 1 failures left) or `stop()` (130)."""
        while True:
            tick = self.tick()
            if once:
                return 0
            if tick.finished:
                return 1 if tick.states["failed"] or tick.states["pending"] else 0
            if stop():
                return 130
            time.sleep(self.config.scheduler.poll_s)

    # -- running jobs --------------------------------------------------------------------------------
    def _watch(self, cell: Cell, row: Any) -> None:
        seen = self.executor.observe(row)
        if seen.state == "running":
            self._maybe_cancel(row)
            return
        row = self.store.one("SELECT * FROM jobs WHERE id = ?", (row["id"],)) or row  # observe may have noted why
        self.leases.release(row["id"])
        code = seen.exit_code if seen.exit_code is not None else row["exit_code"]
        if self.plan.progress(cell).complete:
            self._end_attempt(row, code)
            self._update(row["id"], state="done", ended_at=time.time(), exit_code=code, pid=None)
            self._emit("done", cell, f"in {_took(row)}")
            return
        error = row["error"] or f"worker {'was lost' if seen.state == 'lost' else f'exited with {code}'}"
        self._end_attempt(row, code)
        if row["cancel_requested_at"] is not None:
            self._update(row["id"], state="cancelled", ended_at=time.time(), pid=None)
            self._emit("cancelled", cell)
        else:
            self._failed(cell, row, code, error)

    def _failed(self, cell: Cell, row: Any, code: int | None, error: str) -> None:
        permanent = code == 2 or str(error).startswith(NO_RETRY_ERRORS)
        attempts = int(row["attempts"] or 0)
        tail = log_tail(row["log_path"])
        if permanent or attempts >= self.config.scheduler.max_attempts:
            self._update(row["id"], state="failed", ended_at=time.time(), pid=None, error=f"{error}\n{tail}".strip())
            self._emit("failed", cell, f"{error} (log: {row['log_path']})")
            return
        delay = self.config.scheduler.retry_backoff_s * 2 ** (attempts - 1)
        self._update(row["id"], state="queued", pid=None, next_attempt_at=time.time() + delay, error=error)
        self._emit("retry", cell, f"attempt {attempts} failed ({error}); retrying in {delay:.0f}s")

    def _end_attempt(self, row: Any, code: int | None) -> None:
        with self.store.tx():
            self.store.conn.execute(
                "UPDATE job_attempts SET ended_at = ?, exit_code = ? WHERE job_id = ? AND attempt = ?",
                (time.time(), code, row["id"], row["attempts"]),
            )

    def _maybe_cancel(self, row: Any) -> None:
        requested = row["cancel_requested_at"]
        if row["state"] == "running" and requested is not None:
            self._update(row["id"], state="cancelling")
            self.executor.cancel(row)
        elif requested is not None and time.time() - requested > self.config.scheduler.cancel_grace_s:
            self.executor.cancel(row, force=True)

    # -- idle cells ----------------------------------------------------------------------------------
    def _classify(self, cell: Cell, row: Any) -> None:
        state = row["state"]
        if self.plan.progress(cell).complete:
            if state != "done":
                self._update(row["id"], state="done", error=None)
            return
        if state in ("failed", "cancelled"):
            return
        new = "queued" if self.plan.ready(cell) else "pending"
        reason = self._skip_reason(cell) if new == "queued" else None
        if reason:
            new = "skipped"
        if new != state:
            self._update(row["id"], state=new, message=reason)
            if new == "skipped":
                self._emit("skipped", cell, reason or "")

    def _skip_reason(self, cell: Cell) -> str | None:
        """Cells that call a provider are skipped, with the reason, while its key is missing."""
        if cell.uses_model:
            return None
        if cell.kind in ("prompting-generate", "stability"):
            var = KEY_ENV.get(cell.model.partition(":")[0], "")
            if var and not self.env.get(var):
                return f"no key for {cell.model}: set {var}"
            return None
        var = KEY_ENV[self.config.judge.provider]
        if not self.env.get(var):
            return f"no judge configured: set {var} (or point judge.base_url at a compatible server)"
        return None

    # -- launching -----------------------------------------------------------------------------------
    def _launch_ready(self) -> int:
        rows = self.rows()
        busy = Counter(_slot(self.cells[k], bool(self.gpus)) for k, r in rows.items() if r["state"] in ACTIVE)
        launched = 0
        now = time.time()
        for key, cell in self.cells.items():
            row = rows[key]
            if row["state"] != "queued" or (row["next_attempt_at"] or 0) > now:
                continue
            if self.allowed is not None and key not in self.allowed:
                continue
            slot = _slot(cell, bool(self.gpus))
            limit = {"cpu": self.config.scheduler.cpu_slots, "judge": self.config.scheduler.judge_slots}.get(slot)
            # -- executor-allocated resources (Slurm): the cluster queues model jobs; judge slots still apply --
            if getattr(self.executor, "allocates_gpus", False) and slot != "judge":
                limit = None
            # -- end executor-allocated resources --
            if limit is not None and busy[slot] >= limit:
                continue
            if self._launch(cell, row):
                busy[slot] += 1
                launched += 1
        return launched

    def _launch(self, cell: Cell, row: Any) -> bool:
        job_id = int(row["id"])
        # -- executor-allocated resources (Slurm): no local GPU lease for jobs the cluster places --
        leased = _slot(cell, bool(self.gpus)) == "gpu" and not getattr(self.executor, "allocates_gpus", False)
        # -- end executor-allocated resources --
        lease = self.leases.acquire(cell.gpus, job_id, self.gpus) if leased else None
        if leased and lease is None:
            return False
        gpus = lease.gpus if lease else []
        env = {**self.env, "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PYTHONUNBUFFERED": "1",
               "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}  # fmt: skip
        log = self.ws.logs_dir / f"{cell.key.replace(':', '_')}.log"
        attempt = int(row["attempts"] or 0) + 1
        with log.open("a") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {attempt}: {cell.key} gpus={gpus} ===\n")
        try:
            started = self.executor.launch(
                job_id, cell.argv(self.ws, job_id), env, log, self.ws.root, lease.fds if lease else []
            )
        finally:
            if lease is not None:
                lease.close()
        if lease is not None and started.pid:
            self.leases.bind(job_id, started.pid, started.pid_start or 0.0)
        now = time.time()
        self._update(job_id, state="running", attempts=attempt, pid=started.pid, pid_start=started.pid_start,
                     started_at=now, heartbeat_at=now, log_path=str(log), gpus=json.dumps(gpus), exit_code=None,
                     executor=self.executor.name, external_id=started.external_id, node=started.node,
                     progress_done=None, progress_total=None, ended_at=None, cancel_requested_at=None)  # fmt: skip
        with self.store.tx():
            self.store.conn.execute(
                "INSERT OR REPLACE INTO job_attempts (job_id, attempt, pid, external_id, started_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (job_id, attempt, started.pid, started.external_id, now),
            )
        where = f"GPU {','.join(map(str, gpus))}" if gpus else ("judge" if not cell.uses_model else "cpu")
        # -- executor-allocated resources (Slurm): name the cluster's job id rather than a local pid --
        ext = started.external_id
        where = f"{self.executor.name} job {ext}" if ext else f"{where}, pid {started.pid}"
        # -- end executor-allocated resources --
        self._emit("launch", cell, f"attempt {attempt} on {where}")
        return True


def _slot(cell: Cell, gpu_machine: bool) -> str:
    if not cell.uses_model:
        return "judge"
    return "gpu" if gpu_machine and cell.gpus > 0 else "cpu"


def _took(row: Any) -> str:
    from pipeline.progress import format_duration

    return format_duration(time.time() - (row["started_at"] or time.time()))


def log_tail(path: str | None, lines: int = 12) -> str:
    """The last lines of a worker log (read from the end, so large logs cost nothing)."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 8192))
        data = fh.read().decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])
