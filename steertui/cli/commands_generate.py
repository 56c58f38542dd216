"""`steertui generate`: steered replies for every test prompt × multiplier, in this process (resumable)."""

from __future__ import annotations

import argparse
from typing import Any

from steertui.cli.common import add_parser, load, workspace

ORDER = 40


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from pipeline.generate import add_arguments  # light: torch is imported only when generation runs

    p = add_parser(sub, common, "generate", "steered replies for every test prompt × multiplier (resumable)")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.generate import FLAGS, run_from_args
    from pipeline.progress import PrintReporter

    cfg = load(args, FLAGS)
    result = run_from_args(args, workspace(args), cfg, PrintReporter())
    if result is not None:
        print(result.path)
    return 0
