"""Vector analysis as small pure functions over tidy frames (pandas); the report and the TUI's plots share them.

Semantics follow the study's notebooks (research/seed_features.md §9): ratings are summarised as mean, SD and
n per multiplier; win rate = wins / appearances over pairwise rows whose two multipliers are in the analysis
range; Elo starts at 1500 with K=32, updated in file order from pre-match ratings; coherence AUC is the
trapezoid over mean coherence per multiplier on [-2, 2]; steerability is the OLS slope (as scipy linregress) of a
per-multiplier score on the multiplier; selection z-scores AUC and steerability across candidates
(scipy.stats.zscore, ddof=0) and ranks w_c·z(AUC) + w_s·z(slope).

Frames are keyed by whichever of (source, model, layer, epoch) they carry, so a frame of one cell works too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

CELL_KEYS = ["source", "model", "layer", "epoch"]
ANALYSIS_RANGE = (-2.0, 2.0)
SCORE_MIN, SCORE_MAX = 1.0, 10.0
GENERATION_METRICS = ("perplexity", "propensity", "perplexity_cond", "propensity_cond")
SLOPE_COLUMNS = {"winrate": "winrate_slope", "elo": "elo_slope", "rating": "rating_slope",
                 "propensity": "propensity_slope"}  # fmt: skip
AnswerRule = Literal["strict", "study"]


def cell_keys(frame: pd.DataFrame) -> list[str]:
    """The cell-key columns present in `frame`, in canonical order."""
    return [k for k in CELL_KEYS if k in frame.columns]


def _in_range(values: pd.Series, lo: float | None, hi: float | None) -> pd.Series:
    mask = pd.Series(True, index=values.index)
    if lo is not None:
        mask &= values >= lo
    if hi is not None:
        mask &= values <= hi
    return mask


# --- cleaning ------------------------------------------------------------------------------------------------


def score_problems(scores: pd.DataFrame) -> pd.Series:
    """Why each rating is unusable (score_missing, score_invalid, score_out_of_range), NA when it is fine."""
    score = pd.to_numeric(scores["score"], errors="coerce")
    missing = score.isna()
    invalid = ~missing & scores["valid"].eq(False) if "valid" in scores else pd.Series(False, index=scores.index)
    out_of_range = ~missing & ~invalid & ((score < SCORE_MIN) | (score > SCORE_MAX))
    reason = np.select([missing, invalid, out_of_range], ["score_missing", "score_invalid", "score_out_of_range"], "")
    return pd.Series(reason, index=scores.index, dtype="string").replace("", pd.NA)


def clean_scores(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep numeric ratings in 1–10 not marked invalid; return them with counts of what was dropped and why."""
    problems = score_problems(scores)
    keep = problems.isna()
    clean = scores.loc[keep].assign(score=pd.to_numeric(scores.loc[keep, "score"]).astype("float64"))
    counts = {code: int((problems == code).sum()) for code in ("score_missing", "score_invalid", "score_out_of_range")}
    if "generation_id" in clean and clean["generation_id"].notna().all():
        keys = [*cell_keys(clean), "task", "generation_id"]
        dup = clean.duplicated(keys, keep="last")
        counts["duplicate_rating"] = int(dup.sum())
        clean = clean.loc[~dup]
    return clean.reset_index(drop=True), counts


def normalise_answers(responses: pd.Series, rule: AnswerRule = "strict") -> pd.Series:
    """Pairwise answers as "A", "B" or NA.

    strict (ours): strip(), then anything other than exactly A or B is NA (excluded and counted);
    study: the notebooks' rule, exactly "A" is A and every other value, " A" and "Neither" included, is B.
    """
    text = responses.astype("string")
    if rule == "study":
        return pd.Series(np.where(text.eq("A").fillna(False), "A", "B"), index=responses.index, dtype="string")
    stripped = text.str.strip()
    return stripped.where(stripped.isin(["A", "B"]))


