"""The matrix: rows model/layer, columns train then epoch × stage, one glyph (and % while running) per cell.

Drawn with the line API: a refresh swaps in the new snapshot and repaints only the visible lines, so an
8,000-cell matrix costs what its visible part costs. Row labels and the two header lines stay fixed while
the cursor scrolls the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from steertui.screens.snapshot import JobView, Snapshot
from steertui.widgets.glyphs import GLYPHS, STYLES, legend

CELL_W = 6
HEADER_H = 2
MAX_LABEL = 28
CURSOR = Style(reverse=True)
HEADER = Style(bold=True)
DIM = Style(color="bright_black")
LEGEND = legend(compact=True)


class MatrixGrid(Widget, can_focus=True):
    """Keyboard-driven grid of the plan's cells; posts `Highlighted` when the cursor lands on a cell."""

    BINDINGS = [
        Binding("up", "move(-1, 0)", "Up", show=False),
        Binding("down", "move(1, 0)", "Down", show=False),
        Binding("left", "move(0, -1)", "Left", show=False),
        Binding("right", "move(0, 1)", "Right", show=False),
        Binding("pageup", "move(-10, 0)", "Page up", show=False),
        Binding("pagedown", "move(10, 0)", "Page down", show=False),
        Binding("home", "jump(0)", "First column", show=False),
        Binding("end", "jump(-1)", "Last column", show=False),
    ]

    cursor: reactive[tuple[int, int]] = reactive((0, 0), layout=False)

    @dataclass
    class Highlighted(Message):
        """The cursor is on `job_id` (None: an empty spot of the grid)."""

        job_id: int | None

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot = Snapshot()
        self.row_offset = 0
        self.col_offset = 0
        self._label_w = 0
        self._last_highlight: int | None = -1

    # -- data ------------------------------------------------------------------------------------------
    def show(self, snapshot: Snapshot) -> None:
        """Adopt a new snapshot and repaint the visible part."""
        self.snapshot = snapshot
        labels = snapshot.layout.row_labels
        self._label_w = min(max((len(s) for s in labels), default=0), MAX_LABEL) + 2
        self.cursor = self._clamp(self.cursor)
        self._scroll_to_cursor()
        self._post_highlight()
        self.refresh()

    @property
    def job(self) -> JobView | None:
        """The job under the cursor."""
        jid = self.job_id
        return self.snapshot.jobs.get(jid) if jid is not None else None

    @property
    def job_id(self) -> int | None:
        grid = self.snapshot.layout.grid
        r, c = self.cursor
        if 0 <= r < len(grid) and 0 <= c < len(grid[r]):
            return grid[r][c]
        return None

    def row_ids(self) -> list[int]:
        grid = self.snapshot.layout.grid
        return [j for j in grid[self.cursor[0]] if j is not None] if grid else []

    def column_ids(self) -> list[int]:
        c = self.cursor[1]
        return [line[c] for line in self.snapshot.layout.grid if c < len(line) and line[c] is not None]  # type: ignore[misc]

    def select(self, job_id: int) -> bool:
        """Move the cursor to `job_id`'s cell; False when it is not in the matrix."""
        pos = self.snapshot.layout.position(job_id)
        if pos is None:
            return False
        self.cursor = pos
        self._scroll_to_cursor()
        self._post_highlight()
        self.refresh()
        return True

    # -- movement --------------------------------------------------------------------------------------
    def action_move(self, rows: int, cols: int) -> None:
        r, c = self.cursor
        self.cursor = self._clamp((r + rows, c + cols))
        self._scroll_to_cursor()
        self._post_highlight()
        self.refresh()

    def action_jump(self, col: int) -> None:
        ncols = len(self.snapshot.layout.columns)
        self.cursor = self._clamp((self.cursor[0], col if col >= 0 else ncols - 1))
        self._scroll_to_cursor()
        self._post_highlight()
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        if event.y >= HEADER_H and event.x >= self._label_w:
            row = self.row_offset + event.y - HEADER_H
            col = self.col_offset + (event.x - self._label_w) // CELL_W
            self.cursor = self._clamp((row, col))
            self._post_highlight()
            self.refresh()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.action_move(3, 0)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.action_move(-3, 0)

    def on_resize(self, event: events.Resize) -> None:
        self._scroll_to_cursor()

    def _clamp(self, pos: tuple[int, int]) -> tuple[int, int]:
        layout = self.snapshot.layout
        rows, cols = len(layout.rows), len(layout.columns)
        return (max(0, min(pos[0], rows - 1)), max(0, min(pos[1], cols - 1)))

    def _visible(self) -> tuple[int, int]:
        rows = max(1, self.size.height - HEADER_H)
        cols = max(1, (self.size.width - self._label_w) // CELL_W)
        return rows, cols

    def _scroll_to_cursor(self) -> None:
        rows, cols = self._visible()
        r, c = self.cursor
        self.row_offset = min(max(self.row_offset, r - rows + 1), r)
        self.col_offset = min(max(self.col_offset, c - cols + 1), c)
        self.row_offset = max(0, min(self.row_offset, len(self.snapshot.layout.rows) - rows))
        self.col_offset = max(0, min(self.col_offset, len(self.snapshot.layout.columns) - cols))

    def _post_highlight(self) -> None:
        jid = self.job_id
        if jid != self._last_highlight:
            self._last_highlight = jid
            self.post_message(self.Highlighted(jid))

    # -- drawing ---------------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._group_line(width)
        if y == 1:
            return self._stage_line(width)
        row = self.row_offset + y - HEADER_H
        if row >= len(self.snapshot.layout.rows):
            if y == self.size.height - 1 and self.snapshot.layout.rows:
                return Strip(list(LEGEND.render(self.app.console))).adjust_cell_length(width)
            return Strip.blank(width)
        return self._cell_line(row, width)

    def _columns(self) -> range:
        _, cols = self._visible()
        return range(self.col_offset, min(self.col_offset + cols, len(self.snapshot.layout.columns)))

    def _group_line(self, width: int) -> Strip:
        """`E2 ─────────────` over each epoch's columns (train has none)."""
        columns = self.snapshot.layout.columns
        more_left = "◀" if self.col_offset > 0 else " "
        segments = [Segment(more_left.ljust(self._label_w), DIM)]
        visible = self._columns()
        for c in visible:
            epoch = columns[c].epoch
            if not epoch:
                segments.append(Segment(" " * CELL_W))
                continue
            first = c == visible.start or columns[c - 1].epoch != epoch
            last = c + 1 == len(columns) or columns[c + 1].epoch != epoch
            text = (f"E{epoch} " if first else "").ljust(CELL_W - 1, "─") + (" " if last else "─")
            segments.append(Segment(text, HEADER))
        if visible.stop < len(columns):
            segments.append(Segment("▶", DIM))
        return Strip(segments).adjust_cell_length(width)

    def _stage_line(self, width: int) -> Strip:
        columns = self.snapshot.layout.columns
        segments = [Segment(" " * self._label_w)]
        cur = self.cursor[1]
        for c in self._columns():
            style = LABEL_CURSOR if c == cur else HEADER
            segments.append(Segment(columns[c].label[: CELL_W - 1].center(CELL_W - 1), style))
            segments.append(Segment(" "))
        return Strip(segments).adjust_cell_length(width)

    def _cell_line(self, row: int, width: int) -> Strip:
        snap = self.snapshot
        on_row = row == self.cursor[0]
        cursor_col = self.cursor[1] if on_row else -1
        label = snap.layout.row_labels[row][: self._label_w - 1].ljust(self._label_w)
        segments = [Segment(label, LABEL_CURSOR if on_row else HEADER)]
        line, jobs = snap.layout.grid[row], snap.jobs
        visible = self._columns()
        for c in visible:
            jid = line[c]
            segments.append(cell_segment(jobs.get(jid) if jid is not None else None, c == cursor_col))
            segments.append(GAP)
        return Strip(segments, self._label_w + CELL_W * len(visible)).adjust_cell_length(width)


def _segments() -> dict[tuple[str, bool], Segment]:
    out = {}
    for state, (sym, _) in GLYPHS.items():
        out[(state, False)] = Segment(sym.center(CELL_W - 1), STYLES[state])
        out[(state, True)] = Segment(sym.center(CELL_W - 1), STYLES[state] + CURSOR)
    out[("", False)] = Segment(" " * (CELL_W - 1))
    out[("", True)] = Segment(" " * (CELL_W - 1), CURSOR)
    return out


SEGMENTS = _segments()  # a refresh builds no styles or strings for cells that show only a glyph
GAP = Segment(" ")
LABEL_CURSOR = HEADER + CURSOR
RUNNING = (STYLES["running"], STYLES["running"] + CURSOR)


def cell_segment(job: JobView | None, cursor: bool) -> Segment:
    """Five columns: the state's glyph, centred, or `▶ 45%` while running with known progress."""
    if job is None:
        return SEGMENTS[("", cursor)]
    state = job.shown_state
    if state == "running" and job.progress_total and job.progress_done is not None:
        pct = 100 * min(1.0, max(0.0, job.progress_done / job.progress_total))
        return Segment(f"▶{pct:>3.0f}%", RUNNING[cursor])
    return SEGMENTS.get((state, cursor)) or SEGMENTS[("", cursor)]


def cell_text(job: JobView | None) -> tuple[str, Style]:
    """The text and style of a cell (for other renderers of the same matrix)."""
    seg = cell_segment(job, False)
    return seg.text, seg.style or Style.null()
