"""Run the plan's jobs on a Slurm cluster: `sbatch` to submit, `squeue`/`scontrol` (then `sacct`, the
jobcomp file, and the worker's own record in the store) to watch, `scancel` to stop.

Everything is read from the job's row (`external_id` = the Slurm job id), so a restarted manager adopts
pending and running Slurm jobs instead of submitting them again; in-memory state here is only a cache.
Before submitting, `launch` also looks for a live job of the same cell and attempt script (a manager killed
between `sbatch` and its own row update), so a cell is never submitted twice.

Ends the cluster chose (time limit, preemption, node failure, out of memory) are reported as exit code 75
(EX_TEMPFAIL): a retryable failure, and the retry resumes from the stage's checkpoint. Jobs are submitted
with `--no-requeue`, so every attempt is one Slurm job id recorded in `job_attempts`. A job cancelled with
a bare `scancel` outside steertui is treated as a cancel request (the cell shows cancelled, not retried).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.store import Store, open_store
from pipeline.workspace import Workspace
from steertui.executor import Launched, LocalExecutor, Observed
from steertui.slurm_script import job_name, render

# Slurm job states (squeue %T / scontrol JobState), by what they mean for steertui.
LIVE = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "POWER_UP_NODE", "SPECIAL_EXIT",
})  # fmt: skip
RETRYABLE = frozenset({"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"})
TEMPFAIL = 75  # EX_TEMPFAIL: the cluster ended the job; retry (the stage resumes from its checkpoint)
REJECTED = 2  # sbatch refused the job's settings: a config problem, not retried (the CLI's "bad input")
SBATCH_REJECTED = "sbatch rejected the job"  # error prefix of a permanent submission failure
SBATCH_FAILED = "sbatch failed"  # error prefix of a transient one (controller unreachable, limits, timeout)
PERMANENT_HINTS = ("invalid", "not available", "unrecognized", "not allowed")  # the job as written cannot run
CALL_TIMEOUT_S = 60.0
SQUEUE_FORMAT = "%i|%j|%T|%r|%N|%l|%o"  # command (the script path) last: it may contain "|"
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says about one job."""

    id: str
    name: str
    state: str
    reason: str = ""
    node: str = ""
    time_limit: str = ""
    command: str = ""
    exit_code: int | None = None  # known once scontrol/sacct/jobcomp report the end

    @property
    def live(self) -> bool:
        return self.state in LIVE


class Unreachable(Exception):
    """Slurm did not answer (controller down, command failed): the job's state is unknown, not ended."""


def parse_exit(text: str) -> int | None:
    """Slurm's "status:signal" ("3:0", "0:15") as one exit code (128 + signal when killed by one)."""
    status, _, signal = text.strip().partition(":")
    try:
        code, sig = int(status or 0), int(signal or 0)
    except ValueError:
        return None
    return 128 + sig if sig else code


def parse_fields(line: str) -> dict[str, str]:
    """`Key=Value Key2=Value two ...` (scontrol -o, jobcomp/filetxt) -> dict; values may hold spaces."""
    marks = list(_KEY.finditer(line))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        out[m.group(1)] = line[m.end() : end].strip()
    return out


def job_from_fields(fields: Mapping[str, str]) -> SlurmJob:
    node = fields.get("BatchHost") or fields.get("NodeList", "")
    return SlurmJob(
        id=fields.get("JobId", ""),
        name=fields.get("JobName") or fields.get("Name", ""),
        state=fields.get("JobState", "").split()[0] if fields.get("JobState") else "",
        reason=fields.get("Reason", ""),
        node="" if node in ("(null)", "None assigned") else node,
        time_limit=fields.get("TimeLimit", ""),
        command=fields.get("Command", ""),
        exit_code=parse_exit(fields["ExitCode"]) if "ExitCode" in fields else None,
    )


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|", 6)
        if len(parts) < 7:
            continue
        jid, name, state, reason, node, limit, command = (p.strip() for p in parts)
        jobs[jid] = SlurmJob(jid, name, state.split()[0] if state else "", reason, node, limit, command)
    return jobs


def state_message(job: SlurmJob) -> str:
    """The line the TUI and `steertui status` show for a job, e.g. "slurm PENDING (Resources)"."""
    if job.state == "PENDING":
        return f"slurm PENDING ({job.reason})" if job.reason and job.reason != "None" else "slurm PENDING"
    where = f" on {job.node}" if job.node else ""
    limit = f" (time limit {job.time_limit})" if job.state == "TIMEOUT" and job.time_limit else ""
    return f"slurm {job.state}{where}{limit}"


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
         timeout: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """A Slurm command as an argument list; a missing binary or a hang reads as "Slurm did not answer"."""
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, env=None if env is None else dict(env), cwd=cwd,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unreachable(f"{argv[0]}: {exc}") from None


