"""Fixtures for the TUI tests: a smoke workspace with a fixed store, a frozen clock, no cursor blink,
a scripted executor (jobs that end when the test says so), and a `wait_until` helper instead of sleeps."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from steertui.app import AppOptions, SteerApp, make_app
from steertui.screens.context import ChatOptions
from steertui.screens.engine import EngineOptions

NOW = 1_750_000_000.0
# fixed states for the smoke plan's cells (tiny-random, layers 1-2, epoch 2; tasks coherence, relationship, pairwise)
STATES = {
    "train:tiny-random:L1": ("done", {"started_at": NOW - 400, "ended_at": NOW - 370, "exit_code": 0}),
    "generate:tiny-random:L1:E2": (
        "running",
        {
            "progress_done": 4,
            "progress_total": 9,
            "started_at": NOW - 65,
            "eta_s": 80.0,
            "pid": 4242,
            "message": "decoding batch 1 of 2",
        },
    ),
    "score:tiny-random:L1:E2:coherence": ("queued", {}),
    "score:tiny-random:L1:E2:relationship": ("skipped", {"message": "no judge configured: set OPENAI_API_KEY"}),
    "score:tiny-random:L1:E2:pairwise": ("pending", {}),
    "train:tiny-random:L2": (
        "failed",
        {
            "started_at": NOW - 300,
            "ended_at": NOW - 290,
            "exit_code": 1,
            "attempts": 3,
            "error": "worker exited with 1\nTraceback (most recent call last):",
        },
    ),
    "generate:tiny-random:L2:E2": ("cancelled", {}),
    "score:tiny-random:L2:E2:coherence": ("pending", {}),
    "score:tiny-random:L2:E2:relationship": ("pending", {}),
    "score:tiny-random:L2:E2:pairwise": ("pending", {}),
}
STEPS = [f"step {i}/40 loss 0.69" for i in range(1, 41)]
LOG_LINES = ["=== attempt 1: train:tiny-random:L2 gpus=[] ===", "loading tiny-random", *STEPS,
             "Traceback (most recent call last):", "RuntimeError: boom", "error: boom"]  # fmt: skip


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("textual.widgets._input.Input.cursor_blink", False)


def plan_keys(root: Path) -> list[tuple[str, str, str, int, int, str]]:
    """(key, kind, model, layer, epoch, task) of the workspace's plan, in plan order."""
    from pipeline.config_load import load_config
    from pipeline.workspace import Workspace
    from steertui.plan import build_plan

    plan = build_plan(Workspace(root), load_config(root), gpu_machine=False)
    return [(c.key, c.kind, c.model, c.layer, c.epoch, c.task) for c in plan.cells]


def seed_store(root: Path, states: dict[str, tuple[str, dict[str, Any]]] | None = None) -> None:
    """Jobs for every plan cell with fixed states, logs for some, events and a ledger row."""
    from pipeline.store import open_store

    states = STATES if states is None else states
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    with open_store(root / ".steertui" / "state.db") as store, store.tx():
        for key, kind, model, layer, epoch, task in plan_keys(root):
            state, extra = states.get(key, ("pending", {}))
            log = None
            if state not in ("pending", "queued", "skipped"):
                log = logs / f"{key.replace(':', '_')}.log"
                log.write_text("\n".join(LOG_LINES if state == "failed" else LOG_LINES[:12]) + "\n")
            fields = {"cell": key, "kind": kind, "model": model, "layer": layer, "epoch": epoch, "task": task,
                      "state": state, "attempts": 1 if log else 0, "created_at": NOW - 500, "gpus": "[]",
                      "log_path": str(log) if log else None, **extra}  # fmt: skip
            cols = ", ".join(fields)
            store.conn.execute(f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * len(fields))})",
                               tuple(fields.values()))  # fmt: skip
        store.conn.execute(
            "INSERT INTO ledger (key, provider, model, task, cell, item, state, mode, cost_usd, input_tokens, "
            "output_tokens, created_at, updated_at) VALUES ('k1', 'openai', 'gpt-4o-mini', 'coherence', "
            "'score:tiny-random:L1:E2:coherence', '1', 'done', 'sync', 0.0125, 900, 10, ?, ?)",
            (NOW, NOW),
        )
        store.conn.execute("UPDATE judge_spend SET total_usd = 0.0125 WHERE id = 1")


