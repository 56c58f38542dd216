"""GPU inventory (NVML) and leases: SQLite rows under BEGIN IMMEDIATE, backed by per-GPU file locks.

A lease is taken in one write transaction: a GPU qualifies when no live process holds its lease row, its
file lock can be taken, and NVML shows no foreign process on it. The lock's file descriptor is passed to
the worker, so the kernel frees the lock when the worker dies, whatever happens to the scheduler.
`STEERTUI_FAKE_GPUS=N` simulates N idle GPUs (tests, CPU machines).
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipeline.store import Store

FAKE_ENV = "STEERTUI_FAKE_GPUS"


@dataclass(frozen=True)
class GPU:
    index: int
    name: str = ""
    memory_total_mib: int = 0
    memory_used_mib: int = 0
    utilization: int = 0
    temperature: int = 0
    processes: tuple[tuple[int, int], ...] = ()  # (pid, used MiB) from NVML


def inventory() -> list[GPU]:
    """GPUs on this machine, in PCI bus order (workers get CUDA_DEVICE_ORDER=PCI_BUS_ID to match)."""
    fake = os.environ.get(FAKE_ENV)
    if fake is not None:
        return [GPU(i, name="simulated", memory_total_mib=81920) for i in range(int(fake or 0))]
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        return [_read(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def _read(pynvml: object, index: int) -> GPU:
    nv: object = pynvml
    handle = nv.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
    mem = nv.nvmlDeviceGetMemoryInfo(handle)  # type: ignore[attr-defined]
    try:
        util = nv.nvmlDeviceGetUtilizationRates(handle).gpu  # type: ignore[attr-defined]
        temp = nv.nvmlDeviceGetTemperature(handle, 0)  # type: ignore[attr-defined]
    except Exception:  # not every board reports these
        util, temp = 0, 0
    procs = nv.nvmlDeviceGetComputeRunningProcesses(handle)  # type: ignore[attr-defined]
    name = nv.nvmlDeviceGetName(handle)  # type: ignore[attr-defined]
    return GPU(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        memory_total_mib=int(mem.total) // 2**20,
        memory_used_mib=int(mem.used) // 2**20,
        utilization=int(util),
        temperature=int(temp),
        processes=tuple((int(p.pid), int(p.usedGpuMemory or 0) // 2**20) for p in procs),
    )


def alive(pid: int | None, start: float | None) -> bool:
    """True when `pid` runs and (if known) started at `start`: a reused pid is not ours."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if start is not None and abs(proc.create_time() - start) > 1.0:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _held(row: Any) -> bool:
    """A lease row is live while its worker runs, or, before launch, while the leasing scheduler runs."""
    if row["pid"]:
        return alive(row["pid"], row["pid_start"])
    return alive(int(row["holder"] or 0), None)


@dataclass
class Lease:
    gpus: list[int]
    fds: list[int] = field(default_factory=list)  # open, locked lock files: pass to the worker, then close

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class Leases:
    def __init__(self, store: Store, locks_dir: Path) -> None:
        self.store = store
        self.locks_dir = locks_dir
        locks_dir.mkdir(parents=True, exist_ok=True)

    def acquire(self, n: int, job_id: int, gpus: list[GPU] | None = None) -> Lease | None:
        """Lease `n` GPUs for `job_id`, or None (nothing taken) when that many are not free."""
        inv = inventory() if gpus is None else gpus
        with self.store.tx():
            rows = {r["gpu"]: r for r in self.store.conn.execute("SELECT * FROM gpu_leases")}
            our_pids = {r["pid"] for r in rows.values() if r["pid"]}
            lease = Lease([])
            for gpu in inv:
                if len(lease.gpus) == n:
                    break
                row = rows.get(gpu.index)
                if row is not None and _held(row):
                    continue
                if any(pid not in our_pids for pid, _ in gpu.processes):
                    continue  # a foreign process uses this GPU
                fd = self._try_lock(gpu.index)
                if fd is None:
                    continue
                lease.gpus.append(gpu.index)
                lease.fds.append(fd)
            if len(lease.gpus) < n:
                lease.close()
                return None
            now = time.time()
            self.store.conn.executemany(
                "INSERT OR REPLACE INTO gpu_leases (gpu, job_id, pid, pid_start, leased_at, holder) "
                "VALUES (?, ?, NULL, NULL, ?, ?)",
                [(g, job_id, now, str(os.getpid())) for g in lease.gpus],
            )
        return lease

    def bind(self, job_id: int, pid: int, pid_start: float) -> None:
        """Record the worker that now holds the job's GPUs."""
        with self.store.tx():
            self.store.conn.execute(
                "UPDATE gpu_leases SET pid = ?, pid_start = ? WHERE job_id = ?", (pid, pid_start, job_id)
            )

    def release(self, job_id: int) -> None:
        with self.store.tx():
            self.store.conn.execute("DELETE FROM gpu_leases WHERE job_id = ?", (job_id,))

    def free_dead(self) -> list[int]:
        """Drop leases whose worker (or, before launch, whose scheduler) is gone; returns their GPUs."""
        freed = []
        with self.store.tx():
            for row in list(self.store.conn.execute("SELECT * FROM gpu_leases")):
                if not _held(row):
                    self.store.conn.execute("DELETE FROM gpu_leases WHERE gpu = ?", (row["gpu"],))
                    freed.append(int(row["gpu"]))
        return freed

    def _try_lock(self, index: int) -> int | None:
        fd = os.open(self.locks_dir / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd
