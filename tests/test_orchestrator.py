"""The orchestrator with real subprocesses, real signals and a real SQLite store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config_load import load_config
from pipeline.store import open_store
from pipeline.workspace import Workspace
from steertui.gpus import GPU, Leases
from steertui.plan import build_plan
from tests.conftest import FAST_PLAN_ENV, REPO, run_cli

FAST = FAST_PLAN_ENV


def wait_for(cond: Callable[[], bool], timeout: float = 300.0, what: str = "condition") -> None:
    """Poll a condition (store/file state), failing after `timeout`; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def jobs(ws: Path) -> list[sqlite3.Row]:
    path = ws / ".steertui/state.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM jobs"))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def start_run(ws: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "steertui", "run", "--headless", "--workspace", str(ws), *extra],
        env={**os.environ, **FAST, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_plan_cells_and_dependencies(workspace: Path) -> None:
    config = load_config(workspace)
    plan = build_plan(Workspace(workspace), config)
    keys = [c.key for c in plan.cells]
    assert keys[:5] == [
        "train:tiny-random:L1",
        "generate:tiny-random:L1:E2",
        "score:tiny-random:L1:E2:coherence",
        "score:tiny-random:L1:E2:relationship",
        "score:tiny-random:L1:E2:pairwise",
    ]
    assert len(keys) == 10
    gen = plan.cells[1]
    assert not plan.ready(gen)  # its vector does not exist yet
    assert plan.cells[0].argv(Workspace(workspace), 7)[1:4] == ["-m", "pipeline.train", "--workspace"]


def _lease_worker(db: str, locks: str, occupancy: str, rounds: int, seed: int) -> None:
    """Lease one of 4 simulated GPUs `rounds` times; an exclusive-create marker proves sole use."""
    import random

    from pipeline.store import open_store as _open

    rng = random.Random(seed)
    gpus = [GPU(i) for i in range(4)]
    store = _open(Path(db))
    leases = Leases(store, Path(locks))
    done = 0
    while done < rounds:
        rng.shuffle(gpus)
        lease = leases.acquire(1, job_id=seed * 100_000 + done, gpus=gpus)
        if lease is None:
            continue
        marker = Path(occupancy) / f"gpu{lease.gpus[0]}"
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # raises if another holder exists
        os.close(fd)
        marker.unlink()
        leases.release(seed * 100_000 + done)
        lease.close()
        done += 1


def test_eight_processes_leasing_four_gpus_never_double_lease(tmp_path: Path) -> None:
    open_store(tmp_path / "state.db").close()
    (tmp_path / "occ").mkdir()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests.test_orchestrator import _lease_worker; "
        "_lease_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))"
    )
    args = [str(REPO), str(tmp_path / "state.db"), str(tmp_path / "locks"), str(tmp_path / "occ"), "125"]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *args, str(seed)], stderr=subprocess.PIPE, text=True)
        for seed in range(1, 9)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    with open_store(tmp_path / "state.db") as store:
        assert store.one("SELECT count(*) FROM gpu_leases")[0] == 0


