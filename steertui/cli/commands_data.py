"""`steertui data validate PATH`: check DPO files, reporting `file:line: field: problem`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from steertui.cli.common import add_parser

ORDER = 70


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "data", "DPO datasets: validate (and generate, with a provider)")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    v = add_parser(data_sub, common, "validate", "check DPO JSONL files against the schema (SPEC 5.1)")
    v.add_argument("paths", nargs="+", metavar="PATH", help="JSONL files or directories holding them")
    v.set_defaults(func=run_validate)


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
