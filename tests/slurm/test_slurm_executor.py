"""`SlurmExecutor` against the real test cluster, with small Python jobs: submission, exit codes, state and
node in the job row, jobs Slurm no longer knows, rejected submissions, re-adoption, and cancel (SIGINT, then
a plain scancel)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config_load import load_config
from pipeline.store import Store, open_store
from pipeline.workspace import Workspace
from steertui.executor import Observed
from steertui.executor_slurm import REJECTED, SlurmExecutor
from tests.slurm.conftest import SlurmCluster, slurm_workspace, wait_for

SIGINT_THEN_HANG = """
import signal, sys, time
def on_int(*_):
    print("got SIGINT", flush=True)
signal.signal(signal.SIGINT, on_int)
print("ready", flush=True)
while True:
    time.sleep(0.2)
"""


class Jobs:
    """A workspace's store and a Slurm executor, with job rows kept the way the scheduler keeps them."""

    def __init__(self, root: Path, **slurm: Any) -> None:
        slurm_workspace(root, **slurm)
        self.ws = Workspace(root)
        self.store: Store = open_store(self.ws.db_path)
        self.ex = SlurmExecutor(self.ws, load_config(root), self.store)
        self.n = 0

    def start(self, code: str, cell: str = "") -> int:
        self.n += 1
        cell = cell or f"train:tiny-random:L{self.n}"
        with self.store.tx():
            cur = self.store.conn.execute(
                "INSERT INTO jobs (cell, kind, model, layer, state, attempts, created_at) "
                "VALUES (?, 'train', 'tiny-random', ?, 'queued', 0, ?)",
                (cell, self.n, time.time()),
            )
        job_id = int(cur.lastrowid or 0)
        self.launch(job_id, code)
        return job_id

    def launch(self, job_id: int, code: str) -> str:
        log = self.ws.logs_dir / f"job {job_id}.log"  # a blank in the path: sbatch must get it in one piece
        log.parent.mkdir(parents=True, exist_ok=True)
        started = self.ex.launch(job_id, [sys.executable, "-c", code], dict(os.environ), log, self.ws.root, [])
        with self.store.tx():
            self.store.conn.execute(
                "UPDATE jobs SET state = 'running', executor = 'slurm', external_id = ?, node = ?, log_path = ?, "
                "exit_code = NULL, attempts = attempts + 1 WHERE id = ?",
                (started.external_id, started.node, str(log), job_id),
            )
        return started.external_id

    def row(self, job_id: int) -> dict[str, Any]:
        row = self.store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        return dict(row)

    def ended(self, job_id: int, timeout: float = 60) -> Observed:
        def check() -> Observed | None:
            seen = self.ex.observe(self.row(job_id))
            return seen if seen.state != "running" else None

        seen = wait_for(check, timeout, f"job {job_id} to end")
        assert seen is not None
        return seen


@pytest.fixture
def jobs(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Jobs]:
    j = Jobs(tmp_path / "ws")
    yield j
    j.store.close()


def test_exit_codes_node_and_log(jobs: Jobs, slurm: SlurmCluster) -> None:
    ok = jobs.start("print('hello from slurm')")
    bad = jobs.start("import sys; sys.exit(3)")
    assert jobs.ended(ok) == Observed("exited", 0)
    assert jobs.ended(bad) == Observed("exited", 3)
    row = jobs.row(ok)
    assert row["node"] == slurm.node
    log = Path(row["log_path"]).read_text()
    assert "hello from slurm" in log and f"=== slurm job {row['external_id']} on " in log
    assert jobs.row(bad)["message"] == f"slurm FAILED on {slurm.node}"
    record = slurm.jobs()[row["external_id"]]
    assert record["JobName"] == "steertui:train:tiny-random:L1" and record["Partition"] == slurm.partition
    script = Path(record["Command"])
    assert script.parent == jobs.ws.state_dir / "slurm" and "#SBATCH --cpus-per-task=1" in script.read_text()


