"""Prompting experiments: prompted frontier models vs the steering vector, and persona-attack stability.

Layout (the study's release, which ours follows): `prompting_experiments/<model>_levels_<N>/` holds
`<task>_scores.jsonl` ratings and `ranking_<baseline>_vs_steering_<short>_layer<L>_ep<E>.jsonl` head-to-heads;
`prompting_experiments/**/persona_stability_scores_*.jsonl` hold the persona-attack turn ratings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.analysis import clean_scores, normalise_answers, ratings_by_multiplier
from pipeline.analysis_io import SCORE_SCHEMA, Warnings, read_jsonl_frame, relative

RANKING_SCHEMA = {"test_prompt_id": "int64", "baseline_model": "string", "baseline_level": "int64",
                  "steering_multiplier": "float64", "is_baseline_A": "bool", "model_response": "string",
                  "winner": "string"}  # fmt: skip
PERSONA_SCHEMA = {"experiment_id": "string", "model": "string", "theme": "string", "multiplier": "float64",
                  "attack_type": "string", "turn_index": "int64", "score": "float64"}  # fmt: skip
LEVEL_DIR = re.compile(r"^(?P<model>.+)_levels_(?P<levels>\d+)$")
RANKING_FILE = re.compile(r"^ranking_(?P<baseline>.+)_vs_steering_(?P<model>.+)_layer(?P<layer>\d+)_ep(?P<epoch>\d+)")
VECTOR = "vector"
H2HRule = Literal["strict", "study", "recorded"]
H2H_RULES: tuple[H2HRule, ...] = ("strict", "study", "recorded")


@dataclass
class PromptingData:
    """Exp1 ratings and head-to-heads, exp2 persona turn ratings, and the vector the rankings name."""

    ratings: pd.DataFrame  # source, model, levels, task, test_prompt_id, multiplier, score
    rankings: pd.DataFrame  # source, baseline, vector, test_prompt_id, baseline_level, steering_multiplier, ...
    persona: pd.DataFrame  # source, model, theme, multiplier, attack_type, turn_index, turn, score
    vector: tuple[str, int, int] | None  # (short model, layer, epoch) of the ranked vector
    warnings: Warnings


def load_prompting(root: Path, source: str = "study") -> PromptingData:
    """Read `<root>/prompting_experiments` (missing or empty gives empty frames)."""
    warnings = Warnings()
    base = root / "prompting_experiments"
    ratings, rankings = [], []
    vectors: list[tuple[str, int, int]] = []
    for folder in sorted(p for p in base.rglob("*_levels_*") if p.is_dir()):
        match = LEVEL_DIR.match(folder.name)
        if match is None:
            continue
        ratings += [_ratings(path, match, source, warnings, root) for path in sorted(folder.glob("*_scores.jsonl"))]
        for path in sorted(folder.glob("ranking_*.jsonl")):
            frame, vector = _rankings(path, source, warnings, root)
            rankings.append(frame)
            vectors += [vector] if vector else []
    persona = _persona(base, source, warnings, root)
    vector = max(set(vectors), key=vectors.count) if vectors else None
    return PromptingData(_concat(ratings), _concat(rankings), persona, vector, warnings)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _ratings(path: Path, match: re.Match[str], source: str, warnings: Warnings, root: Path) -> pd.DataFrame:
    where = relative(path, root)
    frame = read_jsonl_frame(path, SCORE_SCHEMA, warnings, source, where)
    frame = frame.assign(source=source, model=match["model"], levels=int(match["levels"]),
                         task=path.name[: -len("_scores.jsonl")])  # fmt: skip
    frame, counts = clean_scores(frame)
    for code, n in counts.items():
        warnings.add(code, count=n, source=source, where=where)
    return frame[["source", "model", "levels", "task", "test_prompt_id", "multiplier", "score"]]


def _rankings(path: Path, source: str, warnings: Warnings,
              root: Path) -> tuple[pd.DataFrame, tuple[str, int, int] | None]:  # fmt: skip
    where = relative(path, root)
    frame = read_jsonl_frame(path, RANKING_SCHEMA, warnings, source, where)
    match = RANKING_FILE.match(path.name)
    vector = (match["model"], int(match["layer"]), int(match["epoch"])) if match else None
    baseline = match["baseline"] if match else path.parent.name.split("_levels_")[0]
    frame["baseline"] = frame["baseline_model"].fillna(baseline) if len(frame) else baseline
    frame["vector"] = f"{vector[0]} L{vector[1]} ep{vector[2]}" if vector else ""
    frame.insert(0, "source", source)
    stripped = frame["model_response"].astype("string").str.strip()
    malformed = int((~stripped.isin(["A", "B"]).fillna(False)).sum())
    warnings.add("pairwise_malformed", count=malformed, source=source, where=where)
    spaced = int((stripped.isin(["A", "B"]).fillna(False) & frame["model_response"].ne(stripped).fillna(False)).sum())
    warnings.add("pairwise_whitespace", count=spaced, source=source, where=where)
    return frame, vector


def _persona(base: Path, source: str, warnings: Warnings, root: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(base.rglob("persona_stability_scores_*.jsonl")):
        where = relative(path, root)
        frame = read_jsonl_frame(path, PERSONA_SCHEMA, warnings, source, where)
        frame, counts = clean_scores(frame)
        for code, n in counts.items():
            warnings.add(code, count=n, source=source, where=where)
        frame["turn"] = remap_turns(frame["turn_index"])
        moved = int((frame["turn"] != frame["turn_index"]).sum())
        warnings.add("turn_index_remapped", count=moved, source=source, where=where)
        frames.append(frame.assign(source=source, file=path.name))
    if not frames:
        return pd.DataFrame(columns=["source", "model", "theme", "multiplier", "attack_type", "turn", "score"])
    persona = pd.concat(frames, ignore_index=True)
    turns = persona.groupby(["file", "experiment_id"])["turn"].nunique()
    warnings.add("persona_incomplete", count=int((turns != 4).sum()), source=source)
    return persona


def remap_turns(turn_index: pd.Series) -> pd.Series:
    """Dense rank of one file's turn_index values from 0: 0–3 stays, the older 2/4/6/8 becomes 0–3."""
    if turn_index.empty:
        return turn_index.astype("int64")
    return (turn_index.rank(method="dense") - 1).astype("int64")


