"""The Plots screen's data: the report's analysis functions over the workspace's files, as plain records.

Runs in a worker thread (pandas is slow to import); the UI thread only sees lists of dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config
from pipeline.workspace import Workspace


@dataclass
class PlotTables:
    behaviour_task: str = "relationship"
    training: list[dict[str, Any]] = field(default_factory=list)  # model, layer, epoch, direction, loss, ...
    by_multiplier: list[dict[str, Any]] = field(default_factory=list)  # model, layer, epoch, task, multiplier, mean, sd
    warnings: int = 0

    def models(self) -> list[str]:
        return sorted({r["model"] for r in self.training} | {r["model"] for r in self.by_multiplier})

    def layers(self, model: str) -> list[int]:
        rows = [*self.training, *self.by_multiplier]
        return sorted({int(r["layer"]) for r in rows if r["model"] == model})

    def epochs(self, model: str, layer: int) -> list[int]:
        return sorted({int(r["epoch"]) for r in self.by_multiplier if r["model"] == model and r["layer"] == layer})

    def series(self, model: str, layer: int, epoch: int, task: str) -> tuple[list[float], list[float], list[float]]:
        """(multipliers, means, SDs) of one task for one vector-epoch."""
        rows = sorted(
            (r for r in self.by_multiplier
             if (r["model"], r["layer"], r["epoch"], r["task"]) == (model, layer, epoch, task)),
            key=lambda r: r["multiplier"],
        )  # fmt: skip
        return ([r["multiplier"] for r in rows], [r["mean"] for r in rows],
                [r["sd"] if r["sd"] == r["sd"] else 0.0 for r in rows])  # fmt: skip

    def curve(self, model: str, layer: int, column: str, direction: str = "add") -> tuple[list[int], list[float]]:
        rows = sorted(
            (r for r in self.training if (r["model"], r["layer"], r["direction"]) == (model, layer, direction)),
            key=lambda r: r["epoch"],
        )
        pts = [(int(r["epoch"]), float(r[column])) for r in rows if r.get(column) == r.get(column)]
        return [e for e, _ in pts], [v for _, v in pts]


def read_plot_tables(ws: Workspace, config: Config | None) -> PlotTables:
    """Training curves, mean ± SD by multiplier (ratings, generation metrics, win rate) for every cell on disk."""
    import pandas as pd

    from pipeline.analysis import (
        metrics_by_multiplier,
        ratings_by_multiplier,
        training_table,
        win_rates,
        winrate_by_multiplier,
    )
    from pipeline.analysis_io import load_corpus
    from pipeline.rubric import default_task, read_task_name

    behavior = config.behavior if config else None
    task = (read_task_name(ws.rubric_path(behavior)) if behavior else None) or default_task(behavior or "")
    corpus = load_corpus(ws.root, source="workspace", behavior_task=task, behavior=behavior)
    training = training_table(corpus.metrics)
    rates = win_rates(corpus.pairwise)
    if "task" in rates:
        rates = rates.loc[rates["task"] == task]
    parts = [ratings_by_multiplier(corpus.scores), metrics_by_multiplier(corpus.generations),
             winrate_by_multiplier(rates)]  # fmt: skip
    by_mult = (
        pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(not p.empty for p in parts) else None
    )
    keep = ["model", "layer", "epoch", "task", "multiplier", "mean", "sd"]
    records = by_mult[keep].to_dict("records") if by_mult is not None else []
    train_cols = [c for c in ("model", "layer", "epoch", "direction", "loss", "reward_accuracy") if c in training]
    return PlotTables(task, training[train_cols].to_dict("records"), records, corpus.warnings.total())
