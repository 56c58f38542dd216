"""`steertui score`: LLM-judge scoring of one vector's generations (runs `pipeline.score` in-process)."""

from __future__ import annotations

import argparse
from typing import Any

from steertui.cli.common import add_parser, load, workspace

ORDER = 50
FLAGS = {"judge": "judge.judge", "mode": "judge.mode", "budget_usd": "judge.budget_usd"}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "score", "judge one vector's generations: coherence, the behaviour rating, or pairwise")
    p.add_argument("--model", required=True, metavar="M", help="model (hub id, directory or alias)")
    p.add_argument("--layer", type=int, required=True, metavar="L")
    p.add_argument("--epoch", type=int, required=True, metavar="E")
    p.add_argument("--task", required=True, help="coherence, the behaviour's task (from its rubric), or pairwise")
    p.add_argument("--judge", default=None, metavar="PROVIDER:MODEL", help="openai:MODEL or anthropic:MODEL")
    p.add_argument("--mode", choices=("sync", "batch"), default=None, help="sync requests or the batch API")
    p.add_argument("--budget-usd", type=float, default=None, metavar="X", help="cap on the workspace's judge spend")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.progress import PrintReporter
    from pipeline.score import ScoreJob, run_score

    config = load(args, FLAGS, check_layers=False)
    job = ScoreJob(workspace(args), config, args.model, args.layer, args.epoch, args.task)
    result = run_score(job, PrintReporter())
    print(f"{result.already + result.written}/{result.items} scored ({result.invalid} invalid) -> {result.path}")
    return 0
