"""`steertui run --headless [--stages ...] [--once]`: run the plan without a screen."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.errors import InputError
from steertui.cli.common import add_parser, load, workspace

ORDER = 15


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "run", "run the plan: train, generate and score every cell of the matrix")
    p.add_argument("--headless", action="store_true", help="line output instead of the TUI (tmux, CI)")
    p.add_argument(
        "--stages", default="train,generate,score,prompting",
        help="comma-separated subset of train,generate,score,prompting (default: all)",
    )  # fmt: skip
    p.add_argument("--once", action="store_true", help="one scheduling pass: launch what can start, then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.store import open_store
    from steertui.plan import STAGES

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise InputError(f"--stages: unknown stage {bad[0] if bad else '(none)'}; use {','.join(STAGES)}")
    config = load(args)
    ws = workspace(args)
    if not args.headless:
        from steertui.cli.commands_tui import run_tui

        return run_tui(args, schedule=True, stages=stages)
    from steertui.headless import run_headless

    with open_store(ws.db_path) as store:
        return run_headless(ws, config, store, stages, once=args.once)
