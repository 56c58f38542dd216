"""One line above the matrix: who schedules, how many cells are in each state, and the judge spend."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from steertui.screens.snapshot import STATES, Snapshot
from steertui.widgets.glyphs import GLYPHS

WORDS_FROM = 110  # narrower terminals get glyphs and counts only


class StatusLine(Widget):
    DEFAULT_CSS = "StatusLine { height: 1; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot = Snapshot()

    def show(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.refresh()

    def render(self) -> Text:
        snap = self.snapshot
        words = self.size.width >= WORDS_FROM
        text = Text(no_wrap=True, overflow="ellipsis")
        scheduling = snap.role.kind == "scheduler"
        text.append("● " if scheduling else "○ ", style="green" if scheduling else "bright_black")
        text.append(snap.role.text, style="bold")
        text.append(" │ ")
        for state in STATES:
            n = snap.counts.get(state, 0)
            if n:
                sym, colour = GLYPHS[state]
                text.append(f"{sym} {n} {state}  " if words else f"{sym}{n} ", style=colour)
        if not snap.counts:
            text.append("no cells ", style="bright_black")
        text.append("│ ")
        text.append(f"${snap.spend_usd:.2f}")
        text.append(f" of ${snap.budget_usd:.2f}" if snap.budget_usd is not None else " spent")
        return text
