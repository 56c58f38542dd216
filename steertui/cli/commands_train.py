"""`steertui train --model M --layer L ...`: train one BiPO vector in this process (or under accelerate)."""

from __future__ import annotations

import argparse
from typing import Any

from steertui.cli.common import add_parser

ORDER = 30


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from pipeline.train_cli import add_arguments

    p = add_parser(sub, common, "train", "train a BiPO steering vector for one (model, layer)")
    add_arguments(p)
    p.set_defaults(func=run, job_id=None)


def run(args: argparse.Namespace) -> int:
    from pipeline.train_cli import run as run_stage

    run_stage(args)
    return 0
