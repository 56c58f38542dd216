"""Benchmark `steertui report` on a synthetic corpus of the study's size, against the notebooks' approach.

    .venv/bin/python benchmarks/bench_report.py [--prompts 170] [--workers 0] [--corpus DIR] [--skip-baseline]

Corpus: 16 layers (9 + 7) × 3 epochs × 170 prompts × 21 multipliers → 342,720 ratings + 856,800 pairwise
judgements ≈ 1.2 M judge rows (the study: 1,224,433), plus 171,360 generation rows and training metrics.
Measured in one run: (1) the full report — reading every JSONL file from disk, all tables, figures (PNG and
SVG) and report.md; (2) the analysis alone again, for its CPU time; (3) the naive baseline the study's
notebooks used — `pandas.read_json(lines=True)` per file, groupby per multiplier, and per-row `iterrows` loops
for win rates and Elo — computing the same per-cell numbers, which are checked against ours (coherence AUC,
rating, win-rate and Elo slopes). Wall times depend on the machine's load (recorded); CPU seconds less so.
Writes benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.analysis_io import eval_files  # noqa: E402
from pipeline.analysis_synth import SynthSpec, write_corpus  # noqa: E402
from pipeline.report import ReportOptions, SourceSpec, analyse, build_report  # noqa: E402

RANGE = (-2.0, 2.0)


def naive_baseline(root: Path) -> dict[tuple[str, int, int], dict[str, float]]:
    """The notebooks' way: read_json per file, groupby per multiplier, iterrows for win rates and Elo."""
    from scipy import stats

    files: dict[tuple[str, int, int], dict[str, Path]] = defaultdict(dict)
    for f in eval_files(root):
        files[(f.model, f.layer, f.epoch)][f.kind if f.kind != "rating" else f.task] = f.path
    for path in sorted((root / "vector").glob("*/layer*/evaluation_metrics.jsonl")):
        metrics = pd.read_json(StringIO(path.read_text()), lines=True)
        metrics["epoch"] = metrics["epoch"].map(lambda x: int(np.ceil(x)))
    out = {}
    for key, paths in sorted(files.items()):
        data = {k: pd.read_json(StringIO(p.read_text()), lines=True) for k, p in paths.items()}
        out[key] = _naive_cell(data, stats)
    return out


