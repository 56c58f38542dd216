"""Where jobs run. The scheduler's logic (plan, dependencies, retries, ledger) stays the same; an
executor only starts, watches and stops worker commands.

`LocalExecutor`: subprocesses in their own sessions (so a Ctrl-C or a closed SSH session does not reach
them), one log file each, argument lists only. Workers outlive the manager; a later manager adopts the
live ones by pid and start time.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import psutil

from steertui.gpus import alive

State = Literal["running", "exited", "lost"]


@dataclass(frozen=True)
class Launched:
    pid: int | None
    pid_start: float | None
    external_id: str = ""  # e.g. a Slurm job id
    node: str = ""


@dataclass(frozen=True)
class Observed:
    state: State
    exit_code: int | None = None  # known for our own children and for workers that recorded it


class Executor(Protocol):
    name: str

    def launch(
        self, job_id: int, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path, pass_fds: Sequence[int]
    ) -> Launched: ...

    def observe(self, job: Mapping[str, Any]) -> Observed: ...

    def cancel(self, job: Mapping[str, Any], *, force: bool = False) -> None: ...


class LocalExecutor:
    name = "local"

    def __init__(self) -> None:
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def launch(
        self, job_id: int, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path, pass_fds: Sequence[int]
    ) -> Launched:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
                cwd=cwd, start_new_session=True, pass_fds=tuple(pass_fds),
            )  # fmt: skip
        self.children[job_id] = proc
        try:
            start = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            start = None
        return Launched(proc.pid, start)

    def observe(self, job: Mapping[str, Any]) -> Observed:
        proc = self.children.get(int(job["id"]))
        if proc is not None:
            code = proc.poll()
            if code is None:
                return Observed("running")
            del self.children[int(job["id"])]
            return Observed("exited", code if code >= 0 else 128 - code)
        if alive(job["pid"], job["pid_start"]):
            return Observed("running")
        recorded = job["exit_code"]
        return Observed("exited", int(recorded)) if recorded is not None else Observed("lost")

    def cancel(self, job: Mapping[str, Any], *, force: bool = False) -> None:
        """SIGINT to the worker's process group (it saves and exits); SIGKILL when `force`.

        Only a process whose start time matches is signalled, never a stranger that reused the pid."""
        if job["pid_start"] is None or not alive(job["pid"], job["pid_start"]):
            return
        try:
            os.killpg(os.getpgid(int(job["pid"])), signal.SIGKILL if force else signal.SIGINT)
        except ProcessLookupError:
            return
