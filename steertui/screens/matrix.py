"""The Matrix screen: the whole study at a glance, and the keys that run, cancel and retry its cells."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.widgets import Static

from steertui.messages import DetailsReady, JobAction, OpenLog, OpenPlots
from steertui.screens.base import BaseScreen
from steertui.screens.context import TuiContext
from steertui.screens.details import CellInfo, read_details
from steertui.screens.snapshot import JobView, Snapshot
from steertui.widgets.cell_details import CellDetails
from steertui.widgets.matrix_grid import MatrixGrid
from steertui.widgets.status_line import StatusLine


class MatrixScreen(BaseScreen):
    TITLE = "Matrix"
    BINDINGS = [
        Binding("r", "act('run', 'cell')", "Run"),
        Binding("R", "act('run', 'row')", "Run row"),
        Binding("c", "act('run', 'column')", "Run column"),
        Binding("x", "act('cancel', 'cell')", "Cancel"),
        Binding("X", "act('cancel', 'row')", "Cancel row", show=False),
        Binding("t", "act('retry', 'cell')", "Retry"),
        Binding("o", "open_log", "Log"),
        Binding("p", "open_plots", "Plots"),
        Binding("s", "schedule", "Schedule all"),
        Binding("S", "stop", "Stop scheduling", show=False),
    ]

    def __init__(self, ctx: TuiContext) -> None:
        super().__init__(ctx)
        self._details_for: JobView | None = None

    def compose(self) -> ComposeResult:
        yield from self.header()
        yield StatusLine(id="status")
        with Container(id="matrix-body"):
            yield MatrixGrid(id="grid")
            yield Static("", id="matrix-empty")
            with VerticalScroll(id="details-box"):
                yield CellDetails(id="details")
        yield from self.footer()

    @property
    def grid(self) -> MatrixGrid:
        return self.query_one(MatrixGrid)

    def show_snapshot(self, snap: Snapshot) -> None:
        self.query_one(StatusLine).show(snap)
        empty = self.query_one("#matrix-empty", Static)
        empty.update(snap.problem)
        empty.display = not snap.layout.rows
        self.grid.display = bool(snap.layout.rows)
        self.grid.show(snap)
        job = self.grid.job
        if job != self._details_for:
            self._details_for = job
            self.load_details(job.id if job else None)

    def select_job(self, job_id: int) -> bool:
        """Put the cursor on `job_id`'s cell (with the latest snapshot: the screen may just have resumed)."""
        self.show_snapshot(self.snapshot)
        return self.grid.select(job_id)

    @on(MatrixGrid.Highlighted)
    def _highlighted(self, event: MatrixGrid.Highlighted) -> None:
        self._details_for = self.grid.job
        self.load_details(event.job_id)

    @work(thread=True, exclusive=True, group="details", exit_on_error=False)
    def load_details(self, job_id: int | None) -> None:
        ws = self.ctx.ws
        info = None
        if job_id is not None and job_id < 0:  # a plan cell no scheduler has recorded yet
            job = self.snapshot.jobs.get(job_id)
            note = "not scheduled yet: r runs it (and the cells it needs), s schedules every cell"
            info = CellInfo(job_id, job.cell, job.state, [("status", note)]) if job else None
        elif job_id is not None and ws.db_path.exists():
            info = read_details(ws, self.ctx.config, ws.db_path, job_id, self.ctx.clock())
        self.post_message(DetailsReady(info))

    @on(DetailsReady)
    def _details_ready(self, event: DetailsReady) -> None:
        self.query_one(CellDetails).show(event.info)

    # -- actions -------------------------------------------------------------------------------------------
    def _ids(self, scope: str) -> tuple[int, ...]:
        grid = self.grid
        if scope == "row":
            return tuple(grid.row_ids())
        if scope == "column":
            return tuple(grid.column_ids())
        return (grid.job_id,) if grid.job_id is not None else ()

    def action_act(self, action: str, scope: str) -> None:
        ids = self._ids(scope)
        if not ids:
            self.notify("no cell here", severity="warning")
            return
        self.post_message(JobAction(action, ids))

    def action_schedule(self) -> None:
        self.post_message(JobAction("schedule_all"))

    def action_stop(self) -> None:
        self.post_message(JobAction("stop"))

    def action_open_log(self) -> None:
        job = self.grid.job
        if job is None or not job.log_path:
            self.notify("this cell has no log yet (it has not run)", severity="warning")
            return
        self.post_message(OpenLog(job.log_path, to_error=job.state == "failed"))

    def action_open_plots(self) -> None:
        job = self.grid.job
        if job is not None:
            self.post_message(OpenPlots(job.model, job.layer, job.epoch))  # epoch 0 (train): the last one
