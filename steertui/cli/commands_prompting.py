"""`steertui prompting generate|rate|rank|stability|stability-rate`: the prompting experiments (runs
`pipeline.prompting` in-process; the plan runs the same stages as cells)."""

from __future__ import annotations

import argparse
from typing import Any

from steertui.cli.common import add_parser, load, workspace

ORDER = 55


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "prompting", "prompting baselines: exp1 steerability (levels), exp2 persona stability")
    inner = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    from pipeline.prompting_cli import add_arguments  # argparse only

    add_arguments(inner, common)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.progress import PrintReporter
    from pipeline.prompting import run_subcommand
    from pipeline.prompting_cli import FLAGS

    config = load(args, FLAGS, check_layers=False)
    run_subcommand(args, workspace(args), config, PrintReporter())
    return 0
