"""The command palette (ctrl+p): every screen and action by name, and any cell by its key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from steertui.app import SCREEN_TITLES, SCREENS
from steertui.messages import JobAction, OpenLog, ShowCell

MAX_CELL_HITS = 50


class SteerCommands(Provider):
    """Fixed commands first; cells (show, run, open log) only when the query names them."""

    def _fixed(self) -> Iterator[tuple[str, str, Callable[[], Any]]]:
        app: Any = self.app
        for name in SCREENS:
            yield f"Screen: {SCREEN_TITLES[name]}", f"switch to the {name} screen", partial(app.switch_mode, name)
        yield (
            "Schedule every cell",
            "be this workspace's scheduler for the whole plan",
            partial(app.post_message, JobAction("schedule_all")),
        )
        yield (
            "Stop scheduling",
            "launch nothing more (running workers carry on)",
            partial(app.post_message, JobAction("stop")),
        )
        yield "Help: keys", "every key of this screen and the app", app.action_help

    def _cells(self) -> Iterator[tuple[str, str, Callable[[], Any]]]:
        app: Any = self.app
        for job in app.snapshot.jobs.values():
            yield f"Show cell {job.cell}", f"{job.state}", partial(app.post_message, ShowCell(job.id))
            yield (
                f"Run cell {job.cell}",
                "run it (and the cells it needs)",
                partial(app.post_message, JobAction("run", (job.id,))),
            )
            if job.log_path:
                yield f"Open log {job.cell}", job.log_path, partial(app.post_message, OpenLog(job.log_path))

    async def discover(self) -> Hits:
        for title, help_text, callback in self._fixed():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._fixed():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
        hits = 0
        for title, help_text, callback in self._cells():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score * 0.9, matcher.highlight(title), callback, help=help_text)
                hits += 1
                if hits >= MAX_CELL_HITS:
                    return
