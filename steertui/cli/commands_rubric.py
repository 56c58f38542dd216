"""`steertui rubric validate [NAME|PATH]`: every missing, empty or unfilled (TODO) rubric field, one per line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from steertui.cli.common import add_parser, load, workspace

ORDER = 76


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "rubric", "behaviour rubrics (rubrics/NAME.toml): validate")
    rubric_sub = p.add_subparsers(dest="rubric_command", metavar="ACTION", required=True)
    what = "report each missing, empty or unfilled (TODO) field as `file: field: problem` (exit 2 if any)"
    v = add_parser(rubric_sub, common, "validate", what)
    v.add_argument("name", nargs="?", metavar="NAME|PATH",
                   help="behaviour name or a .toml path (default: the workspace's behaviour)")  # fmt: skip
    v.set_defaults(func=run_validate)


def rubric_path(args: argparse.Namespace, name: str | None) -> Path:
    """A .toml path as given, else `rubrics/<name>.toml` of the workspace (name default: its behaviour)."""
    if name and (name.endswith(".toml") or "/" in name):
        return Path(name).expanduser().resolve()
    from pipeline.rubric_scaffold import check_name

    ws = workspace(args)
    return ws.rubric_path(check_name(name, "NAME") if name else load(args, check_layers=False).behavior)


def run_validate(args: argparse.Namespace) -> int:
    from pipeline.rubric import load_rubric, validate_rubric

    path = rubric_path(args, args.name)
    problems = validate_rubric(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 2
    rubric = load_rubric(path)
    print(f"{path}: ok (behaviour {rubric.name}, task {rubric.task})")
    return 0