def pairwise_problems(pairwise: pd.DataFrame) -> pd.Series:
    """Per row: pairwise_missing_multiplier, pairwise_malformed (not A/B after strip), pairwise_whitespace
    (" B": kept, stripped) or NA.
    """
    text = pairwise["model_response"].astype("string")
    stripped = text.str.strip()
    ab = stripped.isin(["A", "B"]).fillna(False).astype(bool)
    incomplete = pairwise["multiplier_a"].isna() | pairwise["multiplier_b"].isna()
    spaced = ab & text.ne(stripped).fillna(False).astype(bool)
    reason = np.select([incomplete, ~ab, spaced], ["pairwise_missing_multiplier", "pairwise_malformed",
                                                   "pairwise_whitespace"], "")  # fmt: skip
    return pd.Series(reason, index=pairwise.index, dtype="string").replace("", pd.NA)


def clean_pairwise(pairwise: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop rows without both multipliers; count malformed and whitespace answers (kept for the rules to judge)."""
    problems = pairwise_problems(pairwise)
    counts = {code: int((problems == code).sum())
              for code in ("pairwise_malformed", "pairwise_whitespace", "pairwise_missing_multiplier")}  # fmt: skip
    keep = problems.ne("pairwise_missing_multiplier").fillna(True).astype(bool)
    return pairwise.loc[keep].reset_index(drop=True), counts


# --- per-multiplier summaries --------------------------------------------------------------------------------


def summarise(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean, SD (ddof=1) and n of `value` per cell, task and multiplier."""
    keys = [*cell_keys(frame), "task", "multiplier"]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "mean", "sd", "n"])
    grouped = frame.groupby(keys, sort=True)[value]
    out = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    out["n"] = out["n"].astype("int64")
    return out


