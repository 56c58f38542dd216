"""Where everything lives in a workspace (a directory with `steertui.toml`).

Every path the pipeline or the manager touches comes from here; file names follow the study's layout
so its released artifacts can be imported and analysed side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "steertui.toml"
ENV_WORKSPACE = "STEERTUI_WORKSPACE"


def short_model_name(model: str) -> str:
    """The study's short name: last path component of a hub id or directory, stem of a .gguf."""
    name = model.rstrip("/").split("/")[-1]
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def resolve_workspace(arg: str | None = None) -> Path:
    """`--workspace` flag, else `STEERTUI_WORKSPACE`, else the current directory."""
    raw = arg or os.environ.get(ENV_WORKSPACE) or "."
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def state_dir(self) -> Path:
        return self.root / ".steertui"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def data_dir(self, behavior: str) -> Path:
        return self.root / "data" / behavior

    def train_path(self, behavior: str) -> Path:
        return self.data_dir(behavior) / "train.jsonl"

    def test_path(self, behavior: str) -> Path:
        return self.data_dir(behavior) / "test.jsonl"

    def rubric_path(self, behavior: str) -> Path:
        return self.root / "rubrics" / f"{behavior}.toml"

    def vector_dir(self, behavior: str, model: str, layer: int) -> Path:
        return self.root / "vector" / f"{behavior}_{short_model_name(model)}" / f"layer{layer}"

    def vector_path(self, behavior: str, model: str, layer: int, epoch: int) -> Path:
        return self.vector_dir(behavior, model, layer) / f"vec_ep{epoch}_layer{layer}.pt"

    def metrics_path(self, behavior: str, model: str, layer: int) -> Path:
        return self.vector_dir(behavior, model, layer) / "evaluation_metrics.jsonl"

    def evals_dir(self, model: str, layer: int) -> Path:
        return self.root / "vector_evals" / short_model_name(model) / f"layer{layer}"

    def generations_path(self, model: str, layer: int, epoch: int) -> Path:
        return self.evals_dir(model, layer) / f"generations_ep{epoch}.jsonl"

    def scores_path(self, model: str, layer: int, epoch: int, task: str, *, pairwise: bool = False) -> Path:
        """`<task>_scores_ep<E>.jsonl`, or `pairwise_<task>_scores_ep<E>.jsonl` for rankings."""
        stem = f"pairwise_{task}" if pairwise else task
        return self.evals_dir(model, layer) / f"{stem}_scores_ep{epoch}.jsonl"

    def prompting_dir(self) -> Path:
        return self.root / "prompting_experiments"
