"""The app as the workspace's scheduler: a key press launches a cell, the screen follows it to done; cancel,
retry, failures as notifications (never crashes), and actions sent to another process's scheduler."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from steertui.screens.engine import EngineOptions
from tests.tui.conftest import ScriptedExecutor, app_for, job_id, save_vectors, screen_text, settle, wait_until

TRAIN_L1 = "train:tiny-random:L1"


def state(root: Path, key: str) -> str | None:
    conn = sqlite3.connect(root / ".steertui" / "state.db")
    try:
        row = conn.execute("SELECT state FROM jobs WHERE cell = ?", (key,)).fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def notes(app: Any) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def scripted(root: Path) -> tuple[ScriptedExecutor, EngineOptions]:
    executor = ScriptedExecutor(on_finish=lambda jid: save_vectors(root, 1))
    return executor, EngineOptions(executor=executor, gpus=[], env={})


async def test_run_key_launches_the_cell_and_the_matrix_follows_it_to_done(workspace: Path) -> None:
    executor, engine = scripted(workspace)
    app = app_for(workspace, engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.snapshot.layout.rows, what="the planned matrix")
        assert "viewer · no scheduler" in screen_text(app)
        assert not (workspace / ".steertui" / "state.db").exists(), "a viewer creates no store"
        await pilot.press("r")
        await wait_until(pilot, lambda: executor.launched, what="a launch")
        await wait_until(pilot, lambda: "▶" in screen_text(app), what="the running glyph")
        text = screen_text(app)
        assert "scheduling 1 cell" in text and "tiny-random L1    ▶" in text
        assert len(executor.launched) == 1, "only the chosen cell (and what it needs) is launched"
        executor.finish(job_id(workspace, TRAIN_L1))
        await wait_until(pilot, lambda: state(workspace, TRAIN_L1) == "done", what="done")
        await settle(pilot, app)
        assert "tiny-random L1    ✔" in screen_text(app)
        assert state(workspace, "generate:tiny-random:L1:E2") == "queued"  # ready, but not asked for
        assert len(executor.launched) == 1
        assert any(n.startswith("done: train:tiny-random:L1") for n in notes(app))


async def test_cancel_and_retry(workspace: Path) -> None:
    executor, engine = scripted(workspace)
    app = app_for(workspace, engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.snapshot.layout.rows)
        await pilot.press("r")
        await wait_until(pilot, lambda: state(workspace, TRAIN_L1) == "running")
        await pilot.press("x")
        await wait_until(pilot, lambda: state(workspace, TRAIN_L1) == "cancelled", what="cancelled")
        assert executor.cancelled == [job_id(workspace, TRAIN_L1)]
        await settle(pilot, app)
        assert "⊘" in screen_text(app)
        executor.outcome.clear()
        await pilot.press("t")
        await wait_until(pilot, lambda: len(executor.launched) == 2, what="a second launch")
        await wait_until(pilot, lambda: state(workspace, TRAIN_L1) == "running")


async def test_a_failed_worker_is_a_notification_with_the_log_path(workspace: Path) -> None:
    executor, engine = scripted(workspace)
    app = app_for(workspace, engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.snapshot.layout.rows)
        await pilot.press("r")
        await wait_until(pilot, lambda: executor.launched)
        executor.finish(job_id(workspace, TRAIN_L1), code=2)  # bad input: failed at once, no retry
        await wait_until(pilot, lambda: state(workspace, TRAIN_L1) == "failed", what="failed")
        await wait_until(pilot, lambda: any(n.startswith("failed: train") for n in notes(app)), what="a toast")
        toast = next(n for n in notes(app) if n.startswith("failed: train"))
        assert "exited with 2" in toast and "logs/train_tiny-random_L1.log" in toast
        await settle(pilot, app)
        assert "✘" in screen_text(app)
        await pilot.press("t")
        await wait_until(pilot, lambda: len(executor.launched) == 2, what="retry launches again")


async def test_a_failing_tick_is_reported_and_the_app_keeps_running(workspace: Path) -> None:
    class Broken(ScriptedExecutor):
        def launch(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError("no space left on device")

    app = app_for(workspace, engine=EngineOptions(executor=Broken(), gpus=[], env={}))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.snapshot.layout.rows)
        await pilot.press("r")
        await wait_until(pilot, lambda: any("no space left" in n for n in notes(app)), what="the error toast")
        polls = app.polls
        await wait_until(pilot, lambda: app.polls > polls + 2, what="polling goes on")
        assert app.is_running


async def test_schedule_all_from_the_start_like_steertui_run(workspace: Path) -> None:
    executor, engine = scripted(workspace)
    app = app_for(workspace, engine=engine, schedule=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: executor.launched, what="a launch without any key")
        await settle(pilot, app)
        assert "scheduling all" in screen_text(app)
        await pilot.press("S")
        await wait_until(pilot, lambda: app.snapshot.role.kind == "none", what="stopped")
        assert any("stopped scheduling" in n for n in notes(app))


async def test_viewer_sends_actions_to_the_running_scheduler(workspace: Path) -> None:
    """Another process holds the scheduler lock: the app stays a viewer and acts through the store."""
    from pipeline.store import open_store
    from tests.tui.conftest import seed_store

    seed_store(workspace)
    from filelock import FileLock

    lock = FileLock(str(workspace / ".steertui" / "scheduler.lock"))
    lock.acquire()
    holder = os.getppid()  # a live process older than the pid file stands in for the other scheduler
    (workspace / ".steertui" / "scheduler.pid").write_text(str(holder))
    try:
        app = app_for(workspace, engine=EngineOptions(executor=ScriptedExecutor(), gpus=[], env={}))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: app.snapshot.role.kind == "remote", what="viewer of the other one")
            assert f"scheduler pid {holder}" in screen_text(app)
            await pilot.press("down")  # train L2, failed in the seed
            await pilot.press("t")
            await wait_until(pilot, lambda: state(workspace, "train:tiny-random:L2") == "pending", what="retry")
            assert app.snapshot.role.kind == "remote"
    finally:
        lock.release()
    with open_store(workspace / ".steertui" / "state.db") as store:
        row = store.one("SELECT attempts, error FROM jobs WHERE cell = 'train:tiny-random:L2'")
        assert row is not None and row["attempts"] == 0 and row["error"] is None
