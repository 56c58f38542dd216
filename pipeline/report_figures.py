"""Report figures (matplotlib, Agg): each function draws one analysis from the report's tidy tables and
saves it as PNG and SVG, returning the file names (empty when the data are absent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COHERENCE, BEHAVIOUR, WINRATE = "tab:blue", "tab:green", "tab:red"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 8, "axes.titlesize": 9, "svg.fonttype": "none"})
    return plt


def save(fig: Any, out_dir: Path, stem: str, *, tight: bool = True) -> list[str]:
    """Write `stem`.png and `stem`.svg under `out_dir`; return their names.

    tight: one tight_layout pass shared by both formats (bbox_inches="tight" would redraw per format);
    the big grids lay themselves out and pass tight=False.
    """
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    names = []
    for ext in ("png", "svg"):
        fig.savefig(out_dir / f"{stem}.{ext}", dpi=110)
        names.append(f"{stem}.{ext}")
    plt.close(fig)
    return names


def slug(*parts: object) -> str:
    text = "_".join(str(p) for p in parts if str(p))
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _band(ax: Any, part: pd.DataFrame, color: Any, label: str, marker: str = "o", alpha: float = 0.15) -> None:
    """Mean line with a ±SD band; x is the `x` column when present (a warped λ), else the multiplier."""
    part = part.sort_values("multiplier")
    x, y, sd = part["x"] if "x" in part else part["multiplier"], part["mean"], part["sd"].fillna(0)
    ax.plot(x, y, color=color, marker=marker, markersize=2.5, linewidth=1.2, label=label)
    ax.fill_between(x, y - sd, y + sd, color=color, alpha=alpha, linewidth=0)


# --- training ------------------------------------------------------------------------------------------------

TRAINING_PANELS = [("loss", "eval loss"), ("reward_accuracy", "reward accuracy"), ("reward_margin", "reward margin"),
                   ("logp_chosen", "chosen log-prob")]  # fmt: skip


def training_curves(training: pd.DataFrame, out_dir: Path) -> list[str]:
    """Loss, reward accuracy, margin and chosen log-prob by epoch; a line per layer, solid +1 / dashed −1."""
    if training.empty:
        return []
    plt = _plt()
    groups = list(training.groupby(["source", "model"], sort=True))
    fig, axes = plt.subplots(len(TRAINING_PANELS), len(groups), figsize=(4.2 * len(groups), 9), squeeze=False)
    for col, ((source, model), part) in enumerate(groups):
        layers = sorted(part["layer"].unique())
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(layers)))
        for row, (metric, label) in enumerate(TRAINING_PANELS):
            ax = axes[row][col]
            for layer, color in zip(layers, colors, strict=True):
                for direction, style in (("add", "-"), ("sub", "--")):
                    line = part.loc[(part["layer"] == layer) & (part["direction"] == direction)].sort_values("epoch")
                    ax.plot(line["epoch"], line[metric], style, color=color, linewidth=1,
                            label=f"L{layer}" if direction == "add" else None)  # fmt: skip
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{model} ({source})")
                ax.legend(fontsize=6, ncol=2)
            if row == len(TRAINING_PANELS) - 1:
                ax.set_xlabel("epoch")
    fig.suptitle("Training: solid = add (+1), dashed = subtract (−1)")
    return save(fig, out_dir, "training_curves")


# --- per-multiplier grids ------------------------------------------------------------------------------------

WARP_TICKS = [-20, -5, -2, 0, 2, 5, 20]


def warp(multiplier: Any) -> np.ndarray:
    """λ on a linear axis inside [−2, 2] and log2-compressed beyond (cheaper to draw than a symlog scale)."""
    m = np.asarray(multiplier, dtype=float)
    return np.where(np.abs(m) <= 2, m, np.sign(m) * (2 + np.log2(np.maximum(np.abs(m), 2) / 2)))


def grid_jobs(by_mult: pd.DataFrame, candidates: pd.DataFrame, tasks: dict[str, str], out_dir: Path,
              lo: float, hi: float) -> list[tuple[str, Any, tuple[Any, ...]]]:  # fmt: skip
    """Per (source, model): the behavioural grid (ratings + win rate) and the generation-metrics figure."""
    jobs: list[tuple[str, Any, tuple[Any, ...]]] = []
    for (source, model), part in by_mult.groupby(["source", "model"], sort=True):
        behaviour = tasks[str(source)]
        cands = candidates.loc[(candidates["source"] == source) & (candidates["model"] == model)]
        rated = part.loc[part["task"].isin(["coherence", behaviour, "winrate"])]
        if not rated.empty:
            stem = slug("behaviour", source, model)
            jobs.append((stem, behaviour_grid, (rated, cands, behaviour, f"{model} ({source})", stem, out_dir,
                                                (lo, hi))))  # fmt: skip
        generated = part.loc[part["task"].isin(["propensity", "perplexity"])]
        if not generated.empty:
            stem = slug("generation_metrics", source, model)
            jobs.append((stem, generation_metrics_plot, (generated, f"{model} ({source})", stem, out_dir, (lo, hi))))
    return jobs


def behaviour_grid(data: pd.DataFrame, cands: pd.DataFrame, behaviour: str, title: str, stem: str, out_dir: Path,
                   window: tuple[float, float]) -> list[str]:  # fmt: skip
    """Rows = layers; per epoch a wide panel (coherence and behaviour rating, mean ± SD, all λ) and, when
    pairwise data exist, a narrow one (win rate on the analysis range), as in the study's behavioural grid.
    """
    plt = _plt()
    data = data.assign(x=warp(data["multiplier"]))
    layers, epochs = sorted(data["layer"].unique()), sorted(data["epoch"].unique())
    panels = 2 if (data["task"] == "winrate").any() else 1
    height, width = 1.9 * len(layers) + 0.6, max(6.0, 3.6 * len(epochs) * (1.5 if panels == 2 else 1))
    # no sharex/sharey: shared limits propagate quadratically; fixed limits and outer labels instead
    fig, axes = plt.subplots(len(layers), len(epochs) * panels, squeeze=False, figsize=(width, height),
                             gridspec_kw={"width_ratios": [2, 1][:panels] * len(epochs)})  # fmt: skip
    rated = data.loc[data["task"] != "winrate", "x"]
    for (r, layer), (e, epoch) in ((a, b) for a in enumerate(layers) for b in enumerate(epochs)):
        cell = data.loc[(data["layer"] == layer) & (data["epoch"] == epoch)]
        last = r == len(layers) - 1
        ax = axes[r][e * panels]
        ax.axvspan(*warp(np.array(window)), color="0.92", zorder=0)
        _band(ax, cell.loc[cell["task"] == "coherence"], COHERENCE, "coherence")
        _band(ax, cell.loc[cell["task"] == behaviour], BEHAVIOUR, behaviour, "s")
        _annotate(ax, cands, layer, epoch, ["coherence"])
        _style(ax, rated, (0, 10), first_col=e == 0, last_row=last)
        ax.set_ylabel(f"L{layer}" if e == 0 else "")
        if last:
            ax.set_xlabel("λ (linear in the shaded range, log-compressed beyond)", fontsize=6)
        if panels == 2:
            win = cell.loc[cell["task"] == "winrate"]
            win = win.drop(columns="x").assign(sd=0.0)  # the SD of a 0/1 outcome says nothing here: no band
            _band(axes[r][e * 2 + 1], win, WINRATE, "win rate", "^", alpha=0.0)
            _annotate(axes[r][e * 2 + 1], cands, layer, epoch, ["winrate"])
            _style(axes[r][e * 2 + 1], pd.Series(window), (0, 1), first_col=False, last_row=last, linear=True)
        if r == 0:
            ax.set_title(f"epoch {epoch}: ratings")
            if panels == 2:
                axes[0][e * 2 + 1].set_title("win rate")
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Ratings and win rate by multiplier: {title}", y=1 - 0.15 / height)
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.35 / height, top=1 - 0.75 / height,
                        hspace=0.15, wspace=0.12)  # fmt: skip
    return save(fig, out_dir, stem, tight=False)


def _style(ax: Any, xs: pd.Series, ylim: tuple[float, float], *, first_col: bool, last_row: bool,
           linear: bool = False) -> None:  # fmt: skip
    """Fixed limits and few ticks per panel (tick artists dominate the drawing time)."""
    lo, hi = float(xs.min()), float(xs.max())
    ticks = [-2, -1, 0, 1, 2] if linear else WARP_TICKS
    ticks = [t for t in ticks if lo <= (t if linear else float(warp(t))) <= hi]
    ax.set_xlim(lo - 0.2, hi + 0.2)
    ax.set_ylim(ylim[0] - 0.05 * ylim[1], ylim[1] * 1.05)
    ax.set_xticks(ticks if linear else warp(np.array(ticks)), [str(t) for t in ticks] if last_row else [])
    ax.set_yticks(np.linspace(*ylim, 3))
    ax.tick_params(labelleft=first_col, labelsize=6)


def generation_metrics_plot(data: pd.DataFrame, title: str, stem: str, out_dir: Path,
                            window: tuple[float, float]) -> list[str]:  # fmt: skip
    """Propensity and log10 perplexity (mean ± SD over prompts) vs λ; a panel per epoch, a line per layer."""
    plt = _plt()
    metrics = [m for m in ("propensity", "perplexity") if (data["task"] == m).any()]
    epochs, layers = sorted(data["epoch"].unique()), sorted(data["layer"].unique())
    colors = dict(zip(layers, plt.get_cmap("viridis")(np.linspace(0, 0.9, len(layers))), strict=True))
    ticks = [t for t in WARP_TICKS if data["multiplier"].min() <= t <= data["multiplier"].max()]
    fig, axes = plt.subplots(len(metrics), len(epochs), figsize=(4 * len(epochs), 3 * len(metrics)), squeeze=False)
    for (r, metric), (c, epoch) in ((a, b) for a in enumerate(metrics) for b in enumerate(epochs)):
        ax = axes[r][c]
        part = data.loc[(data["task"] == metric) & (data["epoch"] == epoch)]
        part = _log10(part) if metric == "perplexity" else part
        ax.axvspan(*warp(np.array(window)), color="0.92", zorder=0)
        for layer, line in part.groupby("layer"):
            _band(ax, line.assign(x=warp(line["multiplier"])), colors[layer], f"L{layer}", alpha=0.06)
        ax.set_xticks(warp(np.array(ticks)), [str(t) for t in ticks])
        ax.set_title(f"epoch {epoch}")
        ax.set_ylabel("log10 perplexity" if metric == "perplexity" else "propensity (logp chosen − rejected)")
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"Generation metrics by multiplier (mean ± SD): {title}")
    return save(fig, out_dir, stem)


def _log10(data: pd.DataFrame) -> pd.DataFrame:
    """Mean ± SD band in log10 units (the lower edge clipped at the smallest positive value)."""
    mean = data["mean"].clip(lower=1e-12)
    low = np.log10((data["mean"] - data["sd"].fillna(0)).clip(lower=mean.min()))
    high = np.log10(data["mean"] + data["sd"].fillna(0))
    centre = np.log10(mean)
    return data.assign(mean=centre, sd=np.maximum(centre - low, high - centre))


def _annotate(ax: Any, cands: pd.DataFrame, layer: int, epoch: int, tasks: list[str]) -> None:
    row = cands.loc[(cands["layer"] == layer) & (cands["epoch"] == epoch)]
    if row.empty:
        return
    row = row.iloc[0]
    if "coherence" in tasks and np.isfinite(row["auc"]):
        text = f"AUC {row['auc']:.1f}"
        if np.isfinite(row["rating_slope"]):
            text += f"  β {row['rating_slope']:.2f}{_stars(row['rating_slope_p'])}"
        ax.text(0.98, 0.04, text, transform=ax.transAxes, ha="right", fontsize=6)
    if tasks == ["winrate"] and np.isfinite(row["winrate_slope"]):
        text = f"β {row['winrate_slope']:.2f}{_stars(row['winrate_slope_p'])}"
        ax.text(0.98, 0.04, text, transform=ax.transAxes, ha="right", fontsize=6)


# --- selection -----------------------------------------------------------------------------------------------


def steerability_by_layer(candidates: pd.DataFrame, out_dir: Path) -> list[str]:
    """Steerability slope (the selection's metric) and rating slope vs layer; a line per epoch."""
    if candidates.empty:
        return []
    plt = _plt()
    groups = list(candidates.groupby(["source", "model"], sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.2), squeeze=False)
    for ax, ((source, model), part) in zip(axes[0], groups, strict=True):
        for epoch, line in part.groupby("epoch"):
            line = line.sort_values("layer")
            ax.plot(line["layer"], line["steer_slope"], marker="o", label=f"ep{epoch} {line['steer_metric'].iloc[0]}")
            if line["steer_metric"].iloc[0] != "rating":
                ax.plot(line["layer"], line["rating_slope"], marker="s", linestyle=":", label=f"ep{epoch} rating")
        ax.set_title(f"{model} ({source})")
        ax.set_xlabel("layer")
        ax.set_ylabel("slope per unit λ")
        ax.legend(fontsize=6)
    return save(fig, out_dir, "steerability_by_layer")


def pareto_frontier(candidates: pd.DataFrame, out_dir: Path) -> list[str]:
    """Candidates as (coherence AUC, steerability); Pareto-optimal points edged red and joined."""
    data = candidates.loc[candidates["auc"].notna() & candidates["steer_slope"].notna()]
    if data.empty:
        return []
    plt = _plt()
    groups = list(data.groupby("source", sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, (source, part) in zip(axes[0], groups, strict=True):
        markers = dict(zip(sorted(part["epoch"].unique()), "o^sDvP*", strict=False))
        scatter = None
        for epoch, pts in part.groupby("epoch"):
            edge = np.where(pts["pareto"], "red", "none")
            scatter = ax.scatter(pts["auc"], pts["steer_slope"], c=pts["layer"], cmap="viridis", marker=markers[epoch],
                                 edgecolors=edge, linewidths=1.5, s=40, label=f"ep{epoch}")  # fmt: skip
        front = part.loc[part["pareto"]].sort_values("auc")
        ax.plot(front["auc"], front["steer_slope"], "r--", linewidth=1)
        best = part.sort_values("rank").iloc[0]
        ax.annotate(f"{best['model']} L{best['layer']} ep{best['epoch']}", (best["auc"], best["steer_slope"]),
                    fontsize=6, xytext=(4, 4), textcoords="offset points")  # fmt: skip
        if scatter is not None:
            fig.colorbar(scatter, ax=ax, label="layer")
        ax.set_xlabel("coherence AUC on the analysis range")
        ax.set_ylabel(f"steerability ({part['steer_metric'].iloc[0]} slope)")
        ax.set_title(f"Pareto frontier ({source})")
        ax.legend(fontsize=6)
    return save(fig, out_dir, "pareto_frontier")


def weight_sensitivity_plot(sweep: pd.DataFrame, out_dir: Path) -> list[str]:
    """The top candidate as the coherence weight goes 0 → 1, and its two z-scores."""
    if sweep.empty:
        return []
    plt = _plt()
    groups = list(sweep.groupby("source", sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 3.5), squeeze=False)
    for ax, (source, part) in zip(axes[0], groups, strict=True):
        names = list(dict.fromkeys(part["top"]))
        ax.step(part["w_coherence"], [names.index(t) for t in part["top"]], where="mid", color="black")
        ax.set_yticks(range(len(names)), names, fontsize=6)
        twin = ax.twinx()
        twin.plot(part["w_coherence"], part["z_auc"], color=COHERENCE, marker=".", label="z(AUC) of top")
        twin.plot(part["w_coherence"], part["z_steer"], color=WINRATE, marker=".", label="z(steer) of top")
        twin.legend(fontsize=6, loc="lower right")
        ax.set_xlabel("coherence weight w_c (w_s = 1 − w_c)")
        ax.set_title(f"Weight sensitivity ({source})")
    return save(fig, out_dir, "weight_sensitivity")
