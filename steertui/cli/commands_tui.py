"""`steertui` with no command: open the Textual app on the workspace."""

from __future__ import annotations

import argparse

from pipeline.errors import InputError


def run_tui(args: argparse.Namespace, *, schedule: bool = False, stages: tuple[str, ...] = ()) -> int:
    raise InputError("the TUI is not available in this build yet; use `steertui --help` for the commands")
