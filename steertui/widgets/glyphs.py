"""How job states look everywhere in the app: a symbol and a colour (never colour alone)."""

from __future__ import annotations

import re

from rich.style import Style
from rich.text import Text

GLYPHS: dict[str, tuple[str, str]] = {
    "pending": ("·", "bright_black"),
    "queued": ("○", "cyan"),
    "running": ("▶", "bold yellow"),
    "cancelling": ("⊘", "yellow"),
    "done": ("✔", "green"),
    "failed": ("✘", "bold red"),
    "cancelled": ("⊘", "magenta"),
    "skipped": ("–", "magenta"),
}
STYLES: dict[str, Style] = {state: Style.parse(colour) for state, (_, colour) in GLYPHS.items()}


def glyph(state: str) -> str:
    return GLYPHS.get(state, ("?", ""))[0]


def state_text(state: str, *, word: bool = True) -> Text:
    """`✔ done` in the state's colour."""
    sym, colour = GLYPHS.get(state, ("?", ""))
    return Text(f"{sym} {state}" if word else sym, style=colour)


def bar(fraction: float | None, width: int = 12) -> Text:
    """A text progress bar with its percentage (`████░░░░  45%`); blank when unknown."""
    if fraction is None:
        return Text(" " * (width + 5))
    filled = round(fraction * width)
    text = Text("█" * filled, style="yellow")
    text.append("░" * (width - filled), style="bright_black")
    text.append(f" {100 * fraction:3.0f}%")
    return text


def legend(*, compact: bool = False) -> Text:
    """Every state's glyph and name (`compact`: one line that fits 80 columns)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for state in GLYPHS:
        if compact and state == "cancelling":
            continue
        text.append_text(state_text(state))
        text.append(" " if compact else "  ")
    text.rstrip()
    return text


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
CONTROLS = {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {0x7F: 0x2421}  # ␀ ␁ … ␡


def printable(text: str) -> str:
    """Text safe to draw: ANSI escapes dropped, a carriage-return progress line reduced to its last state,
    other control characters shown as their visible symbols (model output and logs may hold any byte)."""
    text = ANSI.sub("", text)
    if "\r" in text:
        text = "\n".join(line.rsplit("\r", 1)[-1] if line.strip("\r") else "" for line in text.split("\n"))
    return text.translate(CONTROLS)
