"""The scheduler on the test cluster with real workers (tiny-random): a plan that survives a killed manager,
a cancel from the control action, a time-limited job retried from its checkpoint, and (slow) the smoke plan's
outputs on Slurm against the local executor's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.config_load import load_config
from pipeline.store import Store, open_store
from pipeline.workspace import Workspace
from steertui.control import request_cancel
from steertui.executors import make_executor
from steertui.plan import build_plan
from steertui.scheduler import Scheduler
from tests.slurm.conftest import FakeAPI, SlurmCluster, slurm_workspace, wait_for

ALL = "train,generate,score"
STALL_HOOK = '''"""Test hook: `STEERTUI_TEST_STALL_AT=<crash point>` hangs the worker there once (a step too
slow for the job's time limit); the marker file makes the retry run through."""
import os

if os.environ.get("STEERTUI_TEST_STALL_AT"):
    import time

    import pipeline.crashpoints as points

    _crash = points.crash_point

    def crash_point(name: str) -> None:
        marker = os.environ["STEERTUI_TEST_STALL_MARKER"]
        if name == os.environ["STEERTUI_TEST_STALL_AT"] and not os.path.exists(marker):
            open(marker, "w").close()
            print(f"stalling at {name}", flush=True)
            while True:
                time.sleep(1)
        _crash(name)

    points.crash_point = crash_point
'''


def start_manager(root: Path, env: Mapping[str, str], stages: str = ALL) -> subprocess.Popen[bytes]:
    """`steertui run --headless` in its own process, output appended to manager.out."""
    with (root / "manager.out").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "steertui", "run", "--headless", "--stages", stages, "--workspace", str(root)],
            env=dict(env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
        )  # fmt: skip


def finish(proc: subprocess.Popen[bytes], root: Path, timeout: float) -> None:
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        raise AssertionError(f"manager still running after {timeout:.0f}s:\n{_out(root)}") from None
    assert code == 0, f"manager exited {code}:\n{_out(root)}"


def _out(root: Path) -> str:
    return "\n".join((root / "manager.out").read_text(errors="replace").splitlines()[-40:])


def rows(root: Path, sql: str = "SELECT * FROM jobs", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with open_store(Workspace(root).db_path) as store:
        return [dict(r) for r in store.query(sql, params)]


def slurm_jobs_of(slurm: SlurmCluster, root: Path) -> dict[str, dict[str, str]]:
    """This workspace's Slurm jobs (their scripts live under its .steertui/slurm/), by job id."""
    prefix = str(Workspace(root).state_dir / "slurm")
    return {jid: f for jid, f in slurm.jobs().items() if f.get("Command", "").startswith(prefix)}


def assert_one_slurm_job_per_attempt(slurm: SlurmCluster, root: Path) -> None:
    attempts = rows(root, "SELECT j.cell, a.attempt, a.external_id FROM job_attempts a JOIN jobs j ON j.id = a.job_id")
    ours = slurm_jobs_of(slurm, root)
    assert sorted(a["external_id"] for a in attempts) == sorted(ours), (attempts, sorted(ours))
    for a in attempts:
        assert ours[a["external_id"]]["JobName"] == f"steertui:{a['cell']}"
    for job in rows(root):
        if job["attempts"]:
            assert sum(a["cell"] == job["cell"] for a in attempts) == job["attempts"], job["cell"]


def outputs(root: Path) -> dict[str, tuple[int, list[tuple[str, ...]]]]:
    """Every artifact by relative path: JSONL files as (row count, distinct key sets), others as (size > 0, [])."""
    out: dict[str, tuple[int, list[tuple[str, ...]]]] = {}
    for base in ("vector", "vector_evals"):
        for path in sorted((root / base).rglob("*")):
            if not path.is_file():
                continue
            rel = str(path.relative_to(root))
            if path.suffix == ".jsonl":
                lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
                out[rel] = (len(lines), sorted({tuple(sorted(r)) for r in lines}))
            else:
                out[rel] = (int(path.stat().st_size > 0), [])
    return out


def test_plan_on_slurm_survives_a_killed_manager(slurm: SlurmCluster, fakeapi: FakeAPI, tmp_path: Path) -> None:
    """Train -> generate -> 3 judge tasks through sbatch; the manager is SIGKILLed while the training job is queued
    or running, and the next one adopts it: one Slurm job per cell attempt, every cell done."""
    root = slurm_workspace(tmp_path / "ws")
    env = {**os.environ, **slurm.env, **fakeapi.env}
    first = start_manager(root, env)
    try:
        train: dict[str, Any] = wait_for(
            lambda: next((r for r in rows(root) if r["kind"] == "train" and r["external_id"]), {}),
            60, "the training job to be submitted",
        )  # fmt: skip
    finally:
        first.kill()  # SIGKILL: no clean-up of any kind
        first.wait(30)
    assert train["external_id"] in slurm.live_jobs(), "the job must outlive its manager"
    second = start_manager(root, env)
    finish(second, root, timeout=420)
    launches = rows(root, "SELECT * FROM events WHERE kind = 'launch' AND job_id = ?", (train["id"],))
    assert len(launches) == 1, launches  # adopted by the second manager, not launched again
    jobs = rows(root)
    assert {r["state"] for r in jobs} == {"done"}, [(r["cell"], r["state"], r["error"]) for r in jobs]
    assert all(r["node"] == slurm.node and r["executor"] == "slurm" for r in jobs)
    assert_one_slurm_job_per_attempt(slurm, root)
    config = load_config(root)
    plan = build_plan(Workspace(root), config, ("train", "generate", "score"), gpu_machine=False)
    assert len(plan.cells) == 5 and all(plan.progress(c).complete for c in plan.cells)


def tick_until(sched: Scheduler, check: Callable[[], Any], timeout: float, what: str) -> Any:
    def step() -> Any:
        sched.tick()
        return check()

    return wait_for(step, timeout, what, interval=0.5)


def test_cancel_action_interrupts_the_slurm_job(slurm: SlurmCluster, tmp_path: Path) -> None:
    """`request_cancel` -> the scheduler's tick -> scancel --signal=INT: the worker stops cleanly (exit 130), the
    cell shows cancelled and nothing is resubmitted."""
    root = slurm_workspace(tmp_path / "ws")
    ws, config = Workspace(root), load_config(root)
    store: Store = open_store(ws.db_path)
    sched = Scheduler(ws, config, store, stages=("train",), executor=make_executor(config, ws, store))
    try:

        def train() -> dict[str, Any]:
            return dict(store.query("SELECT * FROM jobs WHERE kind = 'train'")[0])

        tick_until(sched, lambda: train()["progress_done"] is not None, 120, "the worker to report training steps")
        assert train()["node"] == slurm.node
        request_cancel(store, [train()["id"]], scheduler_running=True)
        tick_until(sched, lambda: train()["state"] == "cancelled", 60, "the cell to show cancelled")
        job = train()
        attempt = store.query("SELECT * FROM job_attempts WHERE job_id = ?", (job["id"],))
        assert len(attempt) == 1 and attempt[0]["exit_code"] == 130
        record = slurm.jobs()[job["external_id"]]
        assert record["JobState"] == "FAILED" and record["ExitCode"] == "130:0"  # SIGINT, not a kill
        assert "interrupted" in Path(job["log_path"]).read_text()
        sched.tick()
        assert train()["state"] == "cancelled" and len(slurm_jobs_of(slurm, root)) == 1
    finally:
        store.close()


@pytest.mark.slow
def test_time_limit_is_retried_and_resumes_from_the_checkpoint(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Attempt 1 finishes epoch 1, then hangs in epoch 2 until Slurm kills it at its 1-minute limit (TIMEOUT): the
    scheduler retries, and attempt 2 resumes after epoch 1 instead of starting over."""
    root = slurm_workspace(tmp_path / "ws", time_limit="0:01:00")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(STALL_HOOK)
    steps_per_epoch = 4  # smoke: 16 pairs / batch 4
    env = {**os.environ, **slurm.env, "PYTHONPATH": str(hooks),
           "STEERTUI_TEST_STALL_AT": f"train_step:{steps_per_epoch + 1}",
           "STEERTUI_TEST_STALL_MARKER": str(tmp_path / "stalled")}  # fmt: skip
    finish(start_manager(root, env, stages="train"), root, timeout=400)
    (job,) = rows(root)
    assert job["state"] == "done" and job["attempts"] == 2, job
    first, second = rows(root, "SELECT * FROM job_attempts ORDER BY attempt")
    records = slurm_jobs_of(slurm, root)
    assert records[first["external_id"]]["JobState"] == "TIMEOUT"
    assert records[second["external_id"]]["JobState"] == "COMPLETED"
    assert first["exit_code"] == 75  # EX_TEMPFAIL: the cluster ended it, retry
    log = Path(job["log_path"]).read_text()
    assert "stalling at train_step:5" in log and "DUE TO TIME LIMIT" in log
    assert re.search(r"resuming after epoch 1", log), log[-2000:]
    metrics = [json.loads(x) for x in Workspace(root).metrics_path("relationship-seeking", "tiny-random", 1)
               .read_text().splitlines()]  # fmt: skip
    assert sorted(m["epoch"] for m in metrics) == [1, 1, 2, 2]  # epoch 1 not trained or logged twice
    assert_one_slurm_job_per_attempt(slurm, root)


@pytest.mark.slow
def test_smoke_plan_on_slurm_matches_local(slurm: SlurmCluster, fakeapi: FakeAPI, tmp_path: Path) -> None:
    """The `smoke` example (2 layers x 2 epochs, every stage, judged by the fake API) through slurmctld/slurmd
    gives the same artifacts, row counts and keys as the local executor."""
    on_slurm = slurm_workspace(tmp_path / "slurm", layers=(1, 2))
    local = slurm_workspace(tmp_path / "local", layers=(1, 2))
    config = local / "steertui.toml"
    config.write_text(config.read_text().replace('executor = "slurm"', 'executor = "local"'))
    env = {**os.environ, **slurm.env, **fakeapi.env}
    started = time.monotonic()
    finish(start_manager(on_slurm, env), on_slurm, timeout=560)
    slurm_s = time.monotonic() - started
    finish(start_manager(local, env), local, timeout=560)
    local_s = time.monotonic() - started - slurm_s
    print(f"smoke plan: slurm {slurm_s:.0f}s, local {local_s:.0f}s")
    assert {r["state"] for r in rows(on_slurm)} == {"done"} == {r["state"] for r in rows(local)}
    assert len(rows(on_slurm)) == 10
    slurm_out, local_out = outputs(on_slurm), outputs(local)
    assert slurm_out == local_out
    assert any(k.endswith("generations_ep2.jsonl") for k in slurm_out)
    assert any(k.endswith("pairwise_relationship_scores_ep2.jsonl") for k in slurm_out)
    assert_one_slurm_job_per_attempt(slurm, on_slurm)
    assert not rows(local, "SELECT * FROM jobs WHERE executor = 'slurm'")