def test_dead_holders_leases_are_freed(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        leases = Leases(store, tmp_path / "locks")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        lease = leases.acquire(2, job_id=1, gpus=[GPU(0), GPU(1)])
        assert lease is not None
        leases.bind(1, dead.pid, 0.0)
        lease.close()
        assert leases.acquire(1, job_id=2, gpus=[GPU(0), GPU(1)]) is not None  # dead worker: freed
        busy = GPU(3, processes=((999_999, 500),))
        assert leases.acquire(1, job_id=3, gpus=[busy]) is None  # a foreign process uses it


def test_bad_data_refuses_to_start_and_launches_nothing(workspace: Path) -> None:
    test_file = workspace / "data/relationship-seeking/test.jsonl"
    test_file.write_text(test_file.read_text() + '{"prompt_id": 1, "prompt_arr": [\n')
    code, out, err = run_cli("run", "--headless", "--workspace", str(workspace))
    assert code == 2
    assert f"{test_file}:70: invalid JSON" in err
    assert not jobs(workspace) and not list((workspace / "logs").glob("*.log"))


def test_missing_rubric_section_refuses_to_start(workspace: Path) -> None:
    rubric = workspace / "rubrics/relationship-seeking.toml"
    text = rubric.read_text()
    rubric.write_text(text[: text.index("[pairwise]")])
    code, _, err = run_cli("run", "--headless", "--workspace", str(workspace))
    assert code == 2 and "pairwise: missing section" in err
    assert not jobs(workspace)


def test_one_scheduler_per_workspace_and_workers_are_adopted(workspace: Path) -> None:
    first = start_run(workspace, {})
    wait_for(lambda: any(r["state"] == "running" for r in jobs(workspace)), what="a running job")
    code, _, err = run_cli("run", "--headless", "--workspace", str(workspace), env=FAST)
    assert code == 2 and "another scheduler is running here" in err
    first.send_signal(signal.SIGKILL)
    first.wait()
    running = [r for r in jobs(workspace) if r["state"] == "running"]
    assert running and os.path.exists(f"/proc/{running[0]['pid']}")  # the worker outlived the manager
    second = start_run(workspace, {}, "--stages", "train,generate")
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    assert f"adopting {running[0]['cell']}" in out
    conn = sqlite3.connect(workspace / ".steertui/state.db")
    attempts = conn.execute("SELECT count(*) FROM job_attempts WHERE job_id = ?", (running[0]["id"],)).fetchone()[0]
    assert attempts == 1  # adopted, not relaunched
    assert conn.execute("SELECT count(*) FROM gpu_leases").fetchone()[0] == 0


def test_failing_worker_is_retried_then_shown_failed_with_its_log(workspace: Path) -> None:
    env = {"STEERTUI_TEST_CRASH_AT": "train_step:1", "STEERTUI_SCHEDULER_MAX_ATTEMPTS": "2"}
    proc = start_run(workspace, env, "--stages", "train")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    assert out.count("retry") >= 2 and "failed" in out
    rows = {r["cell"]: r for r in jobs(workspace)}
    row = rows["train:tiny-random:L1"]
    assert row["state"] == "failed" and row["attempts"] == 2
    assert "exited with 137" in row["error"] and "attempt 2" in row["error"]  # the log's last lines


def test_status_json_lists_every_cell(workspace: Path) -> None:
    code, out, err = run_cli("status", "--json", "--workspace", str(workspace))
    assert code == 0, err
    data = json.loads(out)
    assert len(data["cells"]) == 10 and {c["state"] for c in data["cells"]} == {"pending"}
    assert data["costs"] == [] and data["budget_usd"] == 1.0


def _fake_server() -> tuple[subprocess.Popen[str], dict[str, str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakeapi", "--port", "0"], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)  # fmt: skip
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline().split(" ", 1)[1])
    env = {"OPENAI_BASE_URL": info["openai_base_url"], "OPENAI_API_KEY": info["api_key"]}
    return proc, env, f"http://127.0.0.1:{info['port']}"


def _outputs(ws: Path) -> dict[str, set[tuple[object, ...]]]:
    """Row keys of every generation and score file."""
    out: dict[str, set[tuple[object, ...]]] = {}
    for path in sorted((ws / "vector_evals").rglob("*.jsonl")):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        keys = [(r.get("generation_id"), r.get("pair_id"), r.get("generation_id_a"), r.get("multiplier")) for r in rows]
        assert len(keys) == len(set(keys)), f"duplicate rows in {path}"
        out[str(path.relative_to(ws))] = set(keys)
    return out


def _events(ws: Path) -> int:
    if not (ws / ".steertui/state.db").exists():
        return 0
    conn = sqlite3.connect(ws / ".steertui/state.db", timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_chaos_ten_random_kills_lose_nothing_and_pay_nothing_twice(tmp_path: Path) -> None:
    """Scheduler and workers SIGKILLed 10 times at random moments; the rerun equals an uninterrupted run."""
    import random
    import urllib.request

    import torch

    from pipeline.vectors import load_vector

    server, env, url = _fake_server()
    # Random kills can hit one cell's workers several times: the test is about losing nothing, so the
    # retry bound must not end it.
    env |= {"STEERTUI_JUDGE_MODE": "batch", "STEERTUI_JUDGE_BATCH_POLL_S": "0.2", "STEERTUI_FAKE_GPUS": "2",
            "STEERTUI_SCHEDULER_MAX_ATTEMPTS": "30"}  # fmt: skip
    try:
        ref, chaos = tmp_path / "ref", tmp_path / "chaos"
        for ws in (ref, chaos):
            assert run_cli("init", str(ws), "--example", "smoke")[0] == 0
        proc = start_run(ref, env)
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out
        urllib.request.urlopen(urllib.request.Request(f"{url}/_reset", method="POST")).read()
        rng = random.Random(7)
        kills = 0
        while kills < 10:
            proc = start_run(chaos, env)
            target = _events(chaos) + rng.randint(1, 4)
            wait_for(lambda t=target, p=proc: _events(chaos) >= t or p.poll() is not None, what="scheduler events")
            if proc.poll() is not None:
                break
            running = [r for r in jobs(chaos) if r["state"] == "running" and r["pid"]]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if running and rng.random() < 0.7:
                victim = rng.choice(running)
                try:
                    os.killpg(os.getpgid(victim["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            kills += 1
        proc = start_run(chaos, env)
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out
        assert kills >= 5, "the plan finished before enough kills happened"
        assert _outputs(chaos) == _outputs(ref)
        for path in sorted((ref / "vector").rglob("vec_ep*.pt")):
            twin = chaos / path.relative_to(ref)
            assert torch.allclose(load_vector(path), load_vector(twin), atol=1e-6), path
        stats = json.loads(urllib.request.urlopen(f"{url}/_stats").read())
        paid = stats["paid_by_key"]
        assert paid and max(paid.values()) == 1, "a judge request was paid twice"
        conn = sqlite3.connect(chaos / ".steertui/state.db")
        assert conn.execute("SELECT count(*) FROM gpu_leases").fetchone()[0] == 0
    finally:
        server.kill()
