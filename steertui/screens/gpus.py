"""The GPUs screen: NVML utilisation, memory and temperature, our leases, and processes that are not ours."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from steertui.messages import PanelData
from steertui.screens.base import PolledScreen, table_with_columns
from steertui.widgets.glyphs import bar

COLUMNS = ("GPU", "name", "util", "memory", "temp", "lease", "foreign processes")


@dataclass(frozen=True)
class GpuRow:
    index: int
    name: str
    utilization: int
    used_mib: int
    total_mib: int
    temperature: int
    lease: str  # "train:…:L1 (pid 123)" or ""
    foreign: str  # "4242 python 2.0 GiB, …" or ""


def read_gpus(db: Path) -> list[GpuRow]:
    """GPU inventory joined with the store's leases (the store may not exist yet)."""
    import psutil

    from steertui.gpus import inventory

    leases: dict[int, tuple[str, int | None]] = {}
    if db.exists():
        from pipeline.store import connect

        conn = connect(db, readonly=True)
        try:
            rows = conn.execute(
                "SELECT l.gpu, l.pid, COALESCE(j.cell, '?') FROM gpu_leases l LEFT JOIN jobs j ON j.id = l.job_id"
            ).fetchall()
        finally:
            conn.close()
        leases = {int(g): (str(cell), pid) for g, pid, cell in rows}
    ours = {pid for _, pid in leases.values() if pid}
    out = []
    for gpu in inventory():
        cell, pid = leases.get(gpu.index, ("", None))
        lease = f"{cell} (pid {pid})" if cell and pid else cell
        foreign = [f"{p} {_name(psutil, p)} {mib / 1024:.1f} GiB" for p, mib in gpu.processes if p not in ours]
        out.append(GpuRow(gpu.index, gpu.name, gpu.utilization, gpu.memory_used_mib, gpu.memory_total_mib,
                          gpu.temperature, lease, ", ".join(foreign)))  # fmt: skip
    return out


def _name(psutil: Any, pid: int) -> str:
    try:
        return str(psutil.Process(pid).name())
    except psutil.Error:
        return "?"


class GpusScreen(PolledScreen):
    TITLE = "GPUs"
    REFRESH_S = 2.0

    def compose(self) -> ComposeResult:
        yield from self.header()
        yield Static("reading NVML…", id="gpu-note")
        yield table_with_columns(DataTable(id="gpus", cursor_type="row"), COLUMNS)
        yield from self.footer()

    @work(thread=True, exclusive=True, group="gpus", exit_on_error=False)
    def load(self) -> None:
        try:
            self.post_message(PanelData("gpus", read_gpus(self.ctx.ws.db_path)))
        except Exception as exc:  # NVML and psutil raise their own types; show them, do not crash
            self.post_message(PanelData("gpus", [], f"{type(exc).__name__}: {exc}"))

    @on(PanelData)
    def _data(self, event: PanelData) -> None:
        if event.kind != "gpus":
            return
        rows: list[GpuRow] = event.data
        note = self.query_one("#gpu-note", Static)
        if event.error:
            note.update(Text(f"cannot read GPUs: {event.error}", style="red"))
        elif not rows:
            note.update("No GPUs (NVML not available): model jobs run in CPU slots.")
        else:
            leased = sum(1 for r in rows if r.lease)
            note.update(f"{len(rows)} GPUs · {leased} leased by steertui · refreshed every {self.REFRESH_S:g}s")
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for r in rows:
            memory = bar(r.used_mib / r.total_mib if r.total_mib else None, 8)
            memory.append(f" {r.used_mib / 1024:.1f}/{r.total_mib / 1024:.0f} GiB")
            util = bar(r.utilization / 100, 8)
            temp = f"{r.temperature}°C" if r.temperature else ""
            foreign = Text(r.foreign, style="bold red") if r.foreign else ""
            table.add_row(str(r.index), r.name, util, memory, temp, r.lease, foreign, key=str(r.index))
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))
