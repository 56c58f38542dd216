"""The Logs screen: every worker log, followed live, searchable, with jumps between error lines."""

from __future__ import annotations

import re
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from steertui.messages import PanelData
from steertui.screens.base import BaseScreen
from steertui.screens.context import TuiContext
from steertui.screens.details import relative
from steertui.widgets.log_view import ERROR_BYTES, LogView

TAIL_S = 0.5
LIST_EVERY = 20  # ticks between re-reading the logs folder (10 s)


class LogsScreen(BaseScreen):
    TITLE = "Logs"
    BINDINGS = [
        Binding("f", "toggle_follow", "Follow"),
        Binding("slash", "search", "Search"),
        Binding("n", "find(False)", "Next"),
        Binding("N", "find(True)", "Prev", show=False),
        Binding("e", "error(False)", "Next error"),
        Binding("E", "error(True)", "Prev error"),
        Binding("g", "top", "Top", show=False),
        Binding("G", "bottom", "End", show=False),
        Binding("escape", "close_search", "Close search", show=False),
    ]

    def __init__(self, ctx: TuiContext) -> None:
        super().__init__(ctx)
        self.query_text = ""
        self._to_error = False
        self._indexing = False
        self._ticks = 0

    def compose(self) -> ComposeResult:
        yield from self.header()
        with Horizontal(id="logs-body"):
            yield OptionList(id="log-files")
            with Vertical(id="log-pane"):
                yield Static("no log open: pick one on the left, or press o on a cell", id="log-title")
                yield LogView(id="log")
                yield Input(placeholder="search (enter: find, escape: close)", id="log-search")
        yield from self.footer()

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#log-search").display = False
        self.set_timer(TAIL_S, self._tail)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.list_files()

    # -- files -----------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="log-files", exit_on_error=False)
    def list_files(self) -> None:
        logs = self.ctx.ws.logs_dir
        files = sorted(logs.glob("*.log"), key=lambda p: p.name) if logs.is_dir() else []
        self.post_message(PanelData("log-files", files))

    @on(PanelData)
    def _panel_data(self, event: PanelData) -> None:
        if event.kind == "log-files":
            options = self.query_one(OptionList)
            ids = [str(p) for p in event.data]
            if ids == [options.get_option_at_index(i).id for i in range(options.option_count)]:
                return
            current = options.highlighted_option.id if options.highlighted_option else None
            options.clear_options()
            options.add_options([Option(p.name, id=str(p)) for p in event.data])
            if current in ids:
                options.highlighted = ids.index(current)
        elif event.kind == "log-indexed":
            self._indexing = False
            if not event.data:
                return
            self.view.grown()
            if self._to_error:
                self._to_error = False
                self.action_error(True)
        elif event.kind == "log-found":
            if event.data is None:
                self.notify(f"no match for {event.error!r}", severity="warning")
            else:
                self.view.goto(event.data)

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.open_path(Path(event.option.id))
            self.view.focus()

    def open_path(self, path: Path, *, to_error: bool = False) -> None:
        """Show `path` from its end (or from its last error line)."""
        self.view.open(path)
        self._to_error = to_error
        self.query_one("#log-title", Static).update(relative(self.ctx.ws, path))
        self._index_now()

    # -- tailing ---------------------------------------------------------------------------------------
    def _tail(self) -> None:
        """Every TAIL_S: index what the open log gained, one worker at a time; now and then, list new logs."""
        if self.is_current:
            self._index_now()
            self._ticks += 1
            if self._ticks % LIST_EVERY == 0:
                self.list_files()
        self.set_timer(TAIL_S, self._tail)

    def _index_now(self) -> None:
        if self.view.index is not None and not self._indexing:
            self._indexing = True
            self.index_log()

    @work(thread=True, group="log-index", exit_on_error=False)
    def index_log(self) -> None:
        index = self.view.index
        grew = False
        try:
            grew = index is not None and index.update()
        finally:
            self.post_message(PanelData("log-indexed", grew))

    # -- search ----------------------------------------------------------------------------------------
    def action_toggle_follow(self) -> None:
        self.view.follow = not self.view.follow
        if self.view.follow:
            self.view.grown()
        self.notify("following the end" if self.view.follow else "stopped following", timeout=2)

    def action_top(self) -> None:
        self.view.goto(0)

    def action_bottom(self) -> None:
        self.view.action_scroll_end()

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.display = True
        box.focus()

    def action_close_search(self) -> None:
        self.query_one("#log-search").display = False
        self.view.focus()

    @on(Input.Submitted, "#log-search")
    def _search(self, event: Input.Submitted) -> None:
        self.query_text = event.value
        self.view.search = re.compile(re.escape(event.value), re.I) if event.value else None
        self.action_close_search()
        self.action_find(False)

    def action_find(self, backwards: bool) -> None:
        if not self.query_text:
            self.action_search()
            return
        self.find(re.compile(re.escape(self.query_text.encode()), re.I), backwards, self.query_text)

    def action_error(self, backwards: bool) -> None:
        self.find(ERROR_BYTES, backwards, "error lines")

    @work(thread=True, exclusive=True, group="log-search", exit_on_error=False)
    def find(self, pattern: re.Pattern[bytes], backwards: bool, label: str) -> None:
        index = self.view.index
        if index is None:
            return
        view = self.view
        start = view.top_line if not backwards else (view.marked if view.marked is not None else len(index))
        found = index.find(pattern, start, backwards=backwards)
        if found is None:  # wrap around, like a pager
            found = index.find(pattern, len(index) if backwards else -1, backwards=backwards)
        self.post_message(PanelData("log-found", found, label))
