"""A log viewer over a `LineIndex`: renders only the visible lines, follows the end while the file grows,
marks search hits and error lines."""

from __future__ import annotations

import re
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from steertui.widgets.line_index import LineIndex

ERROR_RE = re.compile(r"(?i)traceback|error\b|exception\b|\bfailed\b|\bkilled\b|out of memory")
ERROR_BYTES = re.compile(ERROR_RE.pattern.encode())
GUTTER = Style(color="bright_black")
ERROR = Style(color="red")
MARK = Style(reverse=True)
MATCH = Style(bgcolor="yellow", color="black")


class LogView(ScrollView, can_focus=True):
    """Scrolls with the usual keys; `follow` keeps the view at the end as lines arrive."""

    follow: reactive[bool] = reactive(True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index: LineIndex | None = None
        self.marked: int | None = None
        self.search: re.Pattern[str] | None = None

    @property
    def path(self) -> Path | None:
        return self.index.path if self.index else None

    def open(self, path: Path) -> LineIndex:
        """Switch to `path`; the caller indexes it (in a worker) and then calls `grown`."""
        self.index = LineIndex(path)
        self.marked = None
        self.follow = True
        self.virtual_size = Size(self.size.width, 0)
        self.scroll_to(0, 0, animate=False)
        self.refresh()
        return self.index

    def grown(self) -> None:
        """The index has new lines: resize, and stay at the end when following."""
        lines = len(self.index) if self.index else 0
        self.virtual_size = Size(self.scrollable_content_region.width, lines)
        if self.follow:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)
        self.refresh()

    def goto(self, line: int) -> None:
        """Mark `line` and bring it to the middle of the view (following stops)."""
        self.follow = False
        self.marked = line
        self.call_after_refresh(self.scroll_to, 0, max(0, line - self.size.height // 2), animate=False, immediate=True)
        self.refresh()

    @property
    def top_line(self) -> int:
        return self.marked if self.marked is not None else int(self.scroll_offset.y)

    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.follow = False
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self.follow = False
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.follow = True
        self.grown()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        index = self.index
        i = int(self.scroll_offset.y) + y
        if index is None or i >= len(index):
            return Strip.blank(width)
        digits = max(4, len(str(len(index))))
        text = index.line(i)
        body = Text(text, style=ERROR if ERROR_RE.search(text) else "", no_wrap=True)
        if self.search is not None:
            body.highlight_regex(self.search, MATCH)
        if i == self.marked:
            body.stylize(MARK)
        room = max(1, width - digits - 1)
        if body.cell_len > room:
            body.truncate(room - 1)
            body.append("…", style=GUTTER)
        segments = [Segment(f"{i + 1:>{digits}} ", GUTTER), *body.render(self.app.console)]
        return Strip(segments).adjust_cell_length(width)
