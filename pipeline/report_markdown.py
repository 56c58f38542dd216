"""`report.md`: the selection first, then every analysis with its figure, then the warnings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.analysis import candidate_label
from pipeline.analysis_io import WARNING_TEXT

if TYPE_CHECKING:
    from pipeline.report import Analysis, ReportOptions

RULES_TEXT = (
    "Ratings: a score counts only if it is a number in 1–10 and not marked invalid; anything else is excluded and "
    "counted below. Pairwise answers are normalised with strip(); under the default **strict** rule anything not "
    'exactly A or B after stripping is excluded and counted. The **study** rule (the notebooks\' `== "A"` test) '
    'counts every value other than exactly "A" (" A", " B", "Neither…") as a B win; for the prompting '
    "head-to-heads the **recorded** rule uses the `winner` field as the study wrote it, which gave the vector "
    "every reply other than exactly the baseline's letter; the published figures follow that field."
)


def md_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (floats rounded, NaN blank)."""
    if frame.empty:
        return "_(none)_\n"

    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def _figure_links(figures: dict[str, list[str]], prefix: str) -> str:
    lines = [f"![{stem}](figures/{names[0]}) ([SVG](figures/{names[1]}))" for stem, names in sorted(figures.items())
             if stem.startswith(prefix)]  # fmt: skip
    return "\n\n".join(lines) + "\n" if lines else ""


def render(analysis: Analysis, options: ReportOptions, figures: dict[str, list[str]]) -> str:
    """The whole report as Markdown."""
    t = analysis.tables
    parts = [_header(analysis, options), _selection(t.get("candidates", pd.DataFrame()), options),
             _sensitivity(t.get("weight_sensitivity", pd.DataFrame())), _figures_section(figures),
             _training(t.get("training", pd.DataFrame())), _prompting(t, figures), _warnings(t["warnings"]),
             _files(t)]  # fmt: skip
    return "\n".join(p for p in parts if p)


def _header(analysis: Analysis, options: ReportOptions) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = pd.DataFrame([{"source": s.name, "directory": str(s.root), "behaviour task": s.behavior_task}
                         for s in analysis.sources])  # fmt: skip
    w_c, w_s = options.weights
    return (f"# steertui report\n\nGenerated {stamp}. Judge rows read: {analysis.judge_rows:,}; generation rows: "
            f"{analysis.generation_rows:,}. Analysis range λ ∈ [{options.lo:g}, {options.hi:g}]; weights "
            f"coherence {w_c:g} / steerability {w_s:g} (normalised); pairwise answer rule: **{options.rule}**.\n\n"
            + md_table(rows))  # fmt: skip


def _selection(cands: pd.DataFrame, options: ReportOptions) -> str:
    out = ["## Selection\n"]
    if cands.empty:
        return out[0] + "\nNo candidates: no coherence ratings were found.\n"
    for source, part in cands.groupby("source", sort=False):
        metric = part["steer_metric"].iloc[0]
        ranked = part.loc[part["score"].notna()].sort_values("rank")
        out.append(f"### {source}\n")
        if metric == "rating":
            out.append("Steerability uses the **rating slope** (OLS of the mean behaviour rating on λ) because "
                       "pairwise win rates are missing for some or all candidates (see warnings).\n")  # fmt: skip
        else:
            out.append("Steerability is the slope of the pairwise win rate on λ.\n")
        if ranked.empty:
            out.append("No candidate has both a coherence AUC and a steerability slope.\n")
            continue
        best = ranked.iloc[0]
        out.append(f"**Best: {candidate_label(best)}** — AUC {best['auc']:.3f}, {metric} slope "
                   f"{best['steer_slope']:.3f}, score {best['score']:.3f}.\n")  # fmt: skip
        front = ", ".join(candidate_label(r) for _, r in part.loc[part["pareto"]].sort_values("auc").iterrows())
        out.append(f"Pareto-optimal (AUC, steerability): {front or 'none'}.\n")
        out.append(md_table(_candidate_view(ranked)))
    return "\n".join(out)


def _candidate_view(ranked: pd.DataFrame) -> pd.DataFrame:
    view = ranked.assign(candidate=ranked.apply(candidate_label, axis=1))
    cols = ["rank", "candidate", "auc", "winrate_slope", "elo_slope", "rating_slope", "propensity_slope", "z_auc",
            "z_steer", "score", "pareto"]  # fmt: skip
    return view[cols]


def _sensitivity(sweep: pd.DataFrame) -> str:
    if sweep.empty:
        return ""
    out = ["## Weight sensitivity\n", "Top candidate as the coherence weight w_c goes 0 → 1 (w_s = 1 − w_c).\n"]
    for source, part in sweep.groupby("source", sort=False):
        changes = part.loc[part["changed"] | (part.index == part.index[0])]
        steps = "; ".join(f"from w_c = {r.w_coherence:g}: {r.top}" for r in changes.itertuples())
        out.append(f"- {source}: {steps}")
    return "\n".join(out) + "\n"


