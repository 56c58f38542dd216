"""Prompting-experiment cells of the plan (SPEC §4.4), from `[prompting]` in steertui.toml.

Per provider P (label) and N levels:
  prompting-generate:P:levelsN -> prompting-rate:P:levelsN:<task> (coherence, the behaviour task)
  prompting-generate:P:levelsN + the vector's complete generation file -> prompting-rank:P:levelsN:<vector>
Per exp2 participant W (a provider label, or the vector as `<short>-layer<L>-ep<E>`):
  stability:W:levelsN (the vector's: once its epoch's vector exists) -> stability-rate:W:levelsN
API cells take judge slots; the vector's stability cell holds the model (a GPU, or a CPU slot).
Done-ness comes from the files (`pipeline.prompting_artifacts`); no providers configured = no cells.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pipeline import prompting_artifacts as A
from pipeline.artifacts import Progress, behaviour_task, generation_progress, vector_done
from pipeline.config import Config
from pipeline.prompting_spec import VECTOR, ProviderSpec, VectorSpec
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from steertui.plan import Cell, Plan

GENERATE, RATE, RANK = "prompting-generate", "prompting-rate", "prompting-rank"
STABILITY, STABILITY_RATE = "stability", "stability-rate"
KINDS = (GENERATE, RATE, RANK, STABILITY, STABILITY_RATE)


def prompting_cells(ws: Workspace, config: Config, *, gpu_machine: bool = True) -> list[Cell]:
    """Every prompting cell the config asks for, in a stable order."""
    p = config.prompting
    providers = {s.label: s for s in p.provider_specs()}
    vector = p.vector_spec()
    cells: list[Cell] = []
    if "steerability" in p.experiments:
        tasks = ("coherence", behaviour_task(ws, config))
        for spec in providers.values():
            cells += _exp1_cells(spec, p.levels, tasks, vector)
    for name in p.stability_who():
        if name == VECTOR and vector is not None:
            gpus = config.generate.gpus if gpu_machine else 0
            cells += _exp2_cells(vector.who, p.levels, vector.model, ("--vector", vector.text), gpus, vector)
        elif name in providers:
            spec = providers[name]
            cells += _exp2_cells(spec.label, p.levels, spec.spec, ("--provider", spec.entry), 0, None)
    return cells


def _cell(key: str, kind: str, model: str, args: tuple[str, ...], *, layer: int = 0, epoch: int = 0, task: str = "",
          gpus: int = 0, uses_model: bool = False, needs: tuple[str, ...] = ()) -> Cell:  # fmt: skip
    from steertui.plan import Cell

    return Cell(key, kind, model, layer, epoch, task, gpus=gpus, uses_model=uses_model, needs=needs, args=args)


def _exp1_cells(spec: ProviderSpec, levels: int, tasks: tuple[str, ...], vector: VectorSpec | None) -> list[Cell]:
    base = ("--provider", spec.entry, "--levels", str(levels))
    gen = f"{GENERATE}:{spec.label}:levels{levels}"
    cells = [_cell(gen, GENERATE, spec.spec, ("generate", *base))]
    cells += [_cell(f"{RATE}:{spec.label}:levels{levels}:{task}", RATE, spec.spec, ("rate", *base, "--task", task),
                    task=task, needs=(gen,)) for task in tasks]  # fmt: skip
    if vector is not None:
        key = f"{RANK}:{spec.label}:levels{levels}:{vector.short}:L{vector.layer}:E{vector.epoch}"
        cells.append(_cell(key, RANK, spec.spec, ("rank", *base, "--vector", vector.text), layer=vector.layer,
                           epoch=vector.epoch, needs=(gen,)))  # fmt: skip
    return cells


def _exp2_cells(who: str, levels: int, model: str, source: tuple[str, ...], gpus: int,
                vector: VectorSpec | None) -> list[Cell]:  # fmt: skip
    layer, epoch = (vector.layer, vector.epoch) if vector else (0, 0)
    run = f"{STABILITY}:{who}:levels{levels}"
    tail = (*source, "--levels", str(levels))
    return [
        _cell(run, STABILITY, model, ("stability", *tail), layer=layer, epoch=epoch, gpus=gpus,
              uses_model=vector is not None),
        _cell(f"{STABILITY_RATE}:{who}:levels{levels}", STABILITY_RATE, model, ("stability-rate", *tail),
              layer=layer, epoch=epoch, needs=(run,)),
    ]  # fmt: skip


def argv(cell: Cell, ws: Workspace, job_id: int) -> list[str]:
    """`python -m pipeline.prompting <subcommand> ...` (an argument list, never a shell string)."""
    gpus = ["--gpus", str(cell.gpus)] if cell.gpus > 1 else []
    return [sys.executable, "-m", "pipeline.prompting", *cell.args, "--workspace", str(ws.root), *gpus,
            "--job-id", str(job_id)]  # fmt: skip


def _who(cell: Cell) -> str:
    return cell.key.split(":")[1]


def progress(plan: Plan, cell: Cell) -> Progress:
    """How much of the cell's files exist."""
    ws, config, name = plan.workspace, plan.config, _who(cell)
    if cell.kind == GENERATE:
        return A.generate_progress(ws, config, name)
    if cell.kind == RATE:
        return A.rate_progress(ws, config, name, cell.task)
    if cell.kind == RANK:
        vector = config.prompting.vector_spec()
        return A.rank_progress(ws, config, name, vector) if vector else Progress(0, 0)
    if cell.kind == STABILITY:
        return A.stability_progress(ws, config, name)
    return A.stability_rate_progress(ws, config, name)


def ready(plan: Plan, cell: Cell) -> bool:
    """Inputs exist: prompted replies for rating/ranking (and the vector's replies for ranking), the
    vector for its own conversations, the conversations for their ratings."""
    ws, config, name = plan.workspace, plan.config, _who(cell)
    if cell.kind in (RATE, RANK) and not A.generate_progress(ws, config, name).complete:
        return False
    if cell.kind == STABILITY_RATE and not A.stability_progress(ws, config, name).complete:
        return False
    vector = config.prompting.vector_spec()
    if cell.kind == RANK and vector is not None:
        pids = A.exp1_prompt_ids(ws, config)
        return generation_progress(ws, config, vector.model, vector.layer, vector.epoch).complete or (
            A.vector_replies_ready(ws, vector, pids, config.prompting.levels)
        )
    if cell.kind == STABILITY and cell.uses_model and vector is not None:
        return vector_done(ws, config, vector.model, vector.layer, vector.epoch)
    return True
