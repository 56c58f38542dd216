"""SVG snapshots of the main screens at 80×24 and 160×48 (fixed store, frozen clock, no cursor blink).

Update with `make snapshot-update` after an intended change, and look at the diffs it reports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from steertui.messages import OpenLog
from tests.tui.conftest import app_for, screen_text, settle, wait_until

SIZES = [(80, 24), (160, 48)]


async def _matrix(pilot: Any) -> None:
    await pilot.press("right")
    await wait_until(pilot, lambda: pilot.app.screen.query_one("#details").info is not None)


async def _jobs(pilot: Any) -> None:
    await pilot.press("2")


async def _logs(pilot: Any) -> None:
    root = pilot.app.ctx.ws.root
    pilot.app.post_message(OpenLog(str(root / "logs" / "train_tiny-random_L2.log"), to_error=True))
    await wait_until(pilot, lambda: pilot.app.current_mode == "logs")
    await wait_until(pilot, lambda: pilot.app.screen.query_one("#log").marked is not None)


async def _gpus(pilot: Any) -> None:
    await pilot.press("4")
    await wait_until(pilot, lambda: "2 GPUs" in screen_text(pilot.app))


async def _costs(pilot: Any) -> None:
    await pilot.press("5")
    await wait_until(pilot, lambda: "spent $" in screen_text(pilot.app))


async def _plots(pilot: Any) -> None:
    await pilot.press("6")
    await wait_until(pilot, lambda: "layer 1 · epoch 2" in screen_text(pilot.app), timeout=60)
    await pilot.press("v")


async def _chat(pilot: Any) -> None:
    await pilot.press("7")


async def _help(pilot: Any) -> None:
    await pilot.press("question_mark")


SCREENS: dict[str, Callable[[Any], Awaitable[None]]] = {
    "matrix": _matrix, "jobs": _jobs, "logs": _logs, "gpus": _gpus, "costs": _costs, "plots": _plots,
    "chat": _chat, "help": _help,
}  # fmt: skip


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen_snapshot(screen: str, size: tuple[int, int], tui_ws: Path, snap_compare: Any,
                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    if screen == "help" and size == SIZES[1]:
        pytest.skip("one help snapshot is enough")
    monkeypatch.setenv("STEERTUI_FAKE_GPUS", "2")
    app = app_for(tui_ws)

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app)
        await SCREENS[screen](pilot)
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