def ratings_by_multiplier(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD (ddof=1) and n of valid 1–10 ratings per cell, task and multiplier."""
    score = pd.to_numeric(scores["score"], errors="coerce")
    ok = scores.loc[score.between(SCORE_MIN, SCORE_MAX)]
    return summarise(ok.assign(score=score[ok.index]), "score")


def generation_metrics(generations: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Generation metrics in long form (task = perplexity, propensity, ...), finite values only; (frame, dropped)."""
    keys = [*cell_keys(generations), "multiplier"]
    metrics = [m for m in GENERATION_METRICS if m in generations and generations[m].notna().any()]
    if generations.empty or not metrics:
        return pd.DataFrame(columns=[*keys, "task", "value"]), 0
    long = generations.melt(id_vars=keys, value_vars=metrics, var_name="task", value_name="value")
    long = long.loc[long["value"].notna()]
    finite = np.isfinite(long["value"].to_numpy(dtype="float64"))
    return long.loc[finite], int((~finite).sum())


def metrics_by_multiplier(generations: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD and n of each generation metric per cell and multiplier."""
    long, _ = generation_metrics(generations)
    return summarise(long, "value")


def win_rates(pairwise: pd.DataFrame, rule: AnswerRule = "strict", lo: float | None = ANALYSIS_RANGE[0],
              hi: float | None = ANALYSIS_RANGE[1]) -> pd.DataFrame:  # fmt: skip
    """Wins / appearances per multiplier over rows with both multipliers in [lo, hi] and a usable answer."""
    keys = [*cell_keys(pairwise), *(["task"] if "task" in pairwise else [])]
    answers = normalise_answers(pairwise["model_response"], rule)
    keep = answers.notna() & _in_range(pairwise["multiplier_a"], lo, hi) & _in_range(pairwise["multiplier_b"], lo, hi)
    rows = pairwise.loc[keep, keys]
    a_won = answers[keep].eq("A").to_numpy(dtype=bool)
    left = rows.assign(multiplier=pairwise.loc[keep, "multiplier_a"].to_numpy(), win=a_won)
    right = rows.assign(multiplier=pairwise.loc[keep, "multiplier_b"].to_numpy(), win=~a_won)
    both = pd.concat([left, right], ignore_index=True)
    if both.empty:
        return pd.DataFrame(columns=[*keys, "multiplier", "wins", "appearances", "win_rate"])
    out = both.groupby([*keys, "multiplier"], sort=True)["win"].agg(wins="sum", appearances="count").reset_index()
    out["wins"] = out["wins"].astype("int64")
    out["win_rate"] = out["wins"] / out["appearances"]
    return out


def winrate_by_multiplier(rates: pd.DataFrame) -> pd.DataFrame:
    """Win rates in the ratings table's shape: task "winrate", mean = win rate, sd of the 0/1 outcome, n."""
    keys = cell_keys(rates)
    p, n = rates["win_rate"].astype("float64"), rates["appearances"].astype("int64")
    sd = np.sqrt(p * (1 - p) * n / (n - 1).where(n > 1))
    out = rates[[*keys, "multiplier"]].assign(task="winrate", mean=p, sd=sd, n=n)
    return out[[*keys, "task", "multiplier", "mean", "sd", "n"]]


def elo(pairwise: pd.DataFrame, rule: AnswerRule = "strict", lo: float | None = ANALYSIS_RANGE[0],
        hi: float | None = ANALYSIS_RANGE[1], k: float = 32.0, start: float = 1500.0) -> pd.DataFrame:  # fmt: skip
    """Elo per multiplier: sequential updates in row (file) order, both sides from their pre-match ratings."""
    keys = [*cell_keys(pairwise), *(["task"] if "task" in pairwise else [])]
    answers = normalise_answers(pairwise["model_response"], rule)
    keep = answers.notna() & _in_range(pairwise["multiplier_a"], lo, hi) & _in_range(pairwise["multiplier_b"], lo, hi)
    rows = pairwise.loc[keep, [*keys, "multiplier_a", "multiplier_b"]].assign(a_won=answers[keep].eq("A"))
    out = []
    for group, part in rows.groupby(keys, sort=True) if keys else [((), rows)]:
        ratings, games = _elo_sequence(part["multiplier_a"].tolist(), part["multiplier_b"].tolist(),
                                       part["a_won"].tolist(), k, start)  # fmt: skip
        label = dict(zip(keys, group if isinstance(group, tuple) else (group,), strict=True))
        out += [{**label, "multiplier": m, "elo": r, "games": games[m]} for m, r in sorted(ratings.items())]
    return pd.DataFrame(out, columns=[*keys, "multiplier", "elo", "games"])


def _elo_sequence(mult_a: list[float], mult_b: list[float], a_won: list[bool], k: float,
                  start: float) -> tuple[dict[float, float], dict[float, int]]:  # fmt: skip
    ratings: dict[float, float] = {}
    games: dict[float, int] = {}
    for a, b, won in zip(mult_a, mult_b, a_won, strict=True):
        ra, rb = ratings.get(a, start), ratings.get(b, start)
        expected_a = 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))
        result = 1.0 if won else 0.0
        ratings[a] = ra + k * (result - expected_a)
        ratings[b] = rb + k * ((1.0 - result) - (1.0 - expected_a))
        games[a] = games.get(a, 0) + 1
        games[b] = games.get(b, 0) + 1
    return ratings, games


# --- per-cell metrics ----------------------------------------------------------------------------------------


def coherence_auc(by_multiplier: pd.DataFrame, task: str = "coherence", lo: float = ANALYSIS_RANGE[0],
                  hi: float = ANALYSIS_RANGE[1]) -> pd.DataFrame:  # fmt: skip
    """Trapezoid area under mean `task` rating vs multiplier on [lo, hi], per cell (needs ≥ 2 multipliers)."""
    keys = cell_keys(by_multiplier)
    part = by_multiplier.loc[(by_multiplier["task"] == task) & by_multiplier["multiplier"].between(lo, hi)]
    out = []
    for group, cell in part.groupby(keys, sort=True):
        cell = cell.sort_values("multiplier")
        if len(cell) >= 2:
            area = float(np.trapezoid(cell["mean"].to_numpy(float), cell["multiplier"].to_numpy(float)))
            out.append({**dict(zip(keys, group, strict=True)), "auc": area, "auc_points": len(cell)})
    return pd.DataFrame(out, columns=[*keys, "auc", "auc_points"])


