"""Jobs, Logs, GPUs, Costs and Plots screens on a fixed store."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from steertui.messages import JobAction
from tests.tui.conftest import LOG_LINES, app_for, screen_text, settle, wait_until


async def test_jobs_lists_running_queued_and_failed_with_progress(tui_ws: Path) -> None:
    seen: dict[int, JobAction] = {}
    app = app_for(tui_ws)
    hook = lambda m: seen.setdefault(id(m), m) if isinstance(m, JobAction) else None  # noqa: E731
    async with app.run_test(size=(160, 30), message_hook=hook) as pilot:
        await pilot.press("2")
        await settle(pilot, app)
        text = screen_text(app)
        lines = [line for line in text.splitlines() if "tiny-random" in line]
        assert [line.split()[1] for line in lines] == ["running", "queued", "failed"]
        assert "44%" in lines[0] and "1m20s" in lines[0] and "4242" in lines[0] and "cpu" in lines[0]
        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: app.current_mode == "matrix")
        await wait_until(pilot, lambda: app.screen.grid.cursor == (1, 0), what="the failed train:L2 cell")
        await pilot.press("2", "up", "up", "x", "down", "down", "t")
        await pilot.pause()
        assert [(a.action, a.job_ids) for a in seen.values()] == [("cancel", (2,)), ("retry", (6,))]


async def test_jobs_table_updates_in_place(tui_ws: Path) -> None:
    import sqlite3

    app = app_for(tui_ws)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("2")
        await settle(pilot, app)
        conn = sqlite3.connect(tui_ws / ".steertui" / "state.db")
        conn.execute("UPDATE jobs SET progress_done = 8 WHERE cell = 'generate:tiny-random:L1:E2'")
        conn.commit()
        conn.close()
        await wait_until(pilot, lambda: "89%" in screen_text(app), what="the new progress")
        assert app.screen.query_one(DataTable).row_count == 3


async def test_logs_follow_search_and_errors(tui_ws: Path) -> None:
    log = tui_ws / "logs" / "train_tiny-random_L2.log"
    app = app_for(tui_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await settle(pilot, app)
        assert "train_tiny-random_L2.log" in screen_text(app)
        await pilot.click("#log-files", offset=(2, 3))  # the fourth log file: train_tiny-random_L2.log
        view = app.screen.query_one("#log")
        await wait_until(pilot, lambda: view.index is not None and len(view.index) == len(LOG_LINES), what="index")
        await wait_until(pilot, lambda: "error: boom" in screen_text(app), what="following the end")
        with log.open("a") as fh:
            fh.write("a new line written by the worker\n")
        await wait_until(pilot, lambda: "a new line written by the worker" in screen_text(app), what="the new line")
        await pilot.press("slash", *"step 7/", "enter")
        await wait_until(pilot, lambda: view.marked == 8, what="the search hit")  # line 9: "step 7/40"
        assert not view.follow
        view.marked = 3
        await pilot.press("n")  # the next hit from line 4 is the only one: line 9 again
        await wait_until(pilot, lambda: view.marked == 8, what="the next hit")
        await pilot.press("e")
        await wait_until(pilot, lambda: view.marked == 42, what="the next error line")  # the Traceback
        await pilot.press("G")
        assert view.follow


def test_line_index_reads_lines_without_loading_the_file(tmp_path: Path) -> None:
    import re

    from steertui.widgets.line_index import LineIndex

    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(50_000)) + "tail without newline")
    index = LineIndex(path)
    assert index.update() and len(index) == 50_001
    assert index.line(0) == "line 0" and index.line(49_999) == "line 49999" and index.line(50_000).startswith("tail")
    assert index.find(re.compile(rb"line 4000\b"), 0) == 4000
    assert index.find(re.compile(rb"line 12\b"), 40_000, backwards=True) == 12
    with path.open("a") as fh:
        fh.write(" grows\nnext\n")
    assert index.update() and index.line(50_000) == "tail without newline grows" and index.line(50_001) == "next"
    path.write_text("short\n")
    assert index.update() and len(index) == 1 and index.line(0) == "short"
    assert not index.update()


async def test_gpus_screen_with_simulated_gpus(tui_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERTUI_FAKE_GPUS", "2")
    app = app_for(tui_ws)
    async with app.run_test(size=(120, 24)) as pilot:
        await pilot.press("4")
        await wait_until(pilot, lambda: "2 GPUs" in screen_text(app), what="the inventory")
        text = screen_text(app)
        assert "simulated" in text and "0.0/80 GiB" in text


async def test_costs_screen_sums_spend_and_estimates_queued_work(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(160, 24)) as pilot:
        await pilot.press("5")
        await wait_until(pilot, lambda: "spent $0.0125" in screen_text(app), what="the ledger")
        text = screen_text(app)
        assert "$0.9875 left" in text
        assert "queued work: 5 score cells" in text and "no history yet for pairwise, relationship" in text
        assert "tiny-random  1      2      coherence" in text


async def test_plots_follow_the_selected_layer_and_epoch(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await wait_until(pilot, lambda: "tiny-random · layer 1 · epoch 2" in screen_text(app), timeout=60)
        assert "eval loss (add) by epoch" in screen_text(app)
        screen = app.screen
        xs, means, _ = screen.tables.series("tiny-random", 1, 2, "coherence")
        assert len(xs) == 21 and min(means) >= 1
        await pilot.press("v")
        await pilot.pause()
        text = screen_text(app)
        assert "coherence (mean ± SD) by multiplier" in text and "relationship (mean ± SD)" in text
        await pilot.press("l")
        await wait_until(pilot, lambda: "layer 2 · epoch 2" in screen_text(app))
        await pilot.press("v")
        await wait_until(pilot, lambda: "pairwise win rate by multiplier" in screen_text(app))
