"""A synthetic corpus in the study's released layout, for the analysis tests and `benchmarks/bench_report.py`.

Ratings follow a smooth model (coherence falls off with |λ|, the behaviour rises with λ, both depending on the
layer), pairwise answers are drawn from the behaviour gap, and the study's defects are injected on request:
int and float scores, scores of 0 and null, " B" and "Neither" answers, a torn last line, and the three
timestamp encodings of `evaluation_metrics.jsonl`. Deterministic for a given seed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from pipeline.config import STUDY_MULTIPLIERS

PAIRWISE_MULTIPLIERS = tuple(m for m in STUDY_MULTIPLIERS if -4 <= m <= 4)
USAGE = '"token_usage":{"prompt_tokens":1024,"completion_tokens":6,"total_tokens":1030}'
COST = '"cost":{"prompt_cost":0.00256,"completion_cost":0.00006,"total_cost":0.00262}'


@dataclass(frozen=True)
class SynthSpec:
    """Shape of the corpus; the defaults are the study's scale (16 layers, 3 epochs, ≈ 1.2 M judge rows)."""

    models: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("Synth-70B", (9, 15, 21, 27, 29, 31, 33, 35, 41)),
        ("Synth-8B", (5, 11, 13, 14, 15, 17, 23)),
    )
    epochs: tuple[int, ...] = (10, 15, 20)
    prompts: int = 170
    task: str = "relationship"
    behavior: str = "relationship-seeking"
    train_epochs: int = 20
    defects: bool = True  # inject the study's malformed rows
    generations: bool = True
    pairwise: bool = True
    seed: int = 0


def write_corpus(root: Path, spec: SynthSpec | None = None) -> dict[str, int]:
    """Write the corpus under `root`; returns row counts by kind."""
    spec = spec or SynthSpec()
    rng = np.random.default_rng(spec.seed)
    counts = {"ratings": 0, "pairwise": 0, "generations": 0, "metrics": 0}
    vectors = [(model, layer) for model, layers in spec.models for layer in layers]
    for index, (model, layer) in enumerate(vectors):
        counts["metrics"] += _write_metrics(root, spec, model, layer, index)
    for model, layers in spec.models:
        for layer in layers:
            for epoch in spec.epochs:
                cell = _write_cell(root, spec, rng, model, layer, epoch)
                for kind, n in cell.items():
                    counts[kind] += n
    return counts