FIGURE_GROUPS = [("Ratings (coherence and behaviour, mean ± SD) and win rate by multiplier", "behaviour_"),
                 ("Propensity and perplexity by multiplier (mean ± SD)", "generation_metrics_"),
                 ("Steerability by layer", "steerability_by_layer"), ("Pareto frontier", "pareto_frontier"),
                 ("Weight sensitivity", "weight_sensitivity")]  # fmt: skip


def _figures_section(figures: dict[str, list[str]]) -> str:
    out = ["## Figures\n"]
    for title, prefix in FIGURE_GROUPS:
        links = _figure_links(figures, prefix)
        out.append(f"### {title}\n\n" + (links or "_(no data)_\n"))
    return "\n".join(out)


def _training(training: pd.DataFrame) -> str:
    out = ["## Training\n", "![training curves](figures/training_curves.png)\n"]
    if training.empty:
        return out[0] + "\n_(no evaluation_metrics.jsonl found)_\n"
    last = training.loc[training["direction"] == "add"].sort_values("epoch").groupby(["source", "model", "layer"])
    summary = last.tail(1)[["source", "model", "layer", "epoch", "loss", "reward_accuracy", "reward_margin",
                            "logp_chosen"]]  # fmt: skip
    timing = training.loc[training["direction"] == "add"].groupby(["source", "model", "layer"])["epoch_seconds"]
    summary = summary.merge(timing.mean().rename("mean_s_per_epoch").reset_index(), on=["source", "model", "layer"])
    out.append("Final epoch (add, λ = +1) per vector; mean seconds per epoch from exact timestamps only.\n")
    out.append(md_table(summary))
    return "\n".join(out)


def _prompting(t: dict[str, pd.DataFrame], figures: dict[str, list[str]]) -> str:
    h2h, corrected = t.get("head_to_head", pd.DataFrame()), t.get("corrected_success", pd.DataFrame())
    effects, persona = t.get("mixed_effects", pd.DataFrame()), t.get("persona_shifts", pd.DataFrame())
    if all(x.empty for x in (h2h, effects, persona, t.get("prompting_ratings", pd.DataFrame()))):
        return "## Prompting experiments\n\n_(no prompting_experiments data)_\n"
    out = ["## Prompting experiments\n", _figure_links(figures, "prompting_ratings")]
    if not h2h.empty:
        wide = h2h.pivot_table(index=["source", "baseline", "multiplier"], columns="rule", values="win_pct")
        out += ["### Head-to-head: % of pairs where the vector's reply was judged more of the behaviour\n",
                md_table(wide.reset_index(), 1),
                "Corrected success = mean(100 − win%(λ<0), win%(λ>0)), λ=0 excluded.\n",
                md_table(corrected, 1), _figure_links(figures, "prompting_head_to_head")]  # fmt: skip
    if not effects.empty:
        info = effects.groupby(["source", "task"]).first().reset_index()[["source", "task", "method", "reference",
                                                                          "icc", "n"]]  # fmt: skip
        slopes = t.get("mixed_effects_slopes", pd.DataFrame())
        out += ["### Mixed-effects model: score ~ (λ + λ²) × model, random intercept per test prompt\n",
                md_table(info), md_table(effects[["source", "task", "term", "coef", "se", "p"]]),
                "Each model's own λ and λ² coefficients (reference terms plus its interactions):\n", md_table(slopes),
                _figure_links(figures, "mixed_effects")]  # fmt: skip
    if not persona.empty:
        out += ["### Persona-attack stability: pre = turns 0–2, post = turn 3 by attack type\n",
                md_table(persona[["source", "model", "multiplier", "attack_type", "pre_mean", "post_mean", "delta",
                                  "pre_n", "post_n"]], 2), _figure_links(figures, "persona")]  # fmt: skip
    return "\n".join(o for o in out if o)


def _warnings(warnings: pd.DataFrame) -> str:
    out = ["## Warnings\n", RULES_TEXT + "\n"]
    if warnings.empty:
        return "\n".join(out) + "\nNo warnings.\n"
    totals = warnings.groupby("code", sort=True)["count"].sum().reset_index()
    totals["meaning"] = totals["code"].map(WARNING_TEXT).fillna("")
    out += ["Totals:\n", md_table(totals), "Detail (also in tables/warnings.csv):\n",
            md_table(warnings[["code", "source", "where", "count", "message"]])]  # fmt: skip
    return "\n".join(out)


def _files(t: dict[str, pd.DataFrame]) -> str:
    lines = [f"- [{name}](tables/{name}.csv) ({len(table):,} rows; Parquet twin tables/{name}.parquet)"
             for name, table in t.items()]  # fmt: skip
    return "## Tables\n\n" + "\n".join(lines) + "\n"
