"""App-wide messages: workers post them (thread-safe), handlers on the app and screens own all state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from steertui.screens.details import CellInfo
from steertui.screens.snapshot import Snapshot


@dataclass
class SnapshotReady(Message):
    """The engine finished a pass: fresh jobs, layout, role, events and notices."""

    snapshot: Snapshot


@dataclass
class JobAction(Message):
    """Run, retry or cancel jobs; or `schedule_all` / `stop` (no ids)."""

    action: str
    job_ids: tuple[int, ...] = ()


@dataclass
class OpenLog(Message):
    """Show a log on the Logs screen (`to_error`: jump to its last error line)."""

    path: str
    to_error: bool = False


@dataclass
class OpenPlots(Message):
    """Show the plots of one model/layer/epoch."""

    model: str
    layer: int
    epoch: int


@dataclass
class ShowCell(Message):
    """Select a job's cell on the Matrix screen."""

    job_id: int


@dataclass
class DetailsReady(Message):
    info: CellInfo | None


@dataclass
class PanelData(Message):
    """Data read by a screen's own worker (GPUs, costs, plots): `kind` names the panel."""

    kind: str
    data: Any = None
    error: str = ""


@dataclass
class ChatStage(Message):
    """Model loading progress: `step` of `total`, with what is happening."""

    text: str
    step: int  # -1: loading failed
    total: int


@dataclass
class ChatTokens(Message):
    """New text for each column of the current turn."""

    turn: int
    texts: list[str] = field(default_factory=list)


@dataclass
class ChatDone(Message):
    turn: int
    replies: list[str] = field(default_factory=list)
    error: str = ""
