"""The Jobs screen: running, queued and failed jobs with progress bars, ETA, GPUs and pids."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from pipeline.progress import format_duration
from steertui.messages import JobAction, OpenLog, ShowCell
from steertui.screens.base import BaseScreen, table_with_columns
from steertui.screens.context import TuiContext
from steertui.screens.snapshot import JobView, Snapshot
from steertui.widgets.glyphs import bar, state_text
from steertui.widgets.status_line import StatusLine

MAX_ROWS = 500  # queued jobs beyond this are summarised in the last row
COLUMNS = ("state", "cell", "progress", "eta", "GPUs", "pid", "try", "message")


class JobsScreen(BaseScreen):
    TITLE = "Jobs"
    BINDINGS = [
        Binding("x", "act('cancel')", "Cancel"),
        Binding("t", "act('retry')", "Retry"),
        Binding("o", "open_log", "Log"),
        Binding("enter", "show_cell", "Show in matrix"),
    ]

    def __init__(self, ctx: TuiContext) -> None:
        super().__init__(ctx)
        self._keys: list[int] = []
        self._shown: dict[int, JobView] = {}

    def compose(self) -> ComposeResult:
        yield from self.header()
        yield StatusLine(id="status")
        yield table_with_columns(DataTable(id="jobs", cursor_type="row", zebra_stripes=True), COLUMNS)
        yield from self.footer()

    def show_snapshot(self, snap: Snapshot) -> None:
        self.query_one(StatusLine).show(snap)
        table = self.query_one(DataTable)
        jobs = snap.active()
        extra = len(jobs) - MAX_ROWS
        jobs = jobs[:MAX_ROWS]
        keys = [j.id for j in jobs]
        if keys != self._keys:
            cursor = self.selected_id()
            table.clear()
            for job in jobs:
                table.add_row(*self._cells(job), key=str(job.id))
            if extra > 0:
                table.add_row("", Text(f"… and {extra} more", style="bright_black"), *[""] * 6, key="more")
            self._keys = keys
            if cursor in keys:
                table.move_cursor(row=keys.index(cursor))
        else:
            for job in jobs:
                if self._shown.get(job.id) != job:
                    for name, value in zip(COLUMNS, self._cells(job), strict=True):
                        table.update_cell(str(job.id), name, value)
        self._shown = {j.id: j for j in jobs}

    def _cells(self, job: JobView) -> tuple[Text | str, ...]:
        gpus = ",".join(map(str, json.loads(job.gpus or "[]"))) or "cpu"
        eta = format_duration(job.eta_s) if job.eta_s and job.state == "running" else ""
        pid = str(job.pid) if job.pid and job.state in ("running", "cancelling") else ""
        return (state_text(job.shown_state), job.cell, bar(job.fraction), eta, gpus, pid, str(job.attempts),
                job.message.splitlines()[0][:80] if job.message else "")  # fmt: skip

    def selected_id(self) -> int | None:
        table = self.query_one(DataTable)
        if not self._keys or table.cursor_row >= len(self._keys):
            return None
        return self._keys[table.cursor_row]

    def action_act(self, action: str) -> None:
        jid = self.selected_id()
        if jid is None:
            self.notify("no job selected", severity="warning")
            return
        self.post_message(JobAction(action, (jid,)))

    def action_open_log(self) -> None:
        job = self.snapshot.jobs.get(self.selected_id() or -1)
        if job is None or not job.log_path:
            self.notify("this job has no log yet", severity="warning")
            return
        self.post_message(OpenLog(job.log_path, to_error=job.state == "failed"))

    def action_show_cell(self) -> None:
        jid = self.selected_id()
        if jid is not None:
            self.post_message(ShowCell(jid))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_show_cell()
