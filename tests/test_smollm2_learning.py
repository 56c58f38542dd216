"""SmolLM2-135M end to end on CPU: the trainer learns, and the vector steers generation (slow tier)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SETTINGS = {
    "STEERTUI_TRAIN_EPOCHS": "3",
    "STEERTUI_TRAIN_MAX_PAIRS": "32",
    "STEERTUI_TRAIN_EVAL_PAIRS": "16",
    "STEERTUI_TRAIN_MAX_LENGTH": "256",
    "STEERTUI_TRAIN_LR": "0.02",
    "STEERTUI_TRAIN_WARMUP_STEPS": "2",
}


def test_bipo_learns_and_the_vector_steers(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run_cli("init", str(ws), "--example", "demo")[0] == 0
    code, _, err = run_cli("train", "-w", str(ws), "--model", "smollm2-135m", "--layer", "15", env=SETTINGS)
    assert code == 0, err
    metrics = ws / "vector/relationship-seeking_smollm2-135m/layer15/evaluation_metrics.jsonl"
    add = [r for r in map(json.loads, metrics.read_text().splitlines()) if r["eval_multiplier"] == 1.0]
    margins = [r["eval_rewards/margins"] for r in add]
    accuracy = [r["eval_rewards/accuracies"] for r in add]
    assert margins == sorted(margins) and margins[-1] > margins[0] > 0, margins
    assert accuracy[-1] >= accuracy[0] and accuracy[-1] >= 0.75, accuracy

    code, _, err = run_cli(
        "generate", "-w", str(ws), "--model", "smollm2-135m", "--layer", "15", "--epoch", "3",
        "--multipliers=-2,-1,0,1,2", "--max-prompts", "8", "--max-new-tokens", "32", "--greedy",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(x) for x in (ws / "vector_evals/smollm2-135m/layer15/generations_ep3.jsonl").open()]
    by_mult: dict[float, list[float]] = defaultdict(list)
    for row in rows:
        by_mult[row["multiplier"]].append(row["propensity_cond"])
    means = [sum(v) / len(v) for _, v in sorted(by_mult.items())]
    assert means == sorted(means), f"propensity_cond by multiplier -2..2: {means}"
