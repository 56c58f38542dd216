"""The help screen: every key of the current screen and of the app, and what the matrix glyphs mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from steertui.widgets.glyphs import legend

ABOUT = (
    "Screens: 1 Matrix · 2 Jobs · 3 Logs · 4 GPUs · 5 Costs · 6 Plots · 7 Chat.  ctrl+p: command palette.\n"
    "Workers run in their own sessions: quitting or losing the SSH connection leaves them running; "
    "reopen steertui and press r on a running cell (or s) to follow them again."
)


def key_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None,
                  padding=(0, 2))  # fmt: skip
    table.add_column(style="bold cyan", no_wrap=True, min_width=8)
    table.add_column()
    for key, description in rows:
        table.add_row(key, description)
    return table


def bindings_of(screen: Screen[object]) -> list[Binding]:
    seen: list[Binding] = []
    for binding in getattr(type(screen), "BINDINGS", []):
        if isinstance(binding, Binding) and binding.description:
            seen.append(binding)
    return seen


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, under: Screen[object], app_bindings: list[Binding]) -> None:
        super().__init__()
        self.under = under
        self.app_bindings = app_bindings

    def rows(self, bindings: list[Binding]) -> list[tuple[str, str]]:
        return [(self.app.get_key_display(b), b.description) for b in bindings if b.description]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text("steertui — keys", style="bold"))
            yield Static(Text("cells: ").append_text(legend()))
            yield Static(key_table(f"\n{self.under.title or 'This screen'}", self.rows(bindings_of(self.under))))
            yield Static(key_table("\nEverywhere", self.rows(self.app_bindings)))
            yield Static(Text("\n" + ABOUT, style="bright_black"))
