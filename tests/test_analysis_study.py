"""The analysis on the study's released files, checked against direct computations and its published numbers."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import analysis as A
from pipeline import analysis_prompting as P
from pipeline.analysis_io import Corpus, load_corpus
from tests.conftest import SHARED

SEED = SHARED / "seed-outputs"
LAYERS_8B = [5, 11, 13, 14, 15, 17, 23]
pytestmark = pytest.mark.skipif(not SEED.is_dir(), reason="../shared/seed-outputs is not present")


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_corpus(SEED, source="study")


@pytest.fixture(scope="module")
def prompting() -> P.PromptingData:
    return P.load_prompting(SEED, "study")


def test_ratings_by_multiplier_match_a_direct_computation(corpus: Corpus) -> None:
    table = A.ratings_by_multiplier(corpus.scores).set_index(["layer", "task", "multiplier"])
    checked = 0
    for path in sorted((SEED / "vector_evals" / "Llama-3.1-8B-Instruct").glob("layer*/*_scores_ep20.jsonl")):
        layer, task = int(path.parent.name[5:]), path.name.split("_scores")[0]
        groups: dict[float, list[float]] = defaultdict(list)
        for row in _rows(path):
            groups[float(row["multiplier"])].append(float(row["score"]))  # type: ignore[arg-type]
        for mult, values in groups.items():
            got = table.loc[(layer, task, mult)]
            assert got["n"] == len(values)
            assert got["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
            assert got["sd"] == pytest.approx(statistics.stdev(values), abs=1e-12)
            checked += 1
    assert checked == 7 * 2 * 21


def test_auc_and_rating_slope_for_every_8b_layer(corpus: Corpus) -> None:
    by_mult = A.ratings_by_multiplier(corpus.scores)
    cands = A.candidate_metrics(by_mult, A.win_rates(corpus.pairwise), A.elo(corpus.pairwise)).set_index("layer")
    assert sorted(cands.index) == LAYERS_8B
    for layer in LAYERS_8B:
        rows = _rows(SEED / f"vector_evals/Llama-3.1-8B-Instruct/layer{layer}/coherence_scores_ep20.jsonl")
        means = pd.DataFrame(rows).groupby("multiplier")["score"].mean()
        means = means[(means.index >= -2) & (means.index <= 2)]
        assert cands.loc[layer, "auc"] == pytest.approx(np.trapezoid(means.to_numpy(), means.index.to_numpy()))
        assert 0 < cands.loc[layer, "rating_slope"] < 5 and cands.loc[layer, "rating_slope_p"] < 0.001
    assert cands["winrate_slope"].isna().all() and cands["propensity_slope"].isna().all()


def test_training_table_covers_7_layers_by_20_epochs(corpus: Corpus) -> None:
    table = A.training_table(corpus.metrics)
    assert len(table) == 280
    assert set(map(tuple, table[["layer", "epoch"]].drop_duplicates().to_numpy())) == {
        (layer, epoch) for layer in LAYERS_8B for epoch in range(1, 21)
    }
    coarse = table.loc[table["timestamp_precision"] == "1000s", "layer"]
    assert set(coarse) <= {13, 17} and len(coarse) > 0
    timed = table.groupby("layer")["epoch_seconds"].mean()
    assert timed.loc[[5, 11, 14, 15, 23]].between(950, 965).all()  # ≈ 958 s per 8B epoch (§11)


def test_missing_kinds_are_named_warnings(corpus: Corpus) -> None:
    codes = corpus.warnings.frame().set_index("code")
    assert codes.loc["missing_generations", "count"] == 7
    assert codes.loc["missing_pairwise", "count"] == 7
    assert "L13" in codes.loc["uneven_counts", "where"]


PUBLISHED = {"claude": [33.1, 34.7, 55.1, 75.1, 73.1, 59.2, 48.6], "gpt": [9.8, 5.7, 17.2, 47.8, 56.3, 82.9, 89.8]}
PUBLISHED_CORRECTED = {"claude": 59.7, "gpt": 82.7}


def _direct_h2h(baseline: str, rule: str) -> dict[float, float]:
    folder = SEED / "prompting_experiments" / f"{baseline}_levels_7"
    wins: dict[float, list[int]] = defaultdict(list)
    for row in _rows(next(folder.glob("ranking_*.jsonl"))):
        answer = str(row["model_response"])
        if rule == "recorded":
            won = row["winner"] == "steering_vector"
        else:
            letter = answer.strip() if rule == "strict" else ("A" if answer == "A" else "B")
            if letter not in ("A", "B"):
                continue
            won = (letter == "A") != row["is_baseline_A"]
        wins[float(row["steering_multiplier"])].append(int(won))  # type: ignore[arg-type]
    return {m: 100 * sum(v) / len(v) for m, v in sorted(wins.items())}


@pytest.mark.parametrize("rule", P.H2H_RULES)
def test_head_to_head_matches_a_direct_computation(prompting: P.PromptingData, rule: P.H2HRule) -> None:
    h2h = P.head_to_head(prompting.rankings, rule)
    for baseline in ("claude", "gpt"):
        part = h2h.loc[h2h["baseline"] == baseline]
        assert dict(zip(part["multiplier"], part["win_pct"], strict=True)) == pytest.approx(_direct_h2h(baseline, rule))


def test_recorded_rule_reproduces_the_published_figures(prompting: P.PromptingData) -> None:
    h2h = P.head_to_head(prompting.rankings, "recorded")
    corrected = P.corrected_success(h2h).set_index("baseline")
    for baseline, published in PUBLISHED.items():
        assert h2h.loc[h2h["baseline"] == baseline, "win_pct"].round(1).tolist() == published
        assert round(corrected.loc[baseline, "corrected_pct"], 1) == PUBLISHED_CORRECTED[baseline]


def test_strict_rule_differs_only_where_the_answers_are_malformed(prompting: P.PromptingData) -> None:
    strict = P.head_to_head(prompting.rankings, "strict").set_index(["baseline", "multiplier"])["win_pct"]
    recorded = P.head_to_head(prompting.rankings, "recorded").set_index(["baseline", "multiplier"])["win_pct"]
    differ = sorted(k for k in strict.index if round(strict[k], 1) != round(recorded[k], 1))
    assert differ == [("claude", 1.5), ("gpt", -1.0), ("gpt", 0.5)]
    assert round(P.corrected_success(P.head_to_head(prompting.rankings, "strict"))["corrected_pct"].iloc[0], 1) == 59.6


def test_mixed_effects_reproduce_the_study_differences(prompting: P.PromptingData, corpus: Corpus) -> None:
    vector = P.vector_ratings(corpus.scores, prompting.vector, sorted(prompting.ratings["multiplier"].unique()))
    assert prompting.vector == ("Llama-3.1-70B-Instruct", 31, 10) and vector.empty  # not in the release
    fit = P.mixed_effects(prompting.ratings, "relationship").set_index("term")
    assert fit["method"].iloc[0] == "mixedlm" and fit["reference"].iloc[0] == "claude" and fit["n"].iloc[0] == 3430
    # study, Llama reference: slope 2.386, Claude −0.559, GPT −1.614 → Claude 1.827, GPT − Claude −1.055
    assert fit.loc["multiplier", "coef"] == pytest.approx(2.386 - 0.559, abs=0.0015)
    assert fit.loc["multiplier:gpt", "coef"] == pytest.approx(-1.614 + 0.559, abs=0.0015)
    assert 0 < fit["icc"].iloc[0] < 1
    slopes = P.model_slopes(fit.reset_index()).set_index("model")["slope"]
    assert slopes["claude"] == pytest.approx(2.386 - 0.559, abs=0.0015)
    assert slopes["gpt"] == pytest.approx(2.386 - 1.614, abs=0.0015)


def test_persona_shifts_match_the_study(prompting: P.PromptingData) -> None:
    shifts = P.persona_shifts(prompting.persona).set_index(["model", "multiplier", "attack_type"])
    llama = "llama_70B-layer31-ep10"
    row = shifts.loc[(llama, 1.5, "subtract")]
    assert (round(row["pre_mean"], 2), round(row["post_mean"], 2), round(row["delta"], 2)) == (8.43, 8.2, -0.23)
    assert (row["pre_n"], row["post_n"]) == (120, 20)
    assert round(shifts.loc[("claude", 1.5, "subtract"), "delta"], 2) == -3.74
    assert round(shifts.loc[("gpt", 1.5, "subtract"), "delta"], 2) == -4.30
    assert round(shifts.loc[(llama, 0.0, "add"), "delta"], 2) == 4.16
    codes = prompting.warnings.frame()
    assert codes.loc[codes["code"] == "turn_index_remapped", "count"].sum() == 4 * 96