def steerability_slopes(table: pd.DataFrame, value: str = "mean", lo: float = ANALYSIS_RANGE[0],
                        hi: float = ANALYSIS_RANGE[1]) -> pd.DataFrame:  # fmt: skip
    """OLS of `value` on multiplier over [lo, hi] per cell (and task when present); the numbers of
    scipy.stats.linregress (slope, intercept, r, two-sided p, stderr) without importing scipy.stats.
    """
    keys = [*cell_keys(table), *(["task"] if "task" in table else [])]
    part = table.loc[table["multiplier"].between(lo, hi) & table[value].notna()]
    out = []
    for group, cell in part.groupby(keys, sort=True):
        if cell["multiplier"].nunique() < 3:
            continue
        fit = linregress(cell["multiplier"].to_numpy(float), cell[value].to_numpy(float))
        out.append({**dict(zip(keys, group, strict=True)), **fit, "points": len(cell)})
    return pd.DataFrame(out, columns=[*keys, "slope", "intercept", "r", "p", "stderr", "points"])


def linregress(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line as scipy.stats.linregress computes it (scipy.stats alone costs ~2 s to import)."""
    from scipy.special import stdtr

    n = len(x)
    xm, ym = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(xm @ xm), float(ym @ ym), float(xm @ ym)
    slope = sxy / sxx
    r = 0.0 if syy == 0 else max(-1.0, min(1.0, sxy / np.sqrt(sxx * syy)))
    df = n - 2
    if abs(r) == 1.0:
        p, stderr = 0.0, 0.0
    else:
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
        p = float(2 * stdtr(df, -abs(t)))
        stderr = float(np.sqrt((1 - r**2) * syy / sxx / df))
    return {"slope": slope, "intercept": float(y.mean() - slope * x.mean()), "r": r, "p": p, "stderr": stderr}


def candidate_metrics(by_multiplier: pd.DataFrame, rates: pd.DataFrame, elo_table: pd.DataFrame,
                      behavior_task: str = "relationship", lo: float = ANALYSIS_RANGE[0],
                      hi: float = ANALYSIS_RANGE[1]) -> pd.DataFrame:  # fmt: skip
    """One row per cell with coherence: AUC and the win-rate, Elo, rating and propensity slopes (NaN if absent)."""
    out = coherence_auc(by_multiplier, "coherence", lo, hi)
    keys = cell_keys(out)
    sources = {
        "rating": (by_multiplier.loc[by_multiplier["task"] == behavior_task], "mean"),
        "propensity": (by_multiplier.loc[by_multiplier["task"] == "propensity"], "mean"),
        "winrate": (_task_rows(rates, behavior_task), "win_rate"),
        "elo": (_task_rows(elo_table, behavior_task), "elo"),
    }
    for name, (frame, value) in sources.items():
        col = SLOPE_COLUMNS[name]
        slopes = steerability_slopes(frame.drop(columns="task", errors="ignore"), value, lo, hi)
        slopes = slopes.rename(columns={"slope": col, "p": f"{col}_p"})[[*keys, col, f"{col}_p"]]
        out = out.merge(slopes, on=keys, how="left")
    return out


def _task_rows(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    return frame.loc[frame["task"] == task] if "task" in frame else frame


# --- selection -----------------------------------------------------------------------------------------------


def zscore(values: pd.Series) -> pd.Series:
    """scipy.stats.zscore (ddof=0) ignoring NaN; a constant column gives 0."""
    sd = values.std(ddof=0)
    if not np.isfinite(sd) or sd == 0:
        return values.where(values.isna(), 0.0)
    return (values - values.mean()) / sd


def pareto(frame: pd.DataFrame, x: str = "auc", y: str = "steer_slope") -> pd.Series:
    """True where no other row is ≥ on both x and y and > on one (rows with NaN are never optimal)."""
    xs, ys = frame[x].to_numpy(float), frame[y].to_numpy(float)
    flags = []
    for i in range(len(frame)):
        if not (np.isfinite(xs[i]) and np.isfinite(ys[i])):
            flags.append(False)
            continue
        ge = (xs >= xs[i]) & (ys >= ys[i])
        gt = (xs > xs[i]) | (ys > ys[i])
        flags.append(not bool(np.any(ge & gt)))
    return pd.Series(flags, index=frame.index, dtype=bool)


def steer_metric(candidates: pd.DataFrame) -> str:
    """ "winrate" when every candidate has a win-rate slope, else "rating" (the fallback the report names)."""
    has = candidates.get("winrate_slope")
    return "winrate" if has is not None and len(candidates) > 0 and has.notna().all() else "rating"


def select(candidates: pd.DataFrame, weights: Sequence[float] = (0.5, 0.5), metric: str | None = None) -> pd.DataFrame:
    """Add z-scores, the weighted score (weights normalised to sum 1), rank and Pareto flag, per source.

    `metric` picks the steerability slope (winrate, elo, rating, propensity); None = `steer_metric` per source.
    """
    w_c, w_s = _normalise_weights(weights)
    parts = []
    for _, part in candidates.groupby("source", sort=False) if "source" in candidates else [("", candidates)]:
        chosen = metric or steer_metric(part)
        part = part.assign(steer_metric=chosen, steer_slope=part[SLOPE_COLUMNS[chosen]])
        part = part.assign(z_auc=zscore(part["auc"]), z_steer=zscore(part["steer_slope"]))
        for col in SLOPE_COLUMNS.values():
            part[f"z_{col}"] = zscore(part[col])
        part["score"] = w_c * part["z_auc"] + w_s * part["z_steer"]
        part["rank"] = part["score"].rank(ascending=False, method="first").astype("Int64")
        part["pareto"] = pareto(part)
        parts.append(part.sort_values("rank", na_position="last"))
    if not parts:
        return candidates.assign(steer_metric=pd.Series(dtype=str), steer_slope=np.nan, z_auc=np.nan,
                                 z_steer=np.nan, score=np.nan, rank=pd.Series(dtype="Int64"), pareto=False)  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def _normalise_weights(weights: Sequence[float]) -> tuple[float, float]:
    w_c, w_s = (float(w) for w in weights)
    total = w_c + w_s
    if w_c < 0 or w_s < 0 or total <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {tuple(weights)}")
    return w_c / total, w_s / total


def candidate_label(row: pd.Series) -> str:
    """ "<model> L<layer> ep<epoch>" for tables and plots."""
    return f"{row['model']} L{int(row['layer'])} ep{int(row['epoch'])}"


def weight_sensitivity(selected: pd.DataFrame, steps: int = 11) -> pd.DataFrame:
    """Top candidate for w_c in linspace(0, 1, steps) (w_s = 1 − w_c), per source; `changed` marks a new winner."""
    rows = []
    for source, part in selected.groupby("source", sort=False) if "source" in selected else [("", selected)]:
        part = part.loc[part["z_auc"].notna() & part["z_steer"].notna()]
        previous = None
        for w_c in np.linspace(0.0, 1.0, steps):
            if part.empty:
                break
            score = w_c * part["z_auc"] + (1 - w_c) * part["z_steer"]
            top = part.loc[score.idxmax()]
            label = candidate_label(top)
            rows.append({"source": source, "w_coherence": round(float(w_c), 10), "w_steer": round(1 - float(w_c), 10),
                         "top": label, "model": top["model"], "layer": int(top["layer"]), "epoch": int(top["epoch"]),
                         "top_score": float(score.max()), "z_auc": float(top["z_auc"]),
                         "z_steer": float(top["z_steer"]),
                         "changed": previous is not None and label != previous})  # fmt: skip
            previous = label
    cols = ["source", "w_coherence", "w_steer", "top", "model", "layer", "epoch", "top_score", "z_auc", "z_steer",
            "changed"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


# --- training ------------------------------------------------------------------------------------------------

TRAINING_COLUMNS = {
    "eval_rewards/accuracies": "reward_accuracy", "eval_rewards/margins": "reward_margin",
    "eval_rewards/chosen": "reward_chosen", "eval_rewards/rejected": "reward_rejected",
    "eval_logps/chosen": "logp_chosen", "eval_logps/rejected": "logp_rejected",
}  # fmt: skip
TRAINING_KEYS = ["source", "behavior", "model", "layer"]


def training_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Tidy `evaluation_metrics.jsonl` rows: one per (vector, epoch, direction) with loss, rewards, log-probs,
    the timestamp as ISO (any of the study's encodings) with its precision, and seconds since the previous epoch.
    """
    keys = [k for k in TRAINING_KEYS if k in metrics]
    cols = [*keys, "epoch", "direction", "multiplier", "loss", *TRAINING_COLUMNS.values(), "timestamp",
            "timestamp_precision", "epoch_seconds"]  # fmt: skip
    if metrics.empty or "epoch" not in metrics:
        return pd.DataFrame(columns=cols)
    frame = metrics.loc[pd.to_numeric(metrics["epoch"], errors="coerce").notna()]
    out = frame[keys].copy()
    out["epoch"] = np.ceil(pd.to_numeric(frame["epoch"]).to_numpy(float)).astype("int64")
    out["multiplier"] = _training_multiplier(frame)
    out["direction"] = np.where(out["multiplier"] < 0, "sub", "add")
    add_loss, sub_loss = _column(frame, "eval_test_dataset_add_loss"), _column(frame, "eval_test_dataset_sub_loss")
    out["loss"] = np.where(out["multiplier"] < 0, sub_loss.combine_first(add_loss), add_loss.combine_first(sub_loss))
    for raw, name in TRAINING_COLUMNS.items():
        out[name] = _column(frame, raw)
    stamps = [_timestamp(v) for v in (frame["timestamp"] if "timestamp" in frame else [None] * len(frame))]
    out["timestamp"] = [s for s, _ in stamps]
    out["timestamp_precision"] = [p for _, p in stamps]
    out = out.sort_values([*keys, "epoch", "multiplier"], ascending=[True] * (len(keys) + 1) + [False])
    out["epoch_seconds"] = _epoch_seconds(out, keys)
    return out[cols].reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[name], errors="coerce").astype("float64")


