"""`steertui report [--out DIR] [--study DIR]`: tables, figures and report.md for the workspace and/or the study."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from steertui.cli.common import add_parser, floats, load, workspace

ORDER = 60


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "report", "tables, figures and report.md: selection, win rates, Pareto, prompting")
    p.add_argument("--out", metavar="DIR", help="output directory (default: <workspace>/reports)")
    p.add_argument("--study", metavar="DIR",
                   help="also analyse a directory in the study's released layout (vector/, vector_evals/, "
                        "prompting_experiments/); works without a workspace")  # fmt: skip
    p.add_argument(
        "--study-task",
        default="relationship",
        metavar="NAME",
        help="the behaviour's rating task in --study's file names (default: the study's relationship)",
    )
    p.add_argument(
        "--weights",
        type=floats,
        default=(0.5, 0.5),
        metavar="C,S",
        help="coherence,steerability selection weights, normalised to sum 1 (default 0.5,0.5)",
    )
    p.add_argument(
        "--range",
        type=floats,
        default=(-2.0, 2.0),
        metavar="LO,HI",
        dest="window",
        help="multiplier range for AUC, slopes, win rates and Elo (default -2,2)",
    )
    p.add_argument(
        "--rule",
        choices=["strict", "study"],
        default="strict",
        help="pairwise answers: strict = strip(), exclude non-A/B (default); study = non-'A' is a B win",
    )
    p.add_argument("--no-figures", action="store_true", help="tables and report.md only")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import InputError

    if len(args.weights) != 2 or len(args.window) != 2 or args.window[0] >= args.window[1]:
        raise InputError("--weights takes C,S and --range takes LO,HI with LO < HI")
    if min(args.weights) < 0 or sum(args.weights) <= 0:
        raise InputError(f"--weights: need two weights >= 0 with a positive sum, got {args.weights}")
    ws = workspace(args)
    sources = _sources(args)
    from pipeline.report import ReportOptions, SourceSpec, build_report  # pandas, pyarrow: once the input is good

    out = Path(args.out).expanduser().resolve() if args.out else ws.root / "reports"
    options = ReportOptions(weights=tuple(args.weights), lo=args.window[0], hi=args.window[1], rule=args.rule,
                            figures=not args.no_figures)  # fmt: skip
    result = build_report([SourceSpec(*source) for source in sources], out, options)
    summary = _summary(result)
    print(json.dumps(summary, indent=2) if args.json else _text(summary))
    return 0


def _sources(args: argparse.Namespace) -> list[tuple[str, Path, str, str | None]]:
    """(label, root, behaviour task, behaviour) for the workspace (when it has steertui.toml) and --study."""
    from pipeline.artifacts import behaviour_task
    from pipeline.errors import InputError

    ws = workspace(args)
    sources: list[tuple[str, Path, str, str | None]] = []
    if ws.config_path.exists():
        config = load(args, check_layers=False)
        task = behaviour_task(ws, config)
        sources.append(("workspace", ws.root, task, config.behavior))
    if args.study:
        root = Path(args.study).expanduser().resolve()
        if not root.is_dir():
            raise InputError(f"--study {args.study}: not a directory")
        sources.append(("study", root, args.study_task, None))
    if not sources:
        raise InputError(f"{ws.root}: no steertui.toml here and no --study DIR; pass --workspace or --study")
    return sources


def _summary(result: Any) -> dict[str, Any]:
    cands = result.analysis.tables.get("candidates")
    best = {}
    if cands is not None and not cands.empty:
        for source, part in cands.loc[cands["score"].notna()].groupby("source"):
            top = part.sort_values("rank").iloc[0]
            best[source] = {"model": top["model"], "layer": int(top["layer"]), "epoch": int(top["epoch"]),
                            "auc": float(top["auc"]), "steer_metric": top["steer_metric"],
                            "steer_slope": float(top["steer_slope"]), "score": float(top["score"])}  # fmt: skip
    warnings = result.analysis.warnings
    return {"report": str(result.report_path), "judge_rows": result.analysis.judge_rows, "best": best,
            "warnings": {r["code"]: r["count"] for r in warnings.frame().groupby("code")["count"].sum().reset_index()
                         .to_dict("records")} if warnings.rows else {},
            "figures": sum(len(v) for v in result.figures.values()),
            "seconds": round(result.seconds["total"], 2)}  # fmt: skip


def _text(summary: dict[str, Any]) -> str:
    lines = [f"report: {summary['report']}  ({summary['judge_rows']:,} judge rows, {summary['figures']} figure "
             f"files, {summary['seconds']} s)"]  # fmt: skip
    for source, b in summary["best"].items():
        lines.append(f"  best ({source}): {b['model']} L{b['layer']} ep{b['epoch']}  AUC {b['auc']:.2f}, "
                     f"{b['steer_metric']} slope {b['steer_slope']:.3f}, score {b['score']:.3f}")  # fmt: skip
    if summary["warnings"]:
        lines.append("  warnings: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["warnings"].items())))
    return "\n".join(lines)
