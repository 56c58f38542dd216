"""Names, level ↔ multiplier mapping and file layout of the prompting experiments (SPEC §4.4), import-light.

Levels: a prompted model answers at "Level k of N"; level k stands for the steering multiplier
0.5 · (k − 1 − N // 2), so 7 levels ↔ −1.5…+1.5 and 9 levels ↔ −2…+2 (the study's mapping).

Providers are written `[label=]provider:model` (`anthropic:claude-3-7-sonnet-20250219`,
`gpt4o=openai:gpt-4o`); the label names output folders and rows and defaults to the study's `claude` /
`gpt`. A vector is `MODEL:LAYER:EPOCH`; in persona-stability files it is called `<short>-layer<L>-ep<E>`.

Layout under `<workspace>/prompting_experiments/` (the study's release):
`<label>_levels_<N>/generations.jsonl`, `coherence_scores.jsonl`, `<task>_scores.jsonl`,
`ranking_<label>_vs_steering_<short>_layer<L>_ep<E>.jsonl`, and
`exp2_stability/levels_<N>/persona_stability[_scores]_<who>_<theme>.jsonl`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.workspace import Workspace, short_model_name

LEVEL_COUNTS = (7, 9)
LEVEL_STEP = 0.5
DEFAULT_LABELS = {"anthropic": "claude", "openai": "gpt"}
VECTOR = "vector"  # the steered local model, in `prompting.stability_with`
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")


def level_multipliers(num_levels: int) -> tuple[float, ...]:
    """The multiplier each level stands for, level 1 first."""
    if num_levels not in LEVEL_COUNTS:
        raise ValueError(f"must be 7 or 9, got {num_levels}")
    half = num_levels // 2
    return tuple(LEVEL_STEP * (k - half) for k in range(num_levels))


def multiplier_of(level: int, num_levels: int) -> float:
    return level_multipliers(num_levels)[level - 1]


def level_of(multiplier: float, num_levels: int) -> int | None:
    """The level standing for `multiplier`, or None when no level does."""
    for k, m in enumerate(level_multipliers(num_levels), start=1):
        if math.isclose(m, multiplier, abs_tol=1e-9):
            return k
    return None


@dataclass(frozen=True)
class ProviderSpec:
    """A prompted frontier model: output label, provider (openai | anthropic) and model id."""

    label: str
    provider: str
    model: str

    @property
    def spec(self) -> str:
        """`provider:model`, as `open_provider` takes it."""
        return f"{self.provider}:{self.model}"

    @property
    def entry(self) -> str:
        """The config form: the spec, with `label=` when the label is not the default one."""
        return self.spec if self.label == DEFAULT_LABELS[self.provider] else f"{self.label}={self.spec}"


def parse_provider(entry: str) -> ProviderSpec:
    """`[label=]provider:model`; ValueError says what is wrong."""
    label, sep, spec = entry.strip().rpartition("=")
    provider, _, model = spec.partition(":")
    if provider not in DEFAULT_LABELS or not model.strip():
        raise ValueError(f"expected [label=]anthropic:MODEL or [label=]openai:MODEL, got {entry!r}")
    label = label.strip() if sep else DEFAULT_LABELS[provider]
    if not LABEL.match(label) or label == VECTOR:
        raise ValueError(f"label {label!r}: use letters, digits, '.' or '-' (and not {VECTOR!r})")
    return ProviderSpec(label, provider, model.strip())


@dataclass(frozen=True)
class VectorSpec:
    """A trained vector: model (hub id, directory or alias), layer and epoch."""

    model: str
    layer: int
    epoch: int

    @property
    def short(self) -> str:
        return short_model_name(self.model)

    @property
    def text(self) -> str:
        return f"{self.model}:{self.layer}:{self.epoch}"

    @property
    def who(self) -> str:
        """Its name in persona-stability files (the study's `70B-layer31-ep10` style)."""
        return f"{self.short}-layer{self.layer}-ep{self.epoch}"


def parse_vector(text: str) -> VectorSpec:
    """`MODEL:LAYER:EPOCH`; ValueError says what is wrong."""
    parts = text.strip().rsplit(":", 2)
    problem = ValueError(f"expected MODEL:LAYER:EPOCH with LAYER >= 0 and EPOCH >= 1, got {text!r}")
    if len(parts) != 3 or not parts[0]:
        raise problem
    try:
        spec = VectorSpec(parts[0], int(parts[1]), int(parts[2]))
    except ValueError:
        raise problem from None
    if spec.layer < 0 or spec.epoch < 1:
        raise problem
    return spec


# -- file layout ------------------------------------------------------------------------------------------


def exp1_dir(ws: Workspace, label: str, num_levels: int) -> Path:
    return ws.prompting_dir() / f"{label}_levels_{num_levels}"


def generations_path(ws: Workspace, label: str, num_levels: int) -> Path:
    return exp1_dir(ws, label, num_levels) / "generations.jsonl"


def ratings_path(ws: Workspace, label: str, num_levels: int, task: str) -> Path:
    return exp1_dir(ws, label, num_levels) / f"{task}_scores.jsonl"


def ranking_path(ws: Workspace, label: str, num_levels: int, vector: VectorSpec) -> Path:
    name = f"ranking_{label}_vs_steering_{vector.short}_layer{vector.layer}_ep{vector.epoch}.jsonl"
    return exp1_dir(ws, label, num_levels) / name


def exp2_dir(ws: Workspace, num_levels: int) -> Path:
    return ws.prompting_dir() / "exp2_stability" / f"levels_{num_levels}"


def conversations_path(ws: Workspace, num_levels: int, who: str, theme: str) -> Path:
    return exp2_dir(ws, num_levels) / f"persona_stability_{who}_{theme}.jsonl"


def turn_scores_path(ws: Workspace, num_levels: int, who: str, theme: str) -> Path:
    return exp2_dir(ws, num_levels) / f"persona_stability_scores_{who}_{theme}.jsonl"


def experiment_id(who: str, scenario: str, multiplier: float) -> str:
    """A conversation's id in turn-score rows: no file index (the study's ids broke on reordering)."""
    return f"{who}_{scenario}_{float(multiplier)!r}"
