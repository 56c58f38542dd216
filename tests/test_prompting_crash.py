"""Crash safety of the prompting stages (real worker subprocesses, real SIGKILL) and the headless runner.

Kills land at named points (`pipeline.crashpoints`, the batch runner's steps) and at random moments;
every rerun must finish with one row per item and pay no request twice. Sync mode cannot take back a
request the server answered just before a kill (it is in flight, not yet in the ledger; the judge
suite bounds that window), so sync kills here land between exp2's rounds and random kills run in
batch mode, where exactly-once is strict.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.progress import CollectingReporter
from pipeline.prompting_exp1 import run_generate
from pipeline.prompting_exp2 import run_stability, run_stability_rate
from pipeline.prompting_spec import conversations_path, generations_path, turn_scores_path
from pipeline.workspace import Workspace
from tests.conftest import REPO
from tests.fakeapi import FakeAPIServer
from tests.test_prompting_support import CLAUDE, config, configure, rows, worker

THEMES = ["casual_chat", "technical_chat"]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPIServer]:
    with FakeAPIServer() as srv:
        for name, value in srv.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STEERTUI_TEST_BACKOFF_S", "0.001")
        yield srv


def small(workspace: Path, mode: str, **judge: Any) -> Workspace:
    return configure(workspace, prompting={"providers": [CLAUDE], "themes": THEMES}, judge={"mode": mode, **judge})


def ids(path_rows: list[dict[str, Any]], *fields: str) -> list[tuple[Any, ...]]:
    return [tuple(r[f] for f in fields) for r in path_rows]


def conversations(ws: Workspace) -> list[dict[str, Any]]:
    return [r for t in THEMES for r in rows(conversations_path(ws, 7, "claude", t))]


def assert_exp2_complete(ws: Workspace) -> None:
    convs = conversations(ws)
    keys = ids(convs, "scenario_name", "multiplier")
    assert len(keys) == len(set(keys)) == 2 * 8 * 3, Counter(keys).most_common(2)
    for row in convs:
        history = row["conversation_history"]
        assert [m["role"] for m in history] == ["user", "assistant"] * 4
        assert all(isinstance(m["content"], str) and m["content"] for m in history)


@pytest.mark.parametrize(
    ("stage", "mode", "point"),
    [
        ("generate", "batch", "prompting-rows:1"),
        ("stability", "sync", "stability-turn:2"),
        ("stability", "batch", "after_create"),
    ],
)
def test_sigkill_at_a_step_then_rerun_pays_nothing_twice(
    server: FakeAPIServer, workspace: Path, stage: str, mode: str, point: str
) -> None:
    ws = small(workspace, mode)
    cfg = config(ws)
    claude = cfg.prompting.provider_specs()[0]
    proc = worker(ws, stage, "--provider", "claude", env={**server.env(), "STEERTUI_TEST_CRASH_AT": point})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    if stage == "generate":
        run_generate(ws, cfg, claude, CollectingReporter())
        keys = ids(rows(generations_path(ws, "claude", 7)), "test_prompt_id", "level")
        assert len(keys) == len(set(keys)) == 21
        assert server.stats.paid_total == 21
    else:
        run_stability(ws, cfg, claude, CollectingReporter())
        assert_exp2_complete(ws)
        assert server.stats.paid_total == 2 * 8 * 3 * 4
    assert not server.stats.duplicates()


def kill_at_random_moments(server: FakeAPIServer, ws: Workspace, args: list[str], seed: int, kills: int) -> int:
    """Start the worker `kills` times, SIGKILLing each run once the server has seen a seeded random number of
    further requests; returns how many runs were killed (a run may finish first)."""
    rng, killed = random.Random(seed), 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERTUI_TEST_CRASH")}
    cmd = [sys.executable, "-m", "pipeline.prompting", *args, "--workspace", str(ws.root)]
    for _ in range(kills):
        target = sum(server.stats.requests_by_endpoint.values()) + rng.randint(1, 12)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and sum(server.stats.requests_by_endpoint.values()) < target:
            try:  # watch the server's request count, not the clock
                proc.wait(timeout=0.005)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += proc.wait() == -signal.SIGKILL
    return killed


def test_sigkill_at_random_moments_in_batch_mode_then_rerun(server: FakeAPIServer, workspace: Path) -> None:
    ws = small(workspace, "batch")
    cfg = config(ws)
    claude = cfg.prompting.provider_specs()[0]
    assert kill_at_random_moments(server, ws, ["stability", "--provider", "claude"], seed=3, kills=2) >= 1
    run_stability(ws, cfg, claude, CollectingReporter())
    assert_exp2_complete(ws)
    assert server.stats.paid_total == 2 * 8 * 3 * 4  # distinct system prompts: every turn its own request
    assert kill_at_random_moments(server, ws, ["stability-rate", "--provider", "claude"], seed=4, kills=1) >= 1
    run_stability_rate(ws, cfg, claude, CollectingReporter())
    scores = [r for t in THEMES for r in rows(turn_scores_path(ws, 7, "claude", t))]
    keys = ids(scores, "experiment_id", "turn_index")
    assert len(keys) == len(set(keys)) == 2 * 8 * 3 * 4
    assert not server.stats.duplicates()


def test_headless_run_completes_every_prompting_cell(server: FakeAPIServer, workspace: Path) -> None:
    """`steertui run --headless --stages prompting`: cells in the jobs table (what the TUI shows), run to done."""
    from tests.test_prompting_support import write_vector_generations

    ws = configure(workspace, prompting={"providers": [CLAUDE], "experiments": ["steerability"]})
    write_vector_generations(ws, config(ws))
    env = {**os.environ, "STEERTUI_SCHEDULER_POLL_S": "0.1", "STEERTUI_SCHEDULER_JUDGE_SLOTS": "4"}
    cmd = [sys.executable, "-m", "steertui", "run", "--headless", "--stages", "prompting", "-w", str(ws.root)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with sqlite3.connect(ws.db_path) as conn:
        states = dict(conn.execute("SELECT cell, state FROM jobs").fetchall())
    cells = (
        "prompting-generate:claude:levels7",
        "prompting-rate:claude:levels7:coherence",
        "prompting-rate:claude:levels7:relationship",
        "prompting-rank:claude:levels7:tiny-random:L1:E2",
    )
    assert states == dict.fromkeys(cells, "done"), states
    assert not server.stats.duplicates()
