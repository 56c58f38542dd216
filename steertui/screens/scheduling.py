"""The app's scheduler: the workspace scheduler, launching only the cells the user asked for.

Imported lazily (the scheduler pulls in the plan and artifact checks): only once the app schedules.
Every running job is still watched, so jobs adopted from an earlier session are followed to the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from steertui.plan import Cell, cell_key
from steertui.scheduler import Scheduler


class SelectiveScheduler(Scheduler):
    """`allowed` is None (run every cell of the plan) or the set of cell keys that may be launched."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed: set[str] | None = set()

    @property
    def scope(self) -> str:
        if self.allowed is None:
            return "all"
        return f"{len(self.allowed)} cell{'s' if len(self.allowed) != 1 else ''}"

    def allow(self, keys: Iterable[str]) -> list[str]:
        """Permit `keys` and the cells they need (train for generate; train and generate for score)."""
        added = []
        for key in keys:
            cell = self.cells.get(key)
            if cell is None:
                continue
            for need in (*upstream(cell), key):
                if need in self.cells and self.allowed is not None and need not in self.allowed:
                    self.allowed.add(need)
                    added.append(need)
        return added


def upstream(cell: Cell) -> list[str]:
    """Keys of the cells whose artifacts `cell` reads."""
    if cell.needs:
        return list(cell.needs)
    if cell.kind not in ("train", "generate", "score"):
        return []
    if cell.kind == "train":
        return []
    train = cell_key("train", cell.model, cell.layer)
    if cell.kind == "generate":
        return [train]
    return [train, cell_key("generate", cell.model, cell.layer, cell.epoch)]
