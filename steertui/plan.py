"""The plan: which cells the workspace's matrix needs, how they depend on each other, and the command
that runs each one.

train(model, layer) -> generate(model, layer, epoch) as soon as that epoch's vector exists (not when all
training ends) -> score(model, layer, epoch, task) once the generation file is complete. Each cell's
done-ness comes from its artifact (`pipeline.artifacts`), never from a file merely existing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.artifacts import (
    Progress,
    generation_progress,
    score_progress,
    score_tasks,
    train_progress,
    vector_done,
)
from pipeline.config import Config, ModelSpec
from pipeline.workspace import Workspace, short_model_name
from steertui import plan_prompting

STAGES = ("train", "generate", "score", "prompting")


@dataclass(frozen=True)
class Cell:
    """One unit of work in the matrix."""

    key: str  # "train:<short>:L<l>", "generate:<short>:L<l>:E<e>", "score:<short>:L<l>:E<e>:<task>"
    kind: str  # train | generate | score
    model: str
    layer: int
    epoch: int = 0
    task: str = ""
    gpus: int = 0  # GPUs the job wants (0 = none; CPU-only machines run model jobs in CPU slots)
    uses_model: bool = True  # holds a model in memory (train/generate), vs API-only work (score)
    needs: tuple[str, ...] = field(default_factory=tuple)  # keys that must be done first (beyond `ready`)
    args: tuple[str, ...] = ()  # worker arguments of prompting cells (`steertui.plan_prompting`)

    @property
    def short(self) -> str:
        return short_model_name(self.model)

    def argv(self, workspace: Workspace, job_id: int) -> list[str]:
        """Worker command: an argument list (never a shell string)."""
        if self.kind in plan_prompting.KINDS:
            return plan_prompting.argv(self, workspace, job_id)
        base = ["--workspace", str(workspace.root), "--model", self.model, "--layer", str(self.layer)]
        tail = ["--job-id", str(job_id)]
        if self.gpus > 1:
            tail = ["--gpus", str(self.gpus), *tail]
        if self.kind == "train":
            return [sys.executable, "-m", "pipeline.train", *base, *tail]
        if self.kind == "generate":
            return [sys.executable, "-m", "pipeline.generate", *base, "--epoch", str(self.epoch), *tail]
        return [sys.executable, "-m", "pipeline.score", *base, "--epoch", str(self.epoch), "--task", self.task, *tail]


def cell_key(kind: str, model: str, layer: int, epoch: int = 0, task: str = "") -> str:
    parts = [kind, short_model_name(model), f"L{layer}"]
    if kind != "train":
        parts.append(f"E{epoch}")
    if task:
        parts.append(task)
    return ":".join(parts)


@dataclass
class Plan:
    workspace: Workspace
    config: Config
    cells: list[Cell]

    def by_key(self) -> dict[str, Cell]:
        return {c.key: c for c in self.cells}

    def progress(self, cell: Cell) -> Progress:
        """How much of the cell's artifact exists (done/expected units)."""
        ws, cfg = self.workspace, self.config
        if cell.kind in plan_prompting.KINDS:
            return plan_prompting.progress(self, cell)
        if cell.kind == "train":
            return train_progress(ws, cfg, cell.model, cell.layer)
        if cell.kind == "generate":
            return generation_progress(ws, cfg, cell.model, cell.layer, cell.epoch)
        return score_progress(ws, cfg, cell.model, cell.layer, cell.epoch, cell.task)

    def ready(self, cell: Cell) -> bool:
        """Inputs exist: the epoch's vector for generation, a complete generation file for scoring."""
        ws, cfg = self.workspace, self.config
        if cell.kind in plan_prompting.KINDS:
            return plan_prompting.ready(self, cell)
        if cell.kind == "train":
            return True
        if cell.kind == "generate":
            return vector_done(ws, cfg, cell.model, cell.layer, cell.epoch)
        return generation_progress(ws, cfg, cell.model, cell.layer, cell.epoch).complete


def build_plan(ws: Workspace, config: Config, stages: Iterable[str] = STAGES, *, gpu_machine: bool = True) -> Plan:
    """All cells of the configured matrix, in a stable order (model, layer, epoch, stage)."""
    wanted = set(stages)
    cells: list[Cell] = []
    tasks = score_tasks(ws, config)
    for spec in config.models:
        for layer in spec.layers:
            if "train" in wanted:
                cells.append(_train_cell(config, spec, layer, gpu_machine))
            for epoch in config.eval_epochs(spec):
                if "generate" in wanted:
                    cells.append(_generate_cell(config, spec, layer, epoch, gpu_machine))
                if "score" in wanted:
                    cells.extend(_score_cell(spec, layer, epoch, task) for task in tasks)
    if "prompting" in wanted:
        cells.extend(plan_prompting.prompting_cells(ws, config, gpu_machine=gpu_machine))
    return Plan(ws, config, cells)


def _train_cell(config: Config, spec: ModelSpec, layer: int, gpu: bool) -> Cell:
    gpus = (spec.train_gpus or config.train.gpus) if gpu else 0
    return Cell(cell_key("train", spec.name, layer), "train", spec.name, layer, gpus=gpus)


def _generate_cell(config: Config, spec: ModelSpec, layer: int, epoch: int, gpu: bool) -> Cell:
    gpus = (spec.generate_gpus or config.generate.gpus) if gpu else 0
    return Cell(cell_key("generate", spec.name, layer, epoch), "generate", spec.name, layer, epoch, gpus=gpus)


def _score_cell(spec: ModelSpec, layer: int, epoch: int, task: str) -> Cell:
    key = cell_key("score", spec.name, layer, epoch, task)
    return Cell(key, "score", spec.name, layer, epoch, task, gpus=0, uses_model=False)
