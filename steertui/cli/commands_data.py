"""`steertui data validate PATH` and `steertui data generate --behavior NAME --provider P`: DPO datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from steertui.cli.common import add_parser, load, workspace

ORDER = 70
GENERATE_FLAGS = {"judge": "judge.judge", "mode": "judge.mode", "budget_usd": "judge.budget_usd"}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "data", "DPO datasets: validate, or generate one with an LLM provider")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    v = add_parser(data_sub, common, "validate", "check DPO JSONL files against the schema (SPEC 5.1)")
    v.add_argument("paths", nargs="+", metavar="PATH", help="JSONL files or directories holding them")
    v.set_defaults(func=run_validate)
    _register_generate(data_sub, common)


def _register_generate(data_sub: Any, common: argparse.ArgumentParser) -> None:
    g = add_parser(data_sub, common, "generate",
                   "write data/NAME/{train,test}.jsonl from LLM-generated cases: generate, repair, de-duplicate, "
                   "quality-score with the judge, keep the good ones, split by conversation; resumable, on the "
                   "judge ledger and budget")  # fmt: skip
    g.add_argument("--behavior", metavar="NAME", help="behaviour (default: the workspace's); needs its definition, "
                   "target, anti_target and levels.examples filled in rubrics/NAME.toml")  # fmt: skip
    g.add_argument(
        "--provider", required=True, metavar="P", help="who writes the cases: openai:MODEL or anthropic:MODEL"
    )
    g.add_argument("--judge", metavar="P", help="quality judge (default: the workspace's judge.judge)")
    g.add_argument("--n-cases", type=int, default=100, metavar="N",
                   help="cases to ask for, rounded up to whole requests (default 100)")  # fmt: skip
    g.add_argument("--per-request", type=int, default=10, metavar="K",
                   help="cases per single-turn request; multi-turn and long ones ask for K/2 (default 10)")  # fmt: skip
    g.add_argument("--min-score", type=float, default=6.0, metavar="S", help="keep cases scored >= S (default 6)")
    g.add_argument("--test-fraction", type=float, default=0.05, metavar="F",
                   help="share of conversations held out for test, one row each (default 0.05)")  # fmt: skip
    g.add_argument(
        "--seed", type=int, default=42, help="split and test-row choice; a new seed reuses every answer (default 42)"
    )
    g.add_argument("--max-tokens", type=int, default=16384, metavar="T", help="per generation reply (default 16384)")
    g.add_argument("--budget-usd", type=float, metavar="X", help="cap on the workspace's spending (judge.budget_usd)")
    g.add_argument("--mode", choices=("sync", "batch"), help="sync requests or the provider's batch API")
    g.add_argument("--force", action="store_true", help="replace train/test files that generation did not write")
    g.set_defaults(func=run_generate)


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        out.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    return out


def run_validate(args: argparse.Namespace) -> int:
    from pipeline.data import load_pairs, validate_file

    bad = 0
    for path in _expand(args.paths):
        problems = validate_file(path)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            bad += len(problems)
            continue
        pairs = load_pairs(path)
        multi = sum(p.multi_turn for p in pairs)
        print(f"{path}: ok, {len(pairs)} pairs ({multi} multi-turn)")
    if bad:
        print(f"{bad} problem(s) found", file=sys.stderr)
        return 2
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from pipeline.datagen import GenJob, run_datagen
    from pipeline.errors import ConfigError, InputError
    from pipeline.judges.providers import split_spec
    from pipeline.progress import PrintReporter
    from pipeline.rubric_scaffold import check_name

    try:
        split_spec(args.provider)
    except ConfigError:
        raise InputError(f"--provider {args.provider!r}: expected openai:MODEL or anthropic:MODEL") from None
    config = load(args, GENERATE_FLAGS, check_layers=False)
    behavior = check_name(args.behavior or config.behavior)
    job = GenJob(workspace(args), config, behavior, args.provider, n_cases=args.n_cases,
                 per_request=args.per_request, min_score=args.min_score, test_fraction=args.test_fraction,
                 seed=args.seed, max_tokens=args.max_tokens, force=args.force)  # fmt: skip
    result = run_datagen(job, PrintReporter())
    print(f"{result.cases} cases from {result.requests} requests, {result.duplicates} duplicates dropped, "
          f"{result.kept} of {result.scored} scored kept, ${result.spent_usd:.4f} spent")  # fmt: skip
    print(f"wrote {result.train_path} ({result.train_rows} rows) and {result.test_path} ({result.test_rows} rows)")
    print(f"next: steertui data validate {Path(result.train_path).parent}   # then train on it")
    return 0