def _training_multiplier(frame: pd.DataFrame) -> np.ndarray:
    """eval_multiplier, else +1 when the add-loss key holds the value and −1 when the sub-loss key does."""
    given = _column(frame, "eval_multiplier")
    inferred = np.where(_column(frame, "eval_test_dataset_sub_loss").notna(), -1.0, 1.0)
    return np.where(given.notna(), given, inferred)


def _timestamp(value: object) -> tuple[str | None, str]:
    from pipeline.timestamps import normalise_timestamp

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None, "unknown"
    return normalise_timestamp(value.item() if isinstance(value, np.generic) else value)


def _epoch_seconds(table: pd.DataFrame, keys: list[str]) -> list[float]:
    """Seconds from the previous epoch's row of the same vector and direction (exact timestamps only)."""
    from datetime import datetime

    last: dict[tuple[object, ...], tuple[int, datetime | None]] = {}
    out = []
    for row in table.itertuples(index=False):
        group = (*(getattr(row, k) for k in keys), row.direction)
        when = datetime.fromisoformat(row.timestamp) if row.timestamp and row.timestamp_precision == "exact" else None
        prev = last.get(group)
        seconds = np.nan
        if prev and prev[1] and when and prev[0] == row.epoch - 1 and (prev[1].tzinfo is None) == (when.tzinfo is None):
            seconds = (when - prev[1]).total_seconds()
        out.append(seconds)
        last[group] = (int(row.epoch), when)
    return out
