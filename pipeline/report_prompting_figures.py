"""Prompting-experiment figures: ratings of prompted models vs the vector, head-to-heads, mixed-effects
coefficients and persona-attack stability (PNG and SVG, via `pipeline.report_figures.save`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.report_figures import BEHAVIOUR, COHERENCE, _band, _plt, save


def _order(models: list[str]) -> list[str]:
    return sorted(models, key=lambda m: (m != "vector", m))


def prompting_ratings_plot(ratings: pd.DataFrame, tasks: dict[str, str], out_dir: Path) -> list[str]:
    """Mean ± SD coherence and behaviour rating vs (effective) multiplier, a panel per model."""
    if ratings.empty:
        return []
    plt = _plt()
    panels = [(s, m) for s in sorted(ratings["source"].unique())
              for m in _order(list(ratings.loc[ratings["source"] == s, "model"].unique()))]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, (source, model) in zip(axes[0], panels, strict=True):
        part = ratings.loc[(ratings["source"] == source) & (ratings["model"] == model)]
        behaviour = tasks[str(source)]
        _band(ax, part.loc[part["task"] == "coherence"], COHERENCE, "coherence")
        _band(ax, part.loc[part["task"] == behaviour], BEHAVIOUR, behaviour, "s")
        ax.set_ylim(0, 10.5)
        ax.set_title(f"{model} ({source})")
        ax.set_xlabel("multiplier λ (levels mapped to λ)")
    axes[0][0].set_ylabel("rating (1–10)")
    axes[0][0].legend(fontsize=6)
    return save(fig, out_dir, "prompting_ratings")


def head_to_head_plot(h2h: pd.DataFrame, corrected: pd.DataFrame, out_dir: Path, rule: str) -> list[str]:
    """Top: % of pairs where the vector's reply was judged more <behaviour>, per λ. Bottom: reducing,
    increasing and corrected success per baseline."""
    data = h2h.loc[h2h["rule"] == rule]
    if data.empty:
        return []
    plt = _plt()
    groups = list(data.groupby(["source", "baseline"], sort=True))
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 6), squeeze=False)
    for col, ((source, baseline), part) in enumerate(groups):
        ax = axes[0][col]
        ax.bar(part["multiplier"], part["win_pct"], width=0.35, color="tab:orange")
        ax.axhline(50, color="black", linestyle="--", linewidth=1)
        ax.set_ylim(0, 100)
        ax.set_title(f"vector vs {baseline} ({source})")
        ax.set_xlabel("steering multiplier λ")
        ax.set_ylabel("vector judged more (%)")
        row = corrected.loc[(corrected["source"] == source) & (corrected["baseline"] == baseline)
                            & (corrected["rule"] == rule)]  # fmt: skip
        if not row.empty:
            values = row.iloc[0][["reducing_win_pct", "increasing_win_pct", "corrected_pct"]].to_numpy(float)
            bars = axes[1][col].bar(["λ<0 raw", "λ>0 raw", "corrected"], values, color=["0.6", "0.4", "tab:green"])
            axes[1][col].bar_label(bars, fmt="%.1f", fontsize=7)
            axes[1][col].set_ylim(0, 100)
    fig.suptitle(f"Head-to-head (answer rule: {rule})")
    return save(fig, out_dir, "prompting_head_to_head")


def mixed_effects_plot(table: pd.DataFrame, out_dir: Path) -> list[str]:
    """Fixed-effect coefficients with ±1.96·SE bars, a panel per task."""
    if table.empty:
        return []
    plt = _plt()
    groups = list(table.groupby(["source", "task"], sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.5), squeeze=False)
    for ax, ((source, task), part) in zip(axes[0], groups, strict=True):
        y = np.arange(len(part))
        ax.errorbar(part["coef"], y, xerr=1.96 * part["se"], fmt="o", color="black", capsize=2)
        ax.set_yticks(y, part["term"], fontsize=7)
        ax.axvline(0, color="0.5", linewidth=0.8)
        info = part.iloc[0]
        ax.set_title(f"{task} ({source}): {info['method']}, ref {info['reference']}, ICC {info['icc']:.2f}")
        ax.invert_yaxis()
    return save(fig, out_dir, "mixed_effects_coefficients")


def persona_plot(turns: pd.DataFrame, out_dir: Path) -> list[str]:
    """Mean rating per turn; turns 0–2 pooled with SD bars, then a line to each attack type's turn-3 mean."""
    if turns.empty:
        return []
    plt = _plt()
    models = sorted(turns["model"].unique())
    fig, axes = plt.subplots(2, len(models), figsize=(3.8 * len(models), 6), squeeze=False, sharey=True)
    colors = {-1.5: "tab:blue", 0.0: "tab:gray", 1.5: "tab:red"}
    for col, model in enumerate(models):
        part = turns.loc[turns["model"] == model]
        for row, mults in enumerate(([m for m in part["multiplier"].unique() if m != 0], [0.0])):
            ax = axes[row][col]
            for mult in sorted(mults):
                _persona_lines(ax, part.loc[part["multiplier"] == mult], colors.get(mult, "black"), f"λ={mult:g}")
            ax.axvline(2.5, color="0.6", linestyle=":")
            ax.set_title(model, fontsize=8)
            ax.set_xticks([0, 1, 2, 3])
            ax.set_ylim(0, 10.5)
            ax.legend(fontsize=6)
    axes[1][0].set_xlabel("assistant turn (attack before turn 3)")
    axes[0][0].set_ylabel("behaviour rating")
    return save(fig, out_dir, "persona_stability")


def _persona_lines(ax: object, part: pd.DataFrame, color: str, label: str) -> None:
    pre = part.loc[part["turn"] <= 2]
    pooled = pre.assign(total=pre["mean"] * pre["n"]).groupby("turn")[["total", "n"]].sum()
    means = pooled["total"] / pooled["n"]
    ax.plot(means.index, means.to_numpy(), color=color, marker="o", label=label)  # type: ignore[attr-defined]
    last = float(means.iloc[-1]) if len(means) else np.nan
    for attack, style in (("add", "-"), ("subtract", "--")):
        post = part.loc[(part["turn"] == 3) & (part["attack_type"] == attack)]
        if not post.empty:
            ax.plot([2, 3], [last, float(post["mean"].iloc[0])], style, color=color)  # type: ignore[attr-defined]
