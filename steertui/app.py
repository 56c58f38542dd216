"""The steertui Textual app: screens (one mode each), app-wide keys, and the engine poll loop.

The engine (`steertui.screens.engine`) runs in a thread worker: it applies queued user actions, ticks the
scheduler when this app is the workspace's scheduler, and reads the store. The next pass is scheduled
only when the previous one has finished (a self-rescheduling timer), so passes never overlap and the
event loop never waits on SQLite, NVML or the filesystem. `make_app` is shared by the CLI and the tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from pipeline.config import Config
from pipeline.workspace import Workspace
from steertui.messages import JobAction, OpenLog, OpenPlots, ShowCell, SnapshotReady
from steertui.screens.context import ChatOptions, TuiContext
from steertui.screens.engine import Command, Engine, EngineOptions
from steertui.screens.snapshot import EventView, Snapshot

if TYPE_CHECKING:
    from textual.command import Provider

SCREENS = ("matrix", "jobs", "logs", "gpus", "costs", "plots", "chat")
SCREEN_TITLES = {name: "GPUs" if name == "gpus" else name.title() for name in SCREENS}
EVENT_TOASTS = {"failed": "error", "retry": "warning", "skipped": "warning", "launch": "information",
                "done": "information", "cancelled": "information"}  # fmt: skip
MAX_TOASTS = 3  # more events than this in one poll become one summary toast


@dataclass
class AppOptions:
    """How the app runs; tests inject a clock, a fast poll and a fake executor."""

    schedule: bool = False  # be the scheduler for the whole plan from the start (`steertui run`)
    poll_s: float = 1.0
    clock: Callable[[], float] = time.time
    engine: EngineOptions = field(default_factory=EngineOptions)
    chat: ChatOptions = field(default_factory=ChatOptions)


def _steer_commands() -> type[Provider]:
    from steertui.screens.commands import SteerCommands  # deferred: textual.command is slow to import

    return SteerCommands


def _screen(name: str, ctx: TuiContext) -> Callable[[], Screen[Any]]:
    """A factory that imports the screen's module when the mode is first shown (a faster start)."""

    def make() -> Screen[Any]:
        import importlib

        module = importlib.import_module(f"steertui.screens.{name}")
        screen: Screen[Any] = getattr(module, f"{name.title()}Screen")(ctx)
        return screen

    return make


class SteerApp(App[int]):
    TITLE = "steertui"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {_steer_commands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        *(
            Binding(str(i), f"switch_mode('{name}')", SCREEN_TITLES[name], show=False)
            for i, name in enumerate(SCREENS, 1)
        ),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    snapshot: reactive[Snapshot] = reactive(Snapshot, always_update=True, init=False)

    def __init__(self, ws: Workspace, config: Config | None, options: AppOptions | None = None) -> None:
        super().__init__()
        self.options = options or AppOptions()
        self.ctx = TuiContext(ws, config, self.options.clock, self.options.chat)
        self.engine = Engine(ws, config, self.options.engine)
        self.sub_title = str(ws.root)
        self.polls = 0
        self._shown = 0  # fingerprint of the snapshot on screen
        self._polling = False
        self._poll_again = False
        self._timer: Timer | None = None
        for name in SCREENS:
            self.add_mode(name, _screen(name, self.ctx))
        if self.options.schedule:
            self.engine.submit(Command("schedule_all"))

    def on_mount(self) -> None:
        self.switch_mode("matrix")
        self.poll_now()

    def on_unmount(self) -> None:
        self.engine.close()

    # -- the engine loop ---------------------------------------------------------------------------------
    def poll_now(self) -> None:
        """Run an engine pass now, or right after the one in progress (one timer chain, never two passes)."""
        if self._polling:
            self._poll_again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._polling = True
        self._poll_again = False
        self.engine_pass()

    @work(thread=True, group="engine", exit_on_error=False)
    def engine_pass(self) -> None:
        self.post_message(SnapshotReady(self.engine.step()))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "engine" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self._polling = False
            if event.state == WorkerState.ERROR:
                self.notify(f"{worker.error}", title="store poll failed", severity="error")
            if self._poll_again:
                self.call_later(self.poll_now)
            else:
                self._timer = self.set_timer(self.options.poll_s, self.poll_now)
        elif event.state == WorkerState.ERROR and worker.error is not None:
            self.notify(f"{type(worker.error).__name__}: {worker.error}", title=worker.group, severity="error")

    @on(SnapshotReady)
    def _snapshot_ready(self, event: SnapshotReady) -> None:
        snap = event.snapshot
        self.polls += 1
        if snap.digest != self._shown or not snap.digest:  # an idle workspace costs the UI nothing
            self._shown = snap.digest
            self.snapshot = snap
        for notice in snap.notices:
            self.notify(notice.message, title=notice.title, severity=notice.severity,  # type: ignore[arg-type]
                        timeout=10 if notice.severity == "error" else 4)  # fmt: skip
        self._toast_events(snap.events)

    def _toast_events(self, events: list[EventView]) -> None:
        shown = [e for e in events if e.kind in EVENT_TOASTS]
        failed = [e for e in shown if e.kind == "failed"]
        for event in failed:
            self.notify(event.message, title=f"failed: {event.cell}", severity="error", timeout=15)
        rest = [e for e in shown if e.kind != "failed"]
        if len(rest) > MAX_TOASTS:
            kinds = ", ".join(f"{n} {k}" for k, n in _count(rest).items())
            self.notify(kinds, title=f"{len(rest)} job events")
            return
        for event in rest:
            severity = EVENT_TOASTS[event.kind]
            self.notify(event.message or event.kind, title=f"{event.kind}: {event.cell}",
                        severity=severity, timeout=6 if severity == "warning" else 3)  # type: ignore[arg-type]  # fmt: skip

    # -- app-wide messages ------------------------------------------------------------------------------
    @on(JobAction)
    def _job_action(self, event: JobAction) -> None:
        if self.snapshot.role.kind == "none" and event.action in ("run", "retry", "schedule_all"):
            self.notify("becoming this workspace's scheduler (reading the plan)…", timeout=3)
        self.engine.submit(Command(event.action, event.job_ids))
        self.poll_now()

    @on(OpenLog)
    async def _open_log(self, event: OpenLog) -> None:
        await self.switch_mode("logs")
        screen: Any = self.screen
        screen.open_path(Path(event.path), to_error=event.to_error)

    @on(OpenPlots)
    async def _open_plots(self, event: OpenPlots) -> None:
        await self.switch_mode("plots")
        screen: Any = self.screen
        screen.select(event.model, event.layer, event.epoch)

    @on(ShowCell)
    async def _show_cell(self, event: ShowCell) -> None:
        await self.switch_mode("matrix")
        screen: Any = self.screen
        if not screen.select_job(event.job_id):
            self.notify("that cell is not in the matrix (not in steertui.toml)", severity="warning")

    def action_help(self) -> None:
        from steertui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen, [b for b in self.BINDINGS if isinstance(b, Binding)]))


def _count(events: list[EventView]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e.kind] = out.get(e.kind, 0) + 1
    return out


def make_app(root: Path | str, *, config: Config | None = None, options: AppOptions | None = None) -> SteerApp:
    """The app on the workspace at `root` (its config loaded here unless given): the CLI and tests use this."""
    ws = Workspace(Path(root).expanduser().resolve())
    if config is None:
        from pipeline.config_load import load_config
        from pipeline.models import layer_count

        config = load_config(ws.root, env=os.environ, layer_count=layer_count)
    return SteerApp(ws, config, options)
