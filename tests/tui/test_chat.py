"""The chat pane on tiny-random: a turn, a multiplier change between turns, side by side, reset and save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.chat_session import ChatSession, Decoding, RowSpec
from tests.tui.conftest import app_for, save_vectors, screen_text, wait_until

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def expected(tiny: Any, root: Path, conversations: list[list[dict[str, str]]], rows: list[RowSpec]) -> list[str]:
    """The same turn decoded directly (greedy, 6 tokens, the workspace's system prompt and vector)."""
    from pipeline.config_load import load_config
    from pipeline.vectors import load_vector
    from pipeline.workspace import Workspace

    config = load_config(root)
    session = ChatSession(tiny, system_prompt=config.system_prompt, decoding=Decoding(max_new_tokens=6, greedy=True))
    session.add_vector(1, 2, load_vector(Workspace(root).vector_path(config.behavior, "tiny-random", 1, 2)))
    return session.reply(conversations, rows)


async def set_input(pilot: Any, selector: str, text: str) -> None:
    box = pilot.app.screen.query_one(selector)
    box.focus()
    await pilot.press("end", *["backspace"] * len(box.value), *text)


def replies(app: Any) -> list[str]:
    return [c.reply for c in app.screen.query("ChatColumn")]


async def test_chat_turns_with_a_multiplier_change_and_side_by_side(workspace: Path, tiny: Any) -> None:
    save_vectors(workspace, 1)
    app = app_for(workspace)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("7")
        await wait_until(pilot, lambda: app.current_mode == "chat")
        screen = app.screen
        await pilot.press(*"hello", "enter")
        await wait_until(pilot, lambda: screen.conversation is not None and screen.conversation.turns == 1,
                         timeout=60, what="the first reply")  # fmt: skip
        assert "loaded tiny-random · cpu · float32" in screen_text(app)
        first = [[{"role": "user", "content": "hello"}]]
        assert replies(app) == expected(tiny, workspace, first, [RowSpec(1.0, 1, 2)])
        history = [*first[0], {"role": "assistant", "content": replies(app)[0]}]

        await set_input(pilot, "#chat-mults", "2")
        await set_input(pilot, "#chat-input", "again")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.conversation.turns == 2, what="the second reply")
        assert screen.conversation.histories[0][:2] == history
        second = [[*history, {"role": "user", "content": "again"}]]
        assert replies(app) == expected(tiny, workspace, second, [RowSpec(2.0, 1, 2)])
        assert "now L1 E2 ×+2" in screen_text(app)

        await set_input(pilot, "#chat-mults", "-2, 0, 2")
        await set_input(pilot, "#chat-input", "hi")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(replies(app)) == 3 and screen.conversation.turns == 1, what="3 columns")
        rows = [RowSpec(-2.0, 1, 2), RowSpec(0.0, 1, 2), RowSpec(2.0, 1, 2)]
        assert replies(app) == expected(tiny, workspace, [[{"role": "user", "content": "hi"}]] * 3, rows)
        text = screen_text(app)
        assert "L1 E2 ×-2" in text and "L1 E2 ×+0" in text and "L1 E2 ×+2" in text

        await pilot.press("ctrl+s")
        await pilot.pause()
        saved = list((workspace / "chats").glob("chat-*.txt"))
        assert len(saved) == 1
        assert "user: hi" in saved[0].read_text() and "assistant [L1 E2 ×-2]" in saved[0].read_text()

        await pilot.press("ctrl+r")
        await pilot.pause()
        assert screen.conversation is None and len(replies(app)) == 1


async def test_chat_without_a_vector_reports_and_recovers(workspace: Path) -> None:
    app = app_for(workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("7")
        await wait_until(pilot, lambda: app.current_mode == "chat")
        await pilot.press(*"hello", "enter")
        await wait_until(pilot, lambda: any("vector file not found" in n.message for n in app._notifications),
                         timeout=60, what="the error")  # fmt: skip
        screen = app.screen
        assert not screen.busy and screen.conversation.histories == [[]]
        await set_input(pilot, "#chat-mults", "0")
        await set_input(pilot, "#chat-input", "unsteered")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.conversation.turns == 1, what="an unsteered reply")
