"""`steertui report`: read one or more directories in the study's layout, compute every analysis, and write
tables (CSV + Parquet), figures (PNG + SVG) and `report.md` under one output directory.

    python -c "from pathlib import Path; from pipeline.report import *; \
        build_report([SourceSpec('study', Path('../shared/seed-outputs'))], Path('/tmp/report'))"

`analyse` only computes (the TUI can call it); `write_tables` and `write_figures` write what it returned.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import analysis as A
from pipeline import analysis_prompting as P
from pipeline.analysis_io import Corpus, Warnings, load_corpus


@dataclass(frozen=True)
class SourceSpec:
    """One directory to analyse, labelled `name` in every table (e.g. "workspace", "study")."""

    name: str
    root: Path
    behavior_task: str = "relationship"  # the behaviour's rating task (rubric key `task`)
    behavior: str | None = None  # limit vector/ to <behavior>_<model> dirs; None = all


@dataclass(frozen=True)
class ReportOptions:
    """How to analyse: selection weights, the λ range, the pairwise answer rule, and figure drawing."""

    weights: tuple[float, float] = (0.5, 0.5)  # (coherence, steerability) before normalising
    lo: float = A.ANALYSIS_RANGE[0]  # analysis range of λ for AUC, slopes, win rates and Elo
    hi: float = A.ANALYSIS_RANGE[1]
    rule: A.AnswerRule = "strict"  # pairwise answers: strict (strip, exclude non-A/B) or study (non-"A" = B)
    figures: bool = True
    sweep_steps: int = 11
    workers: int = 0  # processes drawing figures; 0 = one per CPU, 1 = in this process


@dataclass
class Analysis:
    """Every table of the report, by name, plus warnings and what was read."""

    tables: dict[str, pd.DataFrame]
    warnings: Warnings
    sources: list[SourceSpec]
    tasks: dict[str, str]  # source → behaviour task
    judge_rows: int = 0
    generation_rows: int = 0


@dataclass
class ReportResult:
    """Where everything was written, the analysis itself, and seconds per phase."""

    out_dir: Path
    report_path: Path
    tables: dict[str, Path]
    figures: dict[str, list[str]]
    analysis: Analysis
    seconds: dict[str, float]


MAIN_TABLES = ("ratings_by_multiplier", "candidates", "training")


def analyse(sources: list[SourceSpec], options: ReportOptions | None = None) -> Analysis:
    """Load every source and compute every table (no files written)."""
    options = options or ReportOptions()
    warnings = Warnings()
    parts: dict[str, list[pd.DataFrame]] = {}
    judge_rows = generation_rows = 0
    for spec in sources:
        corpus = load_corpus(spec.root, source=spec.name, behavior_task=spec.behavior_task, behavior=spec.behavior)
        warnings.extend(corpus.warnings)
        judge_rows += corpus.judge_rows
        generation_rows += len(corpus.generations)
        for name, table in _vector_tables(corpus, options, warnings).items():
            parts.setdefault(name, []).append(table)
        for name, table in _prompting_tables(spec, corpus, warnings).items():
            parts.setdefault(name, []).append(table)
    tables = {name: _concat(frames) for name, frames in parts.items()}
    tables["warnings"] = warnings.frame()
    tasks = {s.name: s.behavior_task for s in sources}
    return Analysis(tables, warnings, list(sources), tasks, judge_rows, generation_rows)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    kept = [f for f in frames if not f.empty]
    return pd.concat(kept, ignore_index=True) if kept else frames[0]


def _vector_tables(corpus: Corpus, options: ReportOptions, warnings: Warnings) -> dict[str, pd.DataFrame]:
    lo, hi, rule, task = options.lo, options.hi, options.rule, corpus.behavior_task
    ratings = A.ratings_by_multiplier(corpus.scores)
    long, nonfinite = A.generation_metrics(corpus.generations)
    warnings.add("metric_nonfinite", count=nonfinite, source=corpus.source)
    gen_stats = A.summarise(long, "value")
    rates = A.win_rates(corpus.pairwise, rule, lo, hi)
    elo = A.elo(corpus.pairwise, rule, lo, hi)
    by_mult = _concat([ratings, gen_stats, A.winrate_by_multiplier(_task_rows(rates, task))])
    by_mult = by_mult[[*A.CELL_KEYS, "task", "multiplier", "mean", "sd", "n"]]
    candidates = A.candidate_metrics(by_mult, rates, elo, task, lo, hi)
    selected = A.select(candidates, options.weights)
    if not selected.empty and selected["steer_metric"].iloc[0] == "rating":
        missing = int(selected["winrate_slope"].isna().sum())
        warnings.add("steerability_fallback", f"{missing} of {len(selected)} candidates lack pairwise win rates; "
                     "steerability = slope of the mean behaviour rating", source=corpus.source)  # fmt: skip
    training = A.training_table(corpus.metrics)
    _timestamp_warnings(training, corpus.source, warnings)
    return {"ratings_by_multiplier": by_mult, "candidates": selected, "training": training, "win_rates": rates,
            "elo": elo, "weight_sensitivity": A.weight_sensitivity(selected, options.sweep_steps)}  # fmt: skip


def _task_rows(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    return frame.loc[frame["task"] == task].drop(columns="task") if "task" in frame else frame


def _timestamp_warnings(training: pd.DataFrame, source: str, warnings: Warnings) -> None:
    for precision, code in (("1000s", "timestamp_coarse"), ("unknown", "timestamp_unparseable")):
        rows = training.loc[training["timestamp_precision"] == precision]
        if not rows.empty:
            where = "; ".join(f"{m} L{layer}" for (m, layer), _ in rows.groupby(["model", "layer"]))
            warnings.add(code, count=len(rows), source=source, where=where)


def _prompting_tables(spec: SourceSpec, corpus: Corpus, warnings: Warnings) -> dict[str, pd.DataFrame]:
    data = P.load_prompting(spec.root, spec.name)
    warnings.extend(data.warnings)
    ratings = data.ratings
    if not ratings.empty:
        mults = sorted(ratings["multiplier"].unique())
        vector = P.vector_ratings(corpus.scores, data.vector, mults)
        if vector.empty and data.vector is not None:
            model, layer, epoch = data.vector
            warnings.add("vector_ratings_missing", f"no ratings of the ranked vector {model} L{layer} ep{epoch} "
                         f"(vector_evals/{model}/layer{layer}/*_scores_ep{epoch}.jsonl); the mixed-effects model "
                         "uses the prompted models only, the first as reference", source=spec.name)  # fmt: skip
        ratings = pd.concat([vector, ratings], ignore_index=True) if not vector.empty else ratings
    h2h = pd.concat([P.head_to_head(data.rankings, rule) for rule in P.H2H_RULES], ignore_index=True)
    effects = [P.mixed_effects(ratings, task) for task in ("coherence", spec.behavior_task)] if len(ratings) else []
    effects_table = _concat(effects) if effects else P.mixed_effects(pd.DataFrame(columns=["task"]), "")
    if not effects_table.empty and (effects_table["method"] == "ols").any():
        warnings.add("mixedlm_fallback", source=spec.name)
    return {"prompting_ratings": P.prompting_ratings(ratings), "head_to_head": h2h,
            "corrected_success": P.corrected_success(h2h), "mixed_effects": effects_table,
            "mixed_effects_slopes": P.model_slopes(effects_table),
            "persona_shifts": P.persona_shifts(data.persona),
            "persona_turns": P.persona_turns(data.persona)}  # fmt: skip


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, Path]:
    """Each table as `tables/<name>.csv` and a Parquet twin; returns the CSV paths."""
    from pipeline.files import atomic_write_bytes, atomic_write_text

    folder = out_dir / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in tables.items():
        atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False))
        atomic_write_bytes(folder / f"{name}.parquet", _parquet_bytes(table))
        paths[name] = folder / f"{name}.csv"
    return paths


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    safe = table.copy()
    for col in safe.columns:
        if safe[col].dtype == object:
            safe[col] = safe[col].map(lambda v: v if v is None or isinstance(v, str | bool) else str(v))
    safe.to_parquet(buffer, index=False)
    return buffer.getvalue()


def figure_jobs(analysis: Analysis, out_dir: Path, options: ReportOptions) -> list[tuple[str, Any, tuple[Any, ...]]]:
    """Every figure the data allow as (stem, function, args); the functions are module-level, so picklable."""
    from pipeline import report_figures as F
    from pipeline import report_prompting_figures as PF

    t, folder, empty = analysis.tables, out_dir / "figures", pd.DataFrame()
    cands = t.get("candidates", empty)
    jobs = F.grid_jobs(t.get("ratings_by_multiplier", empty), cands, analysis.tasks, folder, options.lo, options.hi)
    jobs += [
        ("training_curves", F.training_curves, (t.get("training", empty), folder)),
        ("steerability_by_layer", F.steerability_by_layer, (cands, folder)),
        ("pareto_frontier", F.pareto_frontier, (cands, folder)),
        ("weight_sensitivity", F.weight_sensitivity_plot, (t.get("weight_sensitivity", empty), folder)),
        ("prompting_ratings", PF.prompting_ratings_plot, (t.get("prompting_ratings", empty), analysis.tasks, folder)),
        ("prompting_head_to_head", PF.head_to_head_plot,
         (t.get("head_to_head", empty), t.get("corrected_success", empty), folder, "recorded")),
        ("mixed_effects_coefficients", PF.mixed_effects_plot, (t.get("mixed_effects", empty), folder)),
        ("persona_stability", PF.persona_plot, (t.get("persona_turns", empty), folder)),
    ]  # fmt: skip
    return jobs


def write_figures(analysis: Analysis, out_dir: Path, options: ReportOptions,
                  pool: Executor | None = None) -> dict[str, list[str]]:  # fmt: skip
    """Render the figures under `figures/`, in `pool` when given (figures are CPU-bound), else here."""
    jobs = figure_jobs(analysis, out_dir, options)
    if pool is None:
        made = {stem: fn(*args) for stem, fn, args in jobs}
    else:
        futures = {stem: pool.submit(fn, *args) for stem, fn, args in jobs}
        made = {stem: future.result() for stem, future in futures.items()}
    return {stem: names for stem, names in made.items() if names}


def figure_pool(options: ReportOptions) -> Executor | None:
    """A process pool for the figures (None for one worker), started early so its imports overlap the reading."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = options.workers or os.cpu_count() or 1
    if not options.figures or workers <= 1:
        return None
    # spawn, not fork: the parent holds pyarrow's thread pool
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    for _ in range(workers):
        pool.submit(_warm_up)
    return pool


def _warm_up() -> None:
    """Import the drawing stack in a figure worker."""
    from pipeline import report_figures

    report_figures._plt()


def build_report(sources: list[SourceSpec], out_dir: Path, options: ReportOptions | None = None) -> ReportResult:
    """Analyse `sources` and write tables, figures and report.md under `out_dir`."""
    from pipeline.files import atomic_write_text
    from pipeline.report_markdown import render

    options = options or ReportOptions()
    clock = {"start": time.perf_counter()}
    pool = figure_pool(options)
    try:
        analysis = analyse(sources, options)
        clock["analysed"] = time.perf_counter()
        tables = write_tables(analysis.tables, out_dir)
        figures = write_figures(analysis, out_dir, options, pool) if options.figures else {}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    clock["written"] = time.perf_counter()
    report_path = out_dir / "report.md"
    atomic_write_text(report_path, render(analysis, options, figures))
    seconds = {"analyse": clock["analysed"] - clock["start"], "write": clock["written"] - clock["analysed"],
               "total": time.perf_counter() - clock["start"]}  # fmt: skip
    return ReportResult(out_dir, report_path, tables, figures, analysis, seconds)