def test_pending_job_shows_its_reason_and_a_plain_scancel_removes_it(jobs: Jobs, slurm: SlurmCluster) -> None:
    job = jobs.start("print('never')")
    ext = jobs.row(job)["external_id"]
    slurm.run("scontrol", "hold", ext, check=True)
    wait_for(lambda: jobs.ex.observe(jobs.row(job)).state == "running" and "PENDING" in jobs.row(job)["message"],
             20, "the held job to show as pending")  # fmt: skip
    assert jobs.row(job)["message"].startswith("slurm PENDING (")
    with jobs.store.tx():
        jobs.store.conn.execute("UPDATE jobs SET cancel_requested_at = ? WHERE id = ?", (time.time(), job))
    jobs.ex.cancel(jobs.row(job))
    assert jobs.ended(job).state == "exited"
    assert slurm.jobs()[ext]["JobState"] == "CANCELLED"


def test_cancel_sends_sigint_first_then_scancel_when_forced(jobs: Jobs, slurm: SlurmCluster) -> None:
    job = jobs.start(SIGINT_THEN_HANG)
    log = Path(jobs.row(job)["log_path"])
    wait_for(lambda: log.exists() and "ready" in log.read_text(), 60, "the job to run")
    jobs.ex.cancel(jobs.row(job))
    wait_for(lambda: "got SIGINT" in log.read_text(), 30, "SIGINT to reach the worker")
    assert jobs.ex.observe(jobs.row(job)).state == "running"  # it chose to keep going
    jobs.ex.cancel(jobs.row(job), force=True)
    seen = jobs.ended(job)
    assert seen.state == "exited"
    assert slurm.jobs()[jobs.row(job)["external_id"]]["JobState"] == "CANCELLED"


def test_a_bare_scancel_counts_as_a_cancel_request(jobs: Jobs, slurm: SlurmCluster) -> None:
    job = jobs.start("import time; time.sleep(300)")
    slurm.run("scancel", jobs.row(job)["external_id"], check=True)
    seen = jobs.ended(job)
    assert seen.state == "exited" and jobs.row(job)["cancel_requested_at"] is not None


def test_relaunch_adopts_the_live_job_instead_of_submitting_again(jobs: Jobs, slurm: SlurmCluster) -> None:
    """A manager killed between sbatch and its row update launches again: it must find the job, not submit twice."""
    job = jobs.start("import time; time.sleep(300)")
    first = jobs.row(job)["external_id"]
    assert jobs.launch(job, "import time; time.sleep(300)") == first
    ours = str(jobs.ws.state_dir)
    named = [j for j, f in slurm.jobs().items() if f["JobName"] == "steertui:train:tiny-random:L1"
             and f["Command"].startswith(ours)]  # fmt: skip
    assert named == [first]
    assert jobs.row(job)["message"].startswith("adopted slurm ")
    jobs.ex.cancel(jobs.row(job), force=True)
    jobs.ended(job)


def test_rejected_submission_is_a_permanent_failure(slurm: SlurmCluster, tmp_path: Path) -> None:
    bad = Jobs(tmp_path / "ws", extra=["--partition=nosuchpartition"])
    job = bad.start("print('never')")
    row = bad.row(job)
    assert row["external_id"] == ""
    assert bad.ex.observe(row) == Observed("exited", REJECTED)
    assert row["error"].startswith("sbatch rejected the job") and "partition" in row["error"].lower()
    bad.store.close()


def test_jobs_slurm_forgot_end_as_recorded(jobs: Jobs, slurm: SlurmCluster) -> None:
    """Not in the controller: the jobcomp file, else the worker's own record in the store, else lost."""
    job = jobs.start("import sys; sys.exit(4)")
    assert jobs.ended(job) == Observed("exited", 4)
    record = jobs.ex.forgotten(jobs.row(job)["external_id"])  # what is left once MinJobAge purges it
    assert record is not None and (record.state, record.exit_code) == ("FAILED", 4)
    with jobs.store.tx():
        jobs.store.conn.execute("UPDATE jobs SET external_id = '999999', exit_code = 0 WHERE id = ?", (job,))
    assert jobs.ex.observe(jobs.row(job)) == Observed("exited", 0)
    with jobs.store.tx():
        jobs.store.conn.execute("UPDATE jobs SET exit_code = NULL WHERE id = ?", (job,))
    assert jobs.ex.observe(jobs.row(job)) == Observed("lost")
