"""The matrix's details panel: the selected cell's config, timings, artifacts, cost and last log lines."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from steertui.screens.details import CellInfo
from steertui.widgets.glyphs import state_text


class CellDetails(Static):
    """Shows a `CellInfo`; keeps the last one so the panel does not flicker between polls."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.info: CellInfo | None = None

    def show(self, info: CellInfo | None) -> None:
        self.info = info
        if info is None:
            self.update(Text("Move the cursor onto a cell to see its details.", style="bright_black"))
            return
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        title = Text(info.cell, style="bold")
        title.append("  ")
        title.append_text(state_text(info.state))
        table.add_row(Text(""), title)
        for label, value in info.lines:
            table.add_row(label, value)
        if info.log_path:
            table.add_row("log", info.log_path)
        if info.state == "failed" and info.error:
            table.add_row(Text("error", style="bold red"), Text(info.error.splitlines()[0][:300], style="red"))
        for line in info.log_tail:
            table.add_row("", Text(line[:400], style="bright_black"))
        self.update(table)
