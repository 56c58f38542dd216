"""`steertui` with no command: open the Textual app on the workspace (`steertui run`: as its scheduler)."""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import InputError


def run_tui(args: argparse.Namespace, *, schedule: bool = False, stages: tuple[str, ...] = ()) -> int:
    """Run the app until the user quits; running workers are left running (they have their own sessions)."""
    from steertui.cli.common import load, workspace

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InputError("the TUI needs a terminal; use `steertui status` or `steertui run --headless` instead")
    config = load(args)
    ws = workspace(args)
    from steertui.app import AppOptions, make_app
    from steertui.plan import STAGES
    from steertui.screens.engine import EngineOptions

    if schedule:
        from steertui.headless import preflight  # deferred: imports the scheduler (and torch, for artifact checks)

        preflight(ws, config, stages or STAGES)
    options = AppOptions(schedule=schedule, engine=EngineOptions(stages=stages or STAGES))
    app = make_app(ws.root, config=config, options=options)
    code = app.run()
    return int(code or 0)