def write_results(root: Path) -> None:
    """A small synthetic corpus (training metrics, ratings, generations, pairwise) for the plots."""
    from pipeline.analysis_synth import SynthSpec, write_corpus

    write_corpus(root, SynthSpec(models=(("tiny-random", (1, 2)),), epochs=(2,), prompts=4, defects=False,
                                 train_epochs=2, seed=3))  # fmt: skip


@pytest.fixture
def tui_ws(workspace: Path) -> Path:
    """The smoke workspace with a seeded store and plot data."""
    seed_store(workspace)
    write_results(workspace)
    return workspace


def options(**kw: Any) -> AppOptions:
    """Fast polls, a frozen clock, tiny chat replies, and a scripted executor: no test launches real workers."""
    engine = kw.pop("engine", None) or EngineOptions(executor=ScriptedExecutor(), gpus=[], env={})
    return AppOptions(poll_s=kw.pop("poll_s", 0.1), clock=lambda: NOW, engine=engine,
                      chat=kw.pop("chat", ChatOptions(device="cpu", max_new_tokens=6, greedy=True)), **kw)  # fmt: skip


def app_for(root: Path, **kw: Any) -> SteerApp:
    return make_app(root, options=options(**kw))


async def wait_until(pilot: Pilot[Any], cond: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until `cond()` holds (checked every 20 ms); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await pilot.pause(0.02)


async def settle(pilot: Pilot[Any], app: SteerApp, polls: int = 2) -> None:
    """Wait for `polls` more engine passes, then for the workers they started."""
    target = app.polls + polls
    await wait_until(pilot, lambda: app.polls >= target, what=f"{polls} polls")
    await wait_until(pilot, lambda: all(w.is_finished for w in app.workers if w.group != "engine"), what="workers")
    await pilot.pause()


@dataclass
class ScriptedExecutor:
    """An executor whose jobs run until the test ends them (`finish`), writing nothing but the store row."""

    name: str = "scripted"
    launched: list[int] = field(default_factory=list)
    outcome: dict[int, int] = field(default_factory=dict)  # job id -> exit code once finished
    cancelled: list[int] = field(default_factory=list)
    on_finish: Callable[[int], None] | None = None

    def launch(self, job_id: int, argv: Any, env: Any, log: Path, cwd: Path, pass_fds: Any) -> Any:
        from steertui.executor import Launched

        self.launched.append(job_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write("scripted worker started\n")
        return Launched(None, None)

    def observe(self, job: Any) -> Any:
        from steertui.executor import Observed

        code = self.outcome.get(int(job["id"]))
        return Observed("running") if code is None else Observed("exited", code)

    def cancel(self, job: Any, *, force: bool = False) -> None:
        self.cancelled.append(int(job["id"]))
        self.outcome[int(job["id"])] = 130

    def finish(self, job_id: int, code: int = 0) -> None:
        if code == 0 and self.on_finish is not None:
            self.on_finish(job_id)
        self.outcome[job_id] = code


def job_id(root: Path, key: str) -> int:
    import sqlite3

    conn = sqlite3.connect(root / ".steertui" / "state.db")
    try:
        return int(conn.execute("SELECT id FROM jobs WHERE cell = ?", (key,)).fetchone()[0])
    finally:
        conn.close()


def save_vectors(root: Path, layer: int, epochs: tuple[int, ...] = (1, 2), hidden: int = 64) -> None:
    """Random tiny-random vectors for `layer` (a train cell's artifacts)."""
    import torch

    from pipeline.config_load import load_config
    from pipeline.vectors import VectorMeta, save_vector
    from pipeline.workspace import Workspace

    config = load_config(root)
    ws = Workspace(root)
    torch.manual_seed(layer)
    for epoch in epochs:
        vec = torch.randn(hidden)
        save_vector(ws.vector_path(config.behavior, "tiny-random", layer, epoch), vec,
                    VectorMeta("tiny-random", layer, epoch, hidden, float(vec.norm())))  # fmt: skip


def jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def blank_ws(workspace: Path) -> Iterator[Path]:
    yield workspace


def screen_text(app: SteerApp) -> str:
    """The screen as plain text (what a user reads), for assertions."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True,
                      legacy_windows=False, safe_box=False)  # fmt: skip
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()
