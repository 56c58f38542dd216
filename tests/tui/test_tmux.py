"""End to end in a real terminal (tmux): the matrix shows the workspace, a key press starts a stage, the screen
follows the job; killing the app (SIGKILL) leaves the worker running, and a new app shows it live and follows
it to done. Real workers (`python -m pipeline.generate` on tiny-random); polls `capture-pane`, never sleeps."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO
from tests.tui.conftest import save_vectors

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]
GEN = "generate:tiny-random:L1:E2"


class Tmux:
    """One private tmux server (its socket in the test's tmp dir), so nothing touches the user's sessions."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, timeout=30)
        return out.stdout

    def start(self, command: list[str], cwd: Path) -> None:
        env = {"STEERTUI_CACHE": os.environ.get("STEERTUI_CACHE", ""), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}
        exports = " ".join(f"{k}={v}" for k, v in env.items() if v)
        line = f"cd {cwd} && exec env {exports} {' '.join(command)}"
        self("new-session", "-d", "-s", "app", "-x", "120", "-y", "30", line)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app")

    def pane_pid(self) -> int:
        return int(self("list-panes", "-t", "app", "-F", "#{pane_pid}").split()[0])

    def keys(self, *keys: str) -> None:
        for key in keys:
            self("send-keys", "-t", "app", key)


def wait_for(cond: Callable[[], object], what: str, timeout: float = 120.0, tmux: Tmux | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            shown = tmux.screen() if tmux else ""
            raise AssertionError(f"timed out waiting for {what}\n{shown}")
        time.sleep(0.1)  # polling interval of a condition, not synchronisation by sleeping


def job(root: Path, key: str) -> dict[str, object]:
    db = root / ".steertui" / "state.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM jobs WHERE cell = ?", (key,)).fetchone()
        return dict(row) if row else {}
    except sqlite3.OperationalError:  # the scheduler is creating the schema
        return {}
    finally:
        conn.close()


def row_of(screen: str, label: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith(label)), "")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path / "tmux.sock")
    try:
        yield server
    finally:
        server("kill-server")


def test_key_starts_a_stage_and_workers_survive_the_app(workspace: Path, tmux: Tmux) -> None:
    save_vectors(workspace, 1)  # train:L1 is done by its artifacts, so the generate cell is ready
    app = [sys.executable, "-m", "steertui"]
    tmux.start(app, workspace)
    wait_for(lambda: "tiny-random L1" in tmux.screen(), "the matrix", tmux=tmux)
    assert "viewer · no scheduler" in tmux.screen()
    tmux.keys("Right", "r")
    wait_for(lambda: job(workspace, GEN).get("state") == "running", "the launch", tmux=tmux)
    wait_for(lambda: "▶" in row_of(tmux.screen(), "tiny-random L1"), "the running glyph", tmux=tmux)
    worker = int(job(workspace, GEN)["pid"])  # type: ignore[call-overload]

    os.kill(tmux.pane_pid(), signal.SIGKILL)  # the app dies; its worker runs in its own session
    wait_for(lambda: "app" not in tmux("list-sessions"), "the app to die")
    assert psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE

    tmux.start(app, workspace)
    wait_for(lambda: "▶" in row_of(tmux.screen(), "tiny-random L1"), "the reopened app to show it running", tmux=tmux)
    assert "viewer · no scheduler" in tmux.screen()
    tmux.keys("Right", "r")  # run on a running cell: this app becomes the scheduler and adopts the worker
    wait_for(lambda: job(workspace, GEN).get("state") == "done", "the job to finish", timeout=300, tmux=tmux)
    wait_for(lambda: row_of(tmux.screen(), "tiny-random L1").count("✔") == 2, "done on screen", tmux=tmux)
    assert job(workspace, GEN)["attempts"] == 1, "adopted, not launched again"
    tmux.keys("q")
    wait_for(lambda: "app" not in tmux("list-sessions"), "the app to quit")
    assert (workspace / "vector_evals" / "tiny-random" / "layer1" / "generations_ep2.jsonl").exists()
    assert REPO.exists()