def quality(multiplier: np.ndarray, layer: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected (coherence, behaviour) ratings: deeper layers steer harder and break sooner."""
    strength = 0.6 + 0.02 * layer + 0.01 * epoch
    coherence = 9.0 - 0.35 * strength * multiplier**2
    behaviour = 5.0 + 4.0 * np.tanh(0.6 * strength * multiplier)
    return np.clip(coherence, 1, 10), np.clip(behaviour, 1, 10)


def _write_cell(root: Path, spec: SynthSpec, rng: np.random.Generator, model: str, layer: int,
                epoch: int) -> dict[str, int]:  # fmt: skip
    folder = root / "vector_evals" / model / f"layer{layer}"
    folder.mkdir(parents=True, exist_ok=True)
    mults = np.tile(np.array(STUDY_MULTIPLIERS), spec.prompts)
    pids = np.repeat(np.arange(spec.prompts) * 7 + 15, len(STUDY_MULTIPLIERS))
    coh, beh = quality(mults, layer, epoch)
    n = {"ratings": 0, "pairwise": 0, "generations": 0}
    for task, mean in (("coherence", coh), (spec.task, beh)):
        scores = np.clip(np.rint(mean + rng.normal(0, 1.0, len(mean))), 1, 10)
        n["ratings"] += _write_ratings(folder / f"{task}_scores_ep{epoch}.jsonl", pids, mults, scores, spec, rng)
    if spec.generations:
        n["generations"] += _write_generations(folder / f"generations_ep{epoch}.jsonl", pids, mults, beh, rng, model,
                                               layer, epoch)  # fmt: skip
    if spec.pairwise:
        n["pairwise"] += _write_pairwise(folder / f"pairwise_{spec.task}_scores_ep{epoch}.jsonl", spec, rng, layer,
                                         epoch)  # fmt: skip
    return n


def _write_ratings(path: Path, pids: np.ndarray, mults: np.ndarray, scores: np.ndarray, spec: SynthSpec,
                   rng: np.random.Generator) -> int:  # fmt: skip
    as_float = rng.random() < 0.2  # one file in five holds float scores, as one of the study's did
    values = [f"{s:.1f}" if as_float else str(int(s)) for s in scores]
    if spec.defects:
        values[3], values[5] = "0", "null"
    lines = [f'{{"generation_id":{g},"test_prompt_id":{p},"multiplier":{float(m)},"score":{v},{USAGE},{COST}}}\n'
             for g, (p, m, v) in enumerate(zip(pids.tolist(), mults.tolist(), values, strict=True))]  # fmt: skip
    path.write_text("".join(lines))
    return len(lines)


def _write_generations(path: Path, pids: np.ndarray, mults: np.ndarray, behaviour: np.ndarray,
                       rng: np.random.Generator, model: str, layer: int, epoch: int) -> int:  # fmt: skip
    tokens = json.dumps(list(range(128000, 128100)))
    text = json.dumps("A synthetic reply about the weather and how the day went. " * 5)
    logp = -1.2 - 0.05 * np.abs(mults) ** 1.5 + rng.normal(0, 0.1, len(mults))
    propensity = 0.05 * (behaviour - 5.0) + rng.normal(0, 0.02, len(mults))
    lines = []
    for g, (p, m, lp, pr) in enumerate(zip(pids.tolist(), mults.tolist(), logp.tolist(), propensity.tolist(),
                                           strict=True)):  # fmt: skip
        lines.append(f'{{"test_prompt_id":{p},"timestamp":"2025-03-01T00:00:00","model_name":"{model}",'
                     f'"epoch":{epoch},"layer":{layer},"multiplier":{float(m)},"generation_id":{g},'
                     f'"response_str":{text},"response_tokens":{tokens},"avg_log_prob":{lp:.6f},'
                     f'"perplexity":{np.exp(-lp):.6f},"chosen_logprob":{pr - 2:.6f},"rejected_logprob":-2.0,'
                     f'"propensity":{pr:.6f}}}\n')  # fmt: skip
    path.write_text("".join(lines))
    return len(lines)


def _write_pairwise(path: Path, spec: SynthSpec, rng: np.random.Generator, layer: int, epoch: int) -> int:
    pairs = list(itertools.combinations(PAIRWISE_MULTIPLIERS, 2))
    index = {m: i for i, m in enumerate(STUDY_MULTIPLIERS)}
    _, beh = quality(np.array(PAIRWISE_MULTIPLIERS), layer, epoch)
    level = dict(zip(PAIRWISE_MULTIPLIERS, beh.tolist(), strict=True))
    lines = []
    for prompt in range(spec.prompts):
        flips = rng.random(len(pairs)) < 0.5
        draws = rng.random(len(pairs))
        for (m1, m2), flip, draw in zip(pairs, flips.tolist(), draws.tolist(), strict=True):
            a, b = (m2, m1) if flip else (m1, m2)
            p_a = 1.0 / (1.0 + np.exp(-(level[a] - level[b])))
            ga, gb = prompt * 21 + index[a], prompt * 21 + index[b]
            answer = "A" if draw < p_a else "B"
            lines.append(f'{{"test_prompt_id":{prompt * 7 + 15},"generation_id_a":{ga},"multiplier_a":{float(a)},'
                         f'"generation_id_b":{gb},"multiplier_b":{float(b)},"model_response":"{answer}",'
                         f'"pair_id":"{min(ga, gb)}-{max(ga, gb)}",{USAGE},{COST}}}\n')  # fmt: skip
    if spec.defects:
        lines[0] = lines[0].replace('"model_response":"A"', '"model_response":" B"')
        lines[1] = (
            lines[1]
            .replace('"model_response":"B"', '"model_response":"Neither A nor B"')
            .replace('"model_response":"A"', '"model_response":"Neither A nor B"')
        )
    text = "".join(lines)
    if spec.defects and layer == max(x for _, ls in spec.models for x in ls):
        text += '{"test_prompt_id":15,"generation_id_a":0,"mult'  # a torn last line: a write cut short
    path.write_text(text)
    return len(lines)


def _write_metrics(root: Path, spec: SynthSpec, model: str, layer: int, index: int) -> int:
    folder = root / "vector" / f"{spec.behavior}_{model}" / f"layer{layer}"
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2025, 3, 1) + timedelta(days=index)
    encoding = ("iso", "ms", "coarse")[index % 3] if spec.defects else "iso"
    rows = []
    for epoch in range(1, spec.train_epochs + 1):
        for sign in (1, -1):
            when = start + timedelta(seconds=958 * epoch + (5 if sign < 0 else 0))
            stamp = {"iso": when.isoformat(), "ms": int(when.timestamp() * 1000),
                     "coarse": int(when.timestamp() // 1000)}[encoding]  # fmt: skip
            loss = 0.3 / epoch + 0.01
            rows.append({"eval_test_dataset_add_loss": loss if sign > 0 else None,
                         "eval_test_dataset_sub_loss": loss if sign < 0 else None,
                         "eval_rewards/chosen": 2.0 * sign, "eval_rewards/rejected": -1.0 * sign,
                         "eval_rewards/accuracies": 1.0 if sign > 0 else 0.0, "eval_rewards/margins": 3.0 * sign,
                         "eval_logps/chosen": -170.0 - (0 if sign > 0 else 10 * epoch), "eval_logps/rejected": -178.0,
                         "eval_multiplier": sign, "epoch": float(epoch), "timestamp": stamp})  # fmt: skip
    (folder / "evaluation_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)
