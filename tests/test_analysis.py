"""The analysis functions against direct computations on small frames (no files)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline import analysis as A


def _pairwise(seed: int = 0, prompts: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mults = [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    rows = []
    for prompt, (a, b) in itertools.product(range(prompts), itertools.combinations(mults, 2)):
        a, b = (b, a) if rng.random() < 0.5 else (a, b)
        answer = "A" if rng.random() < 1 / (1 + math.exp(b - a)) else "B"
        rows.append({"model": "m", "layer": 3, "epoch": 1, "task": "warmth", "test_prompt_id": prompt,
                     "multiplier_a": a, "multiplier_b": b, "model_response": answer})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.loc[0, "model_response"] = " B"
    frame.loc[1, "model_response"] = "Neither A nor B"
    frame.loc[2, "model_response"] = " A"
    return frame


def test_clean_scores_excludes_and_counts_each_reason() -> None:
    scores = pd.DataFrame({"task": "coherence", "generation_id": [0, 1, 2, 3, 4, 5, 5], "multiplier": 0.0,
                           "score": [7, 0, 11, None, "x", 4.5, 6], "valid": [True, True, True, None, True, False,
                                                                              True]})  # fmt: skip
    clean, counts = A.clean_scores(scores)
    assert counts == {"score_missing": 2, "score_invalid": 1, "score_out_of_range": 2, "duplicate_rating": 0}
    assert clean["score"].tolist() == [7.0, 6.0]
    assert clean["score"].dtype == "float64"


def test_clean_scores_keeps_the_last_of_a_duplicated_generation() -> None:
    scores = pd.DataFrame({"task": "coherence", "generation_id": [1, 1], "multiplier": 0.0, "score": [3, 8]})
    clean, counts = A.clean_scores(scores)
    assert counts["duplicate_rating"] == 1 and clean["score"].tolist() == [8.0]


def test_answer_rules() -> None:
    raw = pd.Series(["A", "B", " B", " A", "Neither A nor B", None])
    assert A.normalise_answers(raw, "strict").tolist() == ["A", "B", "B", "A", pd.NA, pd.NA]
    assert A.normalise_answers(raw, "study").tolist() == ["A", "B", "B", "B", "B", "B"]


def _direct_win_rates(frame: pd.DataFrame, answer: pd.Series, lo: float, hi: float) -> dict[float, float]:
    wins: dict[float, int] = defaultdict(int)
    total: dict[float, int] = defaultdict(int)
    for (_, row), ans in zip(frame.iterrows(), answer, strict=True):
        a, b = row["multiplier_a"], row["multiplier_b"]
        if pd.isna(ans) or not (lo <= a <= hi and lo <= b <= hi):
            continue
        wins[a if ans == "A" else b] += 1
        total[a] += 1
        total[b] += 1
    return {m: wins[m] / total[m] for m in total}


@pytest.mark.parametrize("rule", ["strict", "study"])
def test_win_rates_match_a_direct_loop(rule: A.AnswerRule) -> None:
    frame = _pairwise()
    rates = A.win_rates(frame, rule)
    direct = _direct_win_rates(frame, A.normalise_answers(frame["model_response"], rule), -2, 2)
    assert dict(zip(rates["multiplier"], rates["win_rate"], strict=True)) == pytest.approx(direct)
    assert 3.0 not in set(rates["multiplier"])  # outside the analysis range: excluded on both sides
    assert (rates[["model", "layer", "epoch", "task"]].iloc[0].tolist()) == ["m", 3, 1, "warmth"]


def test_strict_rule_excludes_only_the_non_ab_answer() -> None:
    frame = _pairwise()
    strict = A.win_rates(frame, "strict", None, None)["appearances"].sum() // 2
    study = A.win_rates(frame, "study", None, None)["appearances"].sum() // 2
    assert study == len(frame) and strict == len(frame) - 1


def test_elo_sequential_from_pre_match_ratings() -> None:
    frame = pd.DataFrame({"multiplier_a": [1.0, 0.0, 1.0], "multiplier_b": [0.0, 1.0, 2.0],
                          "model_response": ["A", "A", "B"]})  # fmt: skip
    table = A.elo(frame, lo=None, hi=None).set_index("multiplier")
    r1, r0 = 1516.0, 1484.0  # game 1: equal ratings, K/2 each way
    e0 = 1 / (1 + 10 ** ((r1 - r0) / 400))  # game 2: the underdog wins
    r0, r1 = r0 + 32 * (1 - e0), r1 - 32 * (1 - e0)
    e1 = 1 / (1 + 10 ** ((1500 - r1) / 400))  # game 3: 2.0 (new, 1500) beats 1.0
    r1, r2 = r1 - 32 * e1, 1500 + 32 * e1
    assert table["elo"].to_dict() == pytest.approx({0.0: r0, 1.0: r1, 2.0: r2})
    assert table["games"].to_dict() == {0.0: 2, 1.0: 3, 2.0: 1}


def test_elo_follows_file_order() -> None:
    frame = _pairwise(prompts=3)
    forward = A.elo(frame).set_index("multiplier")["elo"]
    backward = A.elo(frame.iloc[::-1]).set_index("multiplier")["elo"]
    assert not np.allclose(forward, backward)


def _by_mult(values: dict[float, float], task: str = "coherence") -> pd.DataFrame:
    return pd.DataFrame({"model": "m", "layer": 1, "epoch": 1, "task": task, "multiplier": list(values),
                         "mean": list(values.values()), "sd": 0.5, "n": 10})  # fmt: skip


def test_coherence_auc_is_the_trapezoid_on_the_range() -> None:
    xs = [-4, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 4]
    table = _by_mult({x: 9 - x**2 for x in xs})
    inside = [x for x in xs if -2 <= x <= 2]
    expected = np.trapezoid([9 - x**2 for x in inside], inside)
    auc = A.coherence_auc(table)
    assert auc["auc"].iloc[0] == pytest.approx(expected) and auc["auc_points"].iloc[0] == 9


def test_steerability_slope_is_linregress_on_the_range() -> None:
    xs = [-10, -2, -1, 0, 1, 2, 10]
    table = _by_mult({x: 2 * x + 1 + (0.3 if x == 1 else 0) for x in xs}, "warmth")
    got = A.steerability_slopes(table)
    fit = stats.linregress([-2, -1, 0, 1, 2], [-3, -1, 1, 3.3, 5])
    assert got["slope"].iloc[0] == pytest.approx(fit.slope) and got["p"].iloc[0] == pytest.approx(fit.pvalue)


def test_ratings_by_multiplier_matches_groupby_and_ignores_out_of_range() -> None:
    scores = pd.DataFrame({"model": "m", "layer": 1, "epoch": 2, "task": "coherence",
                           "multiplier": [0, 0, 0, 1, 1], "score": [2, 4, 0, 5, 5]})  # fmt: skip
    table = A.ratings_by_multiplier(scores)
    assert table[["multiplier", "mean", "n"]].values.tolist() == [[0, 3.0, 2], [1, 5.0, 2]]
    assert table["sd"].tolist() == pytest.approx([math.sqrt(2), 0.0])


def _candidates() -> pd.DataFrame:
    return pd.DataFrame({"source": "s", "model": "m", "layer": [1, 2, 3, 4], "epoch": 1,
                         "auc": [30.0, 32.0, 31.0, 29.0], "winrate_slope": [0.20, 0.10, 0.15, 0.05],
                         "elo_slope": np.nan, "rating_slope": [2.0, 1.0, 1.5, 0.5],
                         "propensity_slope": np.nan})  # fmt: skip


def test_pareto_flags_the_undominated() -> None:
    frame = _candidates().rename(columns={"winrate_slope": "steer_slope"})
    assert A.pareto(frame).tolist() == [True, True, True, False]


def test_select_zscores_weights_and_rank() -> None:
    sel = A.select(_candidates(), (1, 1)).set_index("layer")
    z = stats.zscore([30.0, 32.0, 31.0, 29.0])
    assert sel.loc[[1, 2, 3, 4], "z_auc"].tolist() == pytest.approx(z)
    assert (sel["steer_metric"] == "winrate").all()
    assert sel["score"].tolist() == pytest.approx((0.5 * sel["z_auc"] + 0.5 * sel["z_steer"]).tolist())
    assert A.select(_candidates(), (1, 0)).iloc[0]["layer"] == 2  # coherence only: best AUC
    assert A.select(_candidates(), (0, 3)).iloc[0]["layer"] == 1  # steerability only: best slope


def test_select_falls_back_to_the_rating_slope_without_pairwise() -> None:
    cands = _candidates().assign(winrate_slope=[0.2, np.nan, 0.1, 0.1])
    sel = A.select(cands)
    assert (sel["steer_metric"] == "rating").all()
    assert sel["steer_slope"].tolist() == sel["rating_slope"].tolist()


def test_select_rejects_bad_weights() -> None:
    with pytest.raises(ValueError):
        A.select(_candidates(), (0, 0))


def test_weight_sensitivity_sweeps_and_marks_changes() -> None:
    sweep = A.weight_sensitivity(A.select(_candidates()))
    assert sweep["w_coherence"].tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    assert sweep["top"].iloc[0] == "m L1 ep1" and sweep["top"].iloc[-1] == "m L2 ep1"
    assert sweep["changed"].sum() >= 1 and not sweep["changed"].iloc[0]


def test_training_table_reads_every_timestamp_encoding() -> None:
    rows = []
    stamps = ["2025-03-04T10:00:00", "2025-03-04T10:16:00", 1740811655149, 1740812611886, 1740831, 0]
    for i, stamp in enumerate(stamps):
        rows.append({"source": "s", "behavior": "b", "model": "m", "layer": i // 2, "epoch": float(i % 2 + 1),
                     "eval_multiplier": 1, "eval_test_dataset_add_loss": 0.1, "eval_test_dataset_sub_loss": None,
                     "eval_rewards/accuracies": 1, "timestamp": stamp})  # fmt: skip
    rows.append({**rows[0], "eval_multiplier": -1, "eval_test_dataset_add_loss": None,
                 "eval_test_dataset_sub_loss": 0.5})  # fmt: skip
    table = A.training_table(pd.DataFrame(rows))
    assert table["timestamp_precision"].tolist() == ["exact", "exact", "exact", "exact", "exact", "1000s", "unknown"]
    add = table.loc[table["direction"] == "add"].set_index(["layer", "epoch"])["epoch_seconds"]
    assert add[(0, 2)] == 960.0 and add[(1, 2)] == pytest.approx(956.737) and np.isnan(add[(2, 2)])
    sub = table.loc[table["direction"] == "sub"].iloc[0]
    assert sub["loss"] == 0.5 and sub["multiplier"] == -1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linregress_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.array([-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2])
    y = 0.3 * x + rng.normal(0, 0.2, len(x))
    ours, ref = A.linregress(x, y), stats.linregress(x, y)
    for key, attr in (("slope", "slope"), ("intercept", "intercept"), ("r", "rvalue"), ("p", "pvalue"),
                      ("stderr", "stderr")):  # fmt: skip
        assert ours[key] == pytest.approx(getattr(ref, attr), rel=1e-9, abs=1e-12)
