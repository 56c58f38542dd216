"""The `steertui` command: one parser, one subcommand module per area, errors translated here only.

Exit codes (SPEC §6): 0 done, 1 failed work, 2 bad input/config, 130 interrupted.
Subcommand modules import heavy libraries inside their handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from pipeline.errors import SteerError
from steertui import __version__


def command_modules() -> list[ModuleType]:
    """Every `steertui.cli.commands_*` module that registers commands, in their `ORDER`."""
    import steertui.cli as package

    found = [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.startswith("commands_")
    ]
    return sorted((m for m in found if hasattr(m, "register")), key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


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
    for module in command_modules():
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.worker import glue_number_lists

    parser = build_parser()
    args = parser.parse_args(glue_number_lists(list(sys.argv[1:] if argv is None else argv)))
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
