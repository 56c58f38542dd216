"""The Matrix screen as a viewer: states in colour and symbol, details of the selected cell, navigation,
and the keys that open a cell's log and plots; help and the command palette."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steertui.messages import JobAction
from steertui.widgets.matrix_grid import MatrixGrid
from tests.tui.conftest import app_for, screen_text, settle, wait_until


def details(app: Any) -> str:
    info = app.screen.query_one("#details").info
    return "" if info is None else f"{info.cell} {info.state} " + " ".join(f"{k}={v}" for k, v in info.lines)


async def test_matrix_shows_states_and_details(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        text = screen_text(app)
        assert "tiny-random L1    ✔   ▶ 44%   ○     –     ·" in text  # fixed columns: label, then 6 per cell
        assert "tiny-random L2    ✘     ⊘     ·     ·     ·" in text
        assert "train  gen   coh   rel   pair" in text and "E2 ─" in text
        assert "viewer · no scheduler" in text
        await wait_until(pilot, lambda: "train:tiny-random:L1 done" in details(app), what="details")
        assert "took 30s" in details(app) and "0 of 2 epochs" in details(app)
        await pilot.press("right")
        await wait_until(pilot, lambda: "generate:tiny-random:L1:E2 running" in details(app))
        info = details(app)
        assert "running 1m05s" in info and "4/9" in info and "eta 1m20s" in info and "pid 4242" in info
        assert "generations_ep2.jsonl (84 rows)" in info  # the synthetic corpus: 21 multipliers × 4 prompts
        await pilot.press("right", "right", "right", "right")  # stops at the last column
        assert app.screen.query_one(MatrixGrid).cursor == (0, 4)
        await wait_until(pilot, lambda: "pairwise" in details(app))
        await pilot.press("down", "left", "left", "left", "left")
        await wait_until(pilot, lambda: "train:tiny-random:L2 failed" in details(app))
        assert app.screen.query_one("#details").info.error.startswith("worker exited with 1")


async def test_row_and_column_actions_name_their_cells(tui_ws: Path) -> None:
    seen: dict[int, JobAction] = {}  # a message is seen by the screen and again by the app it bubbles to

    def hook(message: object) -> None:
        if isinstance(message, JobAction):
            seen[id(message)] = message

    app = app_for(tui_ws)
    async with app.run_test(size=(100, 30), message_hook=hook) as pilot:
        await settle(pilot, app)
        await pilot.press("R")
        await pilot.press("right", "c")
        await pilot.press("X")
        await pilot.pause()
        got = [(a.action, len(a.job_ids)) for a in seen.values()]
        assert got == [("run", 5), ("run", 2), ("cancel", 5)]


async def test_open_log_jumps_to_the_last_error(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        await pilot.press("down", "o")
        await wait_until(pilot, lambda: app.current_mode == "logs", what="the logs screen")
        view = app.screen.query_one("#log")
        await wait_until(pilot, lambda: view.marked is not None, what="the error line")
        assert view.index.line(view.marked) == "error: boom"
        assert "logs/train_tiny-random_L2.log" in screen_text(app)
        await pilot.press("E")
        await wait_until(pilot, lambda: view.index.line(view.marked) == "RuntimeError: boom")


async def test_open_log_of_a_cell_that_never_ran(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        await pilot.press("right", "right", "o")
        await pilot.pause()
        assert app.current_mode == "matrix"
        assert any("no log yet" in n.message for n in app._notifications)


async def test_open_plots_selects_the_cell(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        await pilot.press("down", "right", "p")
        await wait_until(pilot, lambda: app.current_mode == "plots")
        await wait_until(pilot, lambda: "layer 2 · epoch 2" in screen_text(app), what="the plots of L2 E2")


async def test_help_and_command_palette(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
        assert "Run row" in text and "✘ failed" in text and "Everywhere" in text
        await pilot.press("escape")
        await pilot.pause()
        assert app.current_mode == "matrix" and "Everywhere" not in screen_text(app)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"jobs")
        await wait_until(pilot, lambda: "Screen: Jobs" in screen_text(app), what="the palette hit")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "jobs")


async def test_number_keys_switch_screens(tui_ws: Path) -> None:
    app = app_for(tui_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for key, mode in zip("234567", ("jobs", "logs", "gpus", "costs", "plots", "chat"), strict=True):
            await pilot.press(key)
            await pilot.pause()
            assert app.current_mode == mode
        await pilot.press("1")  # typed into the chat input
        assert app.current_mode == "chat" and app.screen.query_one("#chat-input").value == "1"
        await pilot.press("escape", "1")  # leave the input first
        await pilot.pause()
        assert app.current_mode == "matrix"
