"""The `steertui` command: one parser, one subcommand module per area, errors translated here only.

Exit codes (SPEC §6): 0 done, 1 failed work, 2 bad input/config, 130 interrupted.
Subcommand modules import heavy libraries inside their handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from pipeline.errors import SteerError
from steertui import __version__
from steertui.cli import commands_data, commands_init, commands_model, commands_status, commands_vector

COMMAND_MODULES = [commands_init, commands_status, commands_data, commands_vector, commands_model]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace", "-w", metavar="DIR", default=argparse.SUPPRESS,
        help="workspace directory (default: $STEERTUI_WORKSPACE or the current directory)",
    )  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="steertui",
        description="Train, generate, judge and pick BiPO steering vectors. With no command: the TUI.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"steertui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "workspace"):
        args.workspace = None
    handler = getattr(args, "func", None)
    try:
        if handler is None:
            from steertui.cli.commands_tui import run_tui

            return run_tui(args)
        return int(handler(args) or 0)
    except SteerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        traceback.print_exc()
        return 1