def _not_found(proc: subprocess.CompletedProcess[str]) -> bool:
    return "invalid job id" in (proc.stderr + proc.stdout).lower()


class SlurmExecutor:
    """`sbatch`/`squeue`/`scontrol`/`scancel` behind the scheduler's `Executor` interface."""

    name = "slurm"
    allocates_gpus = True  # the cluster allocates GPUs and queues jobs: no local leases or slot limits

    def __init__(self, ws: Workspace, config: Config, store: Store | None = None) -> None:
        self.ws = ws
        self.config = config
        self.slurm = config.slurm
        self._store = store
        self._own_store = store is None
        self._snap: dict[str, SlurmJob] = {}
        self._snap_ids: frozenset[str] = frozenset()
        self._snap_at = 0.0
        self._gpus: dict[str, int] | None = None
        self._sacct: bool | None = None  # None = not tried yet; False = no accounting storage
        self._jobcomp: Path | bool | None = False  # False = not looked up yet

    @property
    def gpu_cluster(self) -> bool:
        """Whether jobs ask Slurm for GPUs (`slurm.gres` set): the plan should then count GPUs per cell as on a
        GPU machine, even though the manager's own node (a login node) has none."""
        return bool(self.slurm.gres)

    # -- store -----------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.ws.db_path)
        return self._store

    def close(self) -> None:
        if self._own_store and self._store is not None:
            self._store.close()
            self._store = None

    def _set(self, job_id: int, external_id: str | None, **fields: Any) -> None:
        """Update the job's row, only while it still belongs to this Slurm job (never a later attempt's)."""
        cols = ", ".join(f"{k} = ?" for k in fields)
        guard, params = ("", ()) if external_id is None else (" AND COALESCE(external_id, '') = ?", (external_id,))
        with self.store.tx():
            self.store.conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?{guard}", (*fields.values(), job_id, *params))

    # -- submission ------------------------------------------------------------------------------
    def gpus_for(self, cell: str) -> int:
        """GPUs the cell asks Slurm for: the plan's count, as on a GPU machine when `slurm.gres` is set."""
        if self._gpus is None:
            from steertui.plan import STAGES, build_plan

            plan = build_plan(self.ws, self.config, STAGES, gpu_machine=self.gpu_cluster)
            self._gpus = {c.key: c.gpus for c in plan.cells}
        return self._gpus.get(cell, 0)

    def script_prefix(self, job_id: int) -> str:
        return str(self.ws.state_dir / "slurm" / f"job{job_id}-")

    def launch(
        self, job_id: int, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path, pass_fds: Sequence[int]
    ) -> Launched:
        """Submit one attempt (or adopt the live job a killed manager submitted); never raises for Slurm errors:
        a failed submission is recorded in the row and reported by the next `observe`."""
        row = self.store.one("SELECT cell FROM jobs WHERE id = ?", (job_id,))
        cell = str(row["cell"]) if row is not None else f"job{job_id}"
        try:
            live = self.live_submission(job_id, cell)
        except Unreachable as exc:
            return self._submit_failed(job_id, f"{SBATCH_FAILED}: slurm did not answer ({exc})")
        if live is not None:
            self._set(job_id, None, message=f"adopted {state_message(live)} (job {live.id})", error=None)
            return Launched(None, None, live.id, live.node)
        text = render(argv, job_id=job_id, cell=cell, log=log, cwd=cwd, gpus=self.gpus_for(cell), slurm=self.slurm)
        script = Path(f"{self.script_prefix(job_id)}{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9}.sh")
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        # Slurm sets CUDA_VISIBLE_DEVICES for the GPUs it allocates; the manager's (local) view must not leak in.
        job_env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
        try:
            proc = _run(["sbatch", "--parsable", "--export=ALL", str(script)], env=job_env, cwd=cwd, timeout=120)
        except Unreachable as exc:
            return self._submit_failed(job_id, f"{SBATCH_FAILED}: {exc}")
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[:500] or f"exit {proc.returncode}"
            permanent = any(h in detail.lower() for h in PERMANENT_HINTS)
            return self._submit_failed(job_id, f"{SBATCH_REJECTED if permanent else SBATCH_FAILED}: {detail}")
        external_id = proc.stdout.strip().splitlines()[-1].split(";")[0].strip()
        self._set(job_id, None, message=f"slurm submitted job {external_id}")
        self._snap_at = 0.0  # the next observe asks Slurm afresh
        return Launched(None, None, external_id, "")

    def _submit_failed(self, job_id: int, error: str) -> Launched:
        self._set(job_id, None, error=error, message=error[:200])
        return Launched(None, None, "", "")

    def live_submission(self, job_id: int, cell: str) -> SlurmJob | None:
        """A pending/running job of this cell submitted from this workspace for this job row, if any."""
        name = job_name(cell)
        by_name = ["--name", name] if "," not in name else []  # --name takes a comma-separated list
        proc = _run(["squeue", "-h", "--me", *by_name, "-o", SQUEUE_FORMAT])
        if proc.returncode != 0:
            raise Unreachable(" ".join(proc.stderr.split())[:300])
        prefix = self.script_prefix(job_id)
        jobs = parse_squeue(proc.stdout).values()
        found = [j for j in jobs if j.live and j.name == name and j.command.startswith(prefix)]
        return max(found, key=lambda j: int(j.id.split("_")[0])) if found else None

    # -- observation -----------------------------------------------------------------------------
    def observe(self, job: Mapping[str, Any]) -> Observed:
        """Running while Slurm lists the job as live (pending counts); else how it ended. Unknown -> running."""
        external_id = str(job["external_id"] or "")
        if not external_id:
            if job["pid"]:  # started by the local executor before the switch to Slurm
                return LocalExecutor().observe(job)
            return self._submission_outcome(job)
        try:
            found = self.lookup(external_id, job)
        except Unreachable as exc:
            self._note_message(job, external_id, f"slurm: no answer from the controller ({exc})"[:200])
            return Observed("running")  # never resubmit on a guess
        if found is None:
            recorded = job["exit_code"]
            if recorded is not None:
                return Observed("exited", int(recorded))
            return Observed("lost")
        self._note(job, found)
        if found.live:
            return Observed("running")
        if found.state in RETRYABLE:
            # The cluster's reason beats the worker's "interrupted" (a scheduler that re-reads the row shows it).
            self._set(
                int(job["id"]), external_id, error=f"{state_message(found)}; the retry resumes from its checkpoint"
            )
            return Observed("exited", TEMPFAIL)
        if found.state == "CANCELLED" and job["cancel_requested_at"] is None:
            # Someone ran `scancel` by hand: record it as a cancel request; the next tick shows it cancelled.
            self._set(int(job["id"]), external_id, cancel_requested_at=time.time())
            return Observed("running")
        code = found.exit_code if found.exit_code is not None else job["exit_code"]
        return Observed("exited", None if code is None else int(code))

    def _submission_outcome(self, job: Mapping[str, Any]) -> Observed:
        error = str(job["error"] or "")
        if error.startswith(SBATCH_REJECTED):
            return Observed("exited", REJECTED)
        if error.startswith(SBATCH_FAILED):
            return Observed("exited", TEMPFAIL)
        return Observed("lost")

    def lookup(self, external_id: str, job: Mapping[str, Any]) -> SlurmJob | None:
        """Slurm's record of the job: the controller (squeue, batched), else accounting/jobcomp; None if none.

        A record whose name is not this cell's is not ours (job ids restart when a cluster is rebuilt)."""
        found = self._controller(external_id)
        if found is None:
            found = self.forgotten(external_id)
        if found is None or found.name != job_name(str(job["cell"])):
            return None
        return found

    def _controller(self, external_id: str) -> SlurmJob | None:
        now = time.monotonic()
        if external_id not in self._snap_ids or now - self._snap_at > self.slurm.poll_s:
            self._refresh({*self._active_ids(), external_id})
        seen = self._snap.get(external_id)
        if seen is None or seen.live:
            return seen
        return self._scontrol(external_id) or seen  # ended: scontrol has the exit code

    def _active_ids(self) -> set[str]:
        rows = self.store.query(
            "SELECT external_id FROM jobs WHERE executor = 'slurm' AND state IN ('running', 'cancelling') "
            "AND COALESCE(external_id, '') != ''"
        )
        return {str(r["external_id"]) for r in rows}

    def _refresh(self, ids: set[str]) -> None:
        """One `squeue` for every Slurm job the scheduler watches (a cache for at most `slurm.poll_s`)."""
        proc = _run(["squeue", "-h", "-t", "all", "-j", ",".join(sorted(ids)), "-o", SQUEUE_FORMAT])
        if proc.returncode != 0 and not _not_found(proc):
            raise Unreachable(" ".join(proc.stderr.split())[:300])
        self._snap = parse_squeue(proc.stdout) if proc.returncode == 0 else {}
        self._snap_ids = frozenset(ids)
        self._snap_at = time.monotonic()

    def _scontrol(self, external_id: str) -> SlurmJob | None:
        proc = _run(["scontrol", "show", "job", "-o", external_id])
        if proc.returncode != 0:
            if _not_found(proc):
                return None
            raise Unreachable(" ".join(proc.stderr.split())[:300])
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("JobId=")), "")
        return job_from_fields(parse_fields(line)) if line else None

    def forgotten(self, external_id: str) -> SlurmJob | None:
        """A job the controller forgot (after `MinJobAge`): accounting if there is any, else the jobcomp file."""
        return self._sacct_job(external_id) or self._jobcomp_job(external_id)

    def _sacct_job(self, external_id: str) -> SlurmJob | None:
        if self._sacct is False:
            return None
        fmt = "JobID,JobName%200,State,ExitCode,NodeList,Timelimit"
        try:
            proc = _run(["sacct", "-n", "-P", "-X", "-j", external_id, "-o", fmt])
        except Unreachable:
            return None
        if proc.returncode != 0 or "disabled" in (proc.stdout + proc.stderr).lower():
            if "disabled" in (proc.stdout + proc.stderr).lower():
                self._sacct = False  # no accounting database on this cluster: skip sacct from now on
            return None
        self._sacct = True
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 6 and parts[0] == external_id:
                return SlurmJob(parts[0], parts[1], parts[2].split()[0], node=parts[4], time_limit=parts[5],
                                exit_code=parse_exit(parts[3]))  # fmt: skip
        return None

    def jobcomp_path(self) -> Path | None:
        """`JobCompLoc` when the cluster logs finished jobs with jobcomp/filetxt (read once)."""
        if self._jobcomp is False:
            try:
                proc = _run(["scontrol", "show", "config"])
            except Unreachable:
                return None
            conf = {}
            for line in proc.stdout.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    conf[key.strip()] = value.strip()
            loc = conf.get("JobCompLoc", "")
            self._jobcomp = Path(loc) if conf.get("JobCompType") == "jobcomp/filetxt" and loc else None
        return self._jobcomp if isinstance(self._jobcomp, Path) else None

    def _jobcomp_job(self, external_id: str) -> SlurmJob | None:
        path = self.jobcomp_path()
        if path is None:
            return None
        needle = f"JobId={external_id} ".encode()
        last = None
        try:
            with path.open("rb") as fh:
                for raw in fh:
                    if raw.startswith(needle):
                        last = raw
        except OSError:
            return None
        return job_from_fields(parse_fields(last.decode("utf-8", "replace").strip())) if last else None

    def _note(self, job: Mapping[str, Any], found: SlurmJob) -> None:
        """Keep the row's `node` and Slurm line current, without overwriting what the worker reports."""
        message = state_message(found)
        current = str(job["message"] or "")
        ours = not current or current.startswith(("slurm ", "adopted slurm "))
        fields: dict[str, Any] = {}
        if found.node and found.node != job["node"]:
            fields["node"] = found.node
        if found.state != "COMPLETED" and message != current and (ours or not found.live):
            fields["message"] = message
        if fields:
            self._set(int(job["id"]), str(job["external_id"]), **fields)

    def _note_message(self, job: Mapping[str, Any], external_id: str, message: str) -> None:
        if job["message"] != message:
            self._set(int(job["id"]), external_id, message=message)

    # -- cancel ----------------------------------------------------------------------------------
    def cancel(self, job: Mapping[str, Any], *, force: bool = False) -> None:
        """SIGINT to every process of the job (the worker saves and exits 130); a plain `scancel` when
        `force` or while the job is still pending (nothing runs yet)."""
        external_id = str(job["external_id"] or "")
        if not external_id:
            if job["pid"]:
                LocalExecutor().cancel(job, force=force)
            return
        try:
            found = self.lookup(external_id, job)
            if found is None or not found.live:
                return  # ended, or the id is no longer ours: never scancel someone else's job
            if force or found.state != "RUNNING":
                _run(["scancel", external_id])
            else:
                _run(["scancel", "--signal=INT", "--full", external_id])
        except Unreachable:
            return  # the scheduler asks again on its next tick
        self._snap_at = 0.0
