"""The base of every screen: the shared context and a hook for each new store snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from steertui.screens.context import TuiContext
from steertui.screens.snapshot import Snapshot


class BaseScreen(Screen[None]):
    """Screens get `show_snapshot` for every poll while they are the current screen, and on resume."""

    TITLE = ""

    def __init__(self, ctx: TuiContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.title = self.TITLE
        self.sub_title = ctx.ws.root.name

    def header(self) -> ComposeResult:
        yield Header(icon="≡")

    def footer(self) -> ComposeResult:
        yield Footer()

    def on_mount(self) -> None:
        """Subclasses set their widgets up first, then call this (so the first snapshot finds them ready)."""
        self.watch(self.app, "snapshot", self._snapshot_changed, init=False)
        self.show_snapshot(self.snapshot)

    def on_screen_resume(self) -> None:
        self.show_snapshot(self.snapshot)

    @property
    def snapshot(self) -> Snapshot:
        snap: Snapshot = getattr(self.app, "snapshot", Snapshot())
        return snap

    def _snapshot_changed(self, snap: Snapshot) -> None:
        if self.is_current:
            self.show_snapshot(snap)

    def show_snapshot(self, snap: Snapshot) -> None:
        """Update the screen from a new snapshot (only called while it is current)."""


class PolledScreen(BaseScreen):
    """A screen that reads its own source (not the store snapshot) every `REFRESH_S` while current, and on resume."""

    REFRESH_S = 5.0

    def on_mount(self) -> None:
        super().on_mount()
        self.set_timer(self.REFRESH_S, self._poll)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.load()

    def _poll(self) -> None:
        if self.is_current:
            self.load()
        self.set_timer(self.REFRESH_S, self._poll)

    def load(self) -> object:
        """Start reading the source (a thread worker that posts its result back)."""
        return None


def table_with_columns(table: DataTable[Any], columns: Sequence[str]) -> DataTable[Any]:
    """A table whose columns exist before it is mounted (a snapshot may arrive first)."""
    for name in columns:
        table.add_column(name, key=name)
    return table