def _naive_cell(data: dict[str, pd.DataFrame], stats: object) -> dict[str, float]:
    result = {}
    coh = data["coherence"].groupby("multiplier")["score"].agg(["mean", "std"]).reset_index()
    coh = coh[coh["multiplier"].between(*RANGE)]
    result["auc"] = float(np.trapezoid(coh["mean"], coh["multiplier"]))
    rel = data["relationship"].groupby("multiplier")["score"].agg(["mean", "std"]).reset_index()
    rel = rel[rel["multiplier"].between(*RANGE)]
    result["rating_slope"] = float(stats.linregress(rel["multiplier"], rel["mean"]).slope)  # type: ignore[attr-defined]
    gen = data["generations"]
    for col in ("propensity", "perplexity"):
        gen.groupby("multiplier")[col].agg(["mean", "std"])
    pw = data["pairwise"]
    pw = pw[pw["multiplier_a"].between(*RANGE) & pw["multiplier_b"].between(*RANGE)]
    mults = sorted(set(pw["multiplier_a"]) | set(pw["multiplier_b"]))
    wins, total = defaultdict(int), defaultdict(int)
    for _, row in pw.iterrows():
        winner = row["multiplier_a"] if row["model_response"] == "A" else row["multiplier_b"]
        wins[winner] += 1
        total[row["multiplier_a"]] += 1
        total[row["multiplier_b"]] += 1
    rates = [wins[m] / total[m] for m in mults]
    result["winrate_slope"] = float(stats.linregress(mults, rates).slope)  # type: ignore[attr-defined]
    ratings = dict.fromkeys(mults, 1500.0)
    for _, row in pw.iterrows():
        a, b = row["multiplier_a"], row["multiplier_b"]
        s = 1.0 if row["model_response"] == "A" else 0.0
        ra, rb = ratings[a], ratings[b]
        ea = 1 / (1 + 10 ** ((rb - ra) / 400))
        ratings[a] = ra + 32 * (s - ea)
        ratings[b] = rb + 32 * ((1 - s) - (1 / (1 + 10 ** ((ra - rb) / 400))))
    result["elo_slope"] = float(stats.linregress(mults, [ratings[m] for m in mults]).slope)  # type: ignore[attr-defined]
    return result


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the figure workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def compare(candidates: pd.DataFrame, naive: dict[tuple[str, int, int], dict[str, float]]) -> float:
    """Largest absolute difference between our per-cell numbers and the baseline's."""
    worst = 0.0
    for row in candidates.itertuples():
        ref = naive[(row.model, int(row.layer), int(row.epoch))]
        for col in ("auc", "rating_slope", "winrate_slope", "elo_slope"):
            worst = max(worst, abs(float(getattr(row, col)) - ref[col]))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=170, help="test prompts per cell (170 ≈ 1.2 M judge rows)")
    parser.add_argument("--workers", type=int, default=0, help="figure processes (0 = one per CPU)")
    parser.add_argument("--corpus", type=Path, help="reuse or keep the corpus here (default: a temp dir)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "report.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="steertui-bench-"))
    corpus = args.corpus or tmp / "corpus"
    try:
        # clean corpus (no injected defects), so our numbers and the baseline's must agree exactly
        spec = SynthSpec(prompts=args.prompts, defects=False)
        if not (corpus / "vector_evals").exists():
            print(f"writing corpus to {corpus} ...", flush=True)
            write_corpus(corpus, spec)
        load = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        result = build_report([SourceSpec("bench", corpus)], tmp / "report", ReportOptions(workers=args.workers))
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
        rows = result.analysis.judge_rows
        record = {
            "rows": rows, "generation_rows": result.analysis.generation_rows,
            "cells": int(len(result.analysis.tables["candidates"])), "seconds": round(seconds, 2),
            "analyse_seconds": round(result.seconds["analyse"], 2),
            "write_seconds": round(result.seconds["write"], 2), "rows_per_second": round(rows / seconds),
            "report_cpu_seconds": round(cpu, 2),
            "figure_files": sum(len(v) for v in result.figures.values()),
            "cpu_count": os.cpu_count(), "load_average_at_start": round(load, 2), "machine": platform.platform(),
            "python": platform.python_version(), "pandas": pd.__version__,
            "baseline": "pandas read_json(lines=True) per file + groupby + iterrows win-rate/Elo loops (notebooks)",
        }  # fmt: skip
        cpu_before = _cpu_seconds()
        analyse([SourceSpec("bench", corpus)])  # again, alone: the like-for-like CPU figure for the baseline
        analyse_cpu = _cpu_seconds() - cpu_before
        record["analyse_cpu_seconds"] = round(analyse_cpu, 2)
        print(json.dumps(record, indent=2), flush=True)
        if not args.skip_baseline:
            cpu_before, start = _cpu_seconds(), time.perf_counter()
            naive = naive_baseline(corpus)
            baseline, baseline_cpu = time.perf_counter() - start, _cpu_seconds() - cpu_before
            record.update(baseline_seconds=round(baseline, 2), baseline_cpu_seconds=round(baseline_cpu, 2),
                          load_average_at_end=round(os.getloadavg()[0], 2),
                          speedup_analysis=round(baseline / result.seconds["analyse"], 1),
                          speedup_full_report=round(baseline / seconds, 1),
                          speedup_analysis_cpu=round(baseline_cpu / analyse_cpu, 1),
                          max_abs_diff_vs_baseline=compare(result.analysis.tables["candidates"], naive))  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    agree = float(record.get("max_abs_diff_vs_baseline", 0.0)) < 1e-9
    print("ours and the baseline agree" if agree else "ours and the baseline DISAGREE", file=sys.stderr)
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