# --- exp1: ratings and head-to-heads ----------------------------------------------------------------------------


def vector_ratings(scores: pd.DataFrame, vector: tuple[str, int, int] | None, multipliers: list[float]) -> pd.DataFrame:
    """The ranked vector's own ratings at the prompted levels' multipliers, labelled model "vector"."""
    cols = ["source", "model", "levels", "task", "test_prompt_id", "multiplier", "score"]
    if vector is None or scores.empty:
        return pd.DataFrame(columns=cols)
    model, layer, epoch = vector
    pick = (scores["model"] == model) & (scores["layer"] == layer) & (scores["epoch"] == epoch)
    part = scores.loc[pick & scores["multiplier"].isin(multipliers)]
    return part.assign(model=VECTOR, levels=len(multipliers))[cols]


def prompting_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD, n per (source, model, task, multiplier) for the prompted models and the vector."""
    if ratings.empty:
        return pd.DataFrame(columns=["source", "model", "task", "multiplier", "mean", "sd", "n"])
    return ratings_by_multiplier(ratings.drop(columns=["levels"], errors="ignore"))


def head_to_head(rankings: pd.DataFrame, rule: H2HRule = "strict") -> pd.DataFrame:
    """Per baseline and steering multiplier: % of pairs where the vector's reply was judged more <behaviour>.

    strict: answers stripped, non-A/B excluded; study: exactly "A" is A, anything else B (the notebooks' rule
    for vector pairwise); recorded: the `winner` field as the study wrote it (a reply other than exactly the
    baseline's letter, " B" or "Neither" included, went to the vector), which the published figures used.
    """
    cols = ["source", "baseline", "vector", "multiplier", "level", "n", "steering_wins", "excluded", "win_pct", "rule"]
    if rankings.empty:
        return pd.DataFrame(columns=cols)
    won = _steering_won(rankings, rule)
    frame = rankings.assign(multiplier=rankings["steering_multiplier"], level=rankings["baseline_level"], won=won)
    keys = ["source", "baseline", "vector", "multiplier"]
    out = frame.groupby(keys, sort=True).agg(level=("level", "min"), rows=("won", "size"), n=("won", "count"),
                                             steering_wins=("won", "sum")).reset_index()  # fmt: skip
    out["excluded"] = out.pop("rows") - out["n"]
    out["steering_wins"] = out["steering_wins"].astype("int64")
    out["win_pct"] = 100.0 * out["steering_wins"] / out["n"]
    return out.assign(rule=rule)[cols]


def _steering_won(rankings: pd.DataFrame, rule: H2HRule) -> pd.Series:
    if rule == "recorded":
        winner = rankings["winner"].astype("string")
        return winner.eq("steering_vector").astype("float64").where(winner.notna())
    answer = normalise_answers(rankings["model_response"], rule)
    steering_letter = pd.Series(np.where(rankings["is_baseline_A"].eq(True), "B", "A"), index=rankings.index)
    return answer.eq(steering_letter).astype("float64").where(answer.notna())


def corrected_success(h2h: pd.DataFrame) -> pd.DataFrame:
    """Pooled steering win % for λ<0 ("reducing") and λ>0 ("increasing"); corrected = mean(100 − reducing,
    increasing), λ=0 excluded: the share of pairs where the vector moved the behaviour the intended way.
    """
    cols = ["source", "baseline", "vector", "rule", "reducing_win_pct", "increasing_win_pct", "corrected_pct"]
    rows = []
    for (source, baseline, vector, rule), part in h2h.groupby(["source", "baseline", "vector", "rule"], sort=True):
        neg, pos = part.loc[part["multiplier"] < 0], part.loc[part["multiplier"] > 0]
        reducing = 100.0 * neg["steering_wins"].sum() / max(int(neg["n"].sum()), 1)
        increasing = 100.0 * pos["steering_wins"].sum() / max(int(pos["n"].sum()), 1)
        rows.append([source, baseline, vector, rule, reducing, increasing, ((100.0 - reducing) + increasing) / 2])
    return pd.DataFrame(rows, columns=cols)


# --- exp1: mixed-effects regression -----------------------------------------------------------------------------

FORMULA = "score ~ (multiplier + I(multiplier**2)) * C(model_cat, Treatment(reference={ref!r}))"


def mixed_effects(ratings: pd.DataFrame, task: str, reference: str = VECTOR) -> pd.DataFrame:
    """statsmodels mixedlm `score ~ (λ + λ²) * C(model)` with a random intercept per test prompt (REML), as the
    study fitted it; OLS when the fit fails. One row per term with coef, SE, z, p, plus n, method and ICC.
    """
    cols = ["source", "task", "term", "coef", "se", "z", "p", "n", "method", "reference", "icc"]
    data = ratings.loc[ratings["task"] == task].rename(columns={"model": "model_cat"})
    if data.empty or data["model_cat"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    if reference not in set(data["model_cat"]):
        reference = sorted(set(data["model_cat"]))[0]
    fit, method, icc = _fit(data, FORMULA.format(ref=reference))
    terms = [_term(t, reference) for t in fit.params.index]
    table = pd.DataFrame({"term": terms, "coef": fit.params.to_numpy(), "se": fit.bse.to_numpy(),
                          "z": fit.tvalues.to_numpy(), "p": fit.pvalues.to_numpy()})  # fmt: skip
    table = table.loc[table["term"] != "Group Var"]
    source = str(data["source"].iloc[0]) if "source" in data else ""
    return table.assign(source=source, task=task, n=len(data), method=method, reference=reference, icc=icc)[cols]


def model_slopes(effects: pd.DataFrame) -> pd.DataFrame:
    """Each model's own λ and λ² coefficients: the reference's terms plus the model's interaction terms."""
    rows = []
    for (source, task), part in effects.groupby(["source", "task"], sort=True):
        coef = dict(zip(part["term"], part["coef"], strict=True))
        reference = str(part["reference"].iloc[0])
        others = sorted({t.split(":", 1)[1] for t in coef if t.startswith("multiplier:")})
        for model in [reference, *others]:
            extra = (0.0, 0.0) if model == reference else (coef[f"multiplier:{model}"], coef[f"multiplier^2:{model}"])
            rows.append({"source": source, "task": task, "model": model, "reference": reference,
                         "slope": coef["multiplier"] + extra[0],
                         "quadratic": coef["multiplier^2"] + extra[1]})  # fmt: skip
    return pd.DataFrame(rows, columns=["source", "task", "model", "reference", "slope", "quadratic"])


def _fit(data: pd.DataFrame, formula: str) -> tuple[Any, str, float]:
    import warnings as pywarnings

    import statsmodels.formula.api as smf

    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore")
            fit = smf.mixedlm(formula, data, groups=data["test_prompt_id"]).fit(reml=True)
        var_re = float(np.asarray(fit.cov_re)[0, 0])
        if not np.isfinite(var_re) or not np.all(np.isfinite(fit.bse)):
            raise ValueError("non-finite variance")
        return fit, "mixedlm", var_re / (var_re + float(fit.scale))
    except (ValueError, RuntimeError, np.linalg.LinAlgError):  # singular or failed fits: the study's fallback
        return smf.ols(formula, data).fit(), "ols", float("nan")


def _term(raw: str, reference: str) -> str:
    """ "multiplier:C(model_cat, Treatment(...))[T.gpt]" → "multiplier:gpt"; "I(multiplier ** 2)" → "multiplier^2"."""
    text = re.sub(r"C\(model_cat, Treatment\(reference=.*?\)\)\[T\.(.+?)\]", r"\1", raw)
    return text.replace("I(multiplier ** 2)", "multiplier^2")


# --- exp2: persona-attack stability -----------------------------------------------------------------------------


def persona_shifts(persona: pd.DataFrame) -> pd.DataFrame:
    """Per model and λ: pre-attack mean over turns 0–2 (all scenarios), post-attack turn 3 per attack type, Δ."""
    cols = ["source", "model", "multiplier", "attack_type", "pre_mean", "pre_sd", "pre_n", "post_mean", "post_sd",
            "post_n", "delta"]  # fmt: skip
    if persona.empty:
        return pd.DataFrame(columns=cols)
    keys = ["source", "model", "multiplier"]
    pre = persona.loc[persona["turn"] <= 2].groupby(keys)["score"].agg(pre_mean="mean", pre_sd="std", pre_n="count")
    post = persona.loc[persona["turn"] == 3].groupby([*keys, "attack_type"])["score"]
    post = post.agg(post_mean="mean", post_sd="std", post_n="count").reset_index()
    out = post.merge(pre.reset_index(), on=keys, how="left")
    out["delta"] = out["post_mean"] - out["pre_mean"]
    return out[cols].sort_values(["source", "model", "multiplier", "attack_type"]).reset_index(drop=True)


def persona_turns(persona: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD, n per (model, λ, turn, attack type): the persona figure's lines."""
    keys = ["source", "model", "multiplier", "turn", "attack_type"]
    if persona.empty:
        return pd.DataFrame(columns=[*keys, "mean", "sd", "n"])
    return persona.groupby(keys)["score"].agg(mean="mean", sd="std", n="count").reset_index()
