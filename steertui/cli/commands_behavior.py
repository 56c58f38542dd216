"""`steertui behavior new NAME` and `steertui behavior list`: add a behaviour to a workspace, see its behaviours."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from steertui.cli.common import add_parser, load, workspace

ORDER = 75
TOP_LEVEL_BEHAVIOR = re.compile(r"^\s*behavior\s*=")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "behavior", "behaviours of the workspace: scaffold a new one, list them")
    behavior_sub = p.add_subparsers(dest="behavior_command", metavar="ACTION", required=True)
    n = add_parser(behavior_sub, common, "new",
                   "write rubrics/NAME.toml (each behaviour-specific field a TODO to fill) and data/NAME/")  # fmt: skip
    n.add_argument("name", metavar="NAME", help="behaviour name: letters, digits, - or _")
    n.add_argument("--task", default="", help="its rating task, used in score file names (default: NAME)")
    n.add_argument("--use", action="store_true", help="also make it the workspace's behaviour in steertui.toml")
    n.add_argument("--force", action="store_true", help="replace an existing rubrics/NAME.toml with the template")
    n.set_defaults(func=run_new)
    ls = add_parser(behavior_sub, common, "list", "behaviours with a rubric or dataset here, and their state")
    ls.set_defaults(func=run_list)


def run_new(args: argparse.Namespace) -> int:
    from pipeline.errors import InputError
    from pipeline.rubric_scaffold import write_scaffold

    ws = workspace(args)
    if not ws.config_path.exists():
        raise InputError(f"{ws.config_path}: no workspace here; create one with "
                         f"`steertui init DIR --behavior {args.name}` or pass --workspace")  # fmt: skip
    path = write_scaffold(ws.root, args.name, args.task, force=args.force)
    if args.use:
        set_behavior(ws.config_path, args.name)
    print(f"wrote {path} and {ws.data_dir(args.name)}/")
    print(next_steps(args.name, used=args.use))
    return 0


def next_steps(name: str, *, used: bool) -> str:
    lines = [
        f"next: fill in every TODO of rubrics/{name}.toml, checking with `steertui rubric validate {name}`;",
        f"      then `steertui data generate --behavior {name} --provider openai:MODEL` (or add your own "
        f"data/{name}/train.jsonl and test.jsonl)",
    ]
    if not used:
        lines.append(f'      and set behavior = "{name}" in steertui.toml to train and judge it')
    return "\n".join(lines)


def set_behavior(config_path: Path, name: str) -> None:
    """Point the workspace at `name`: replace the top-level `behavior = ...` line (or add one first)."""
    from pipeline.files import atomic_write_text

    lines = config_path.read_text(encoding="utf-8").splitlines(keepends=True)
    new = f'behavior = "{name}"\n'
    tables = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    hit = next((i for i in range(tables) if TOP_LEVEL_BEHAVIOR.match(lines[i])), None)
    if hit is None:
        lines.insert(0, new)
    else:
        lines[hit] = new
    atomic_write_text(config_path, "".join(lines))


def run_list(args: argparse.Namespace) -> int:
    from pipeline.files import count_lines
    from pipeline.rubric import read_task_name, validate_rubric

    ws = workspace(args)
    current = load(args, check_layers=False).behavior if ws.config_path.exists() else ""
    names = {p.stem for p in (ws.root / "rubrics").glob("*.toml")}
    names |= {p.name for p in (ws.root / "data").glob("*") if p.is_dir()}
    if not names:
        print(f"no behaviours in {ws.root}; add one with `steertui behavior new NAME`")
        return 0
    print(f"  {'behaviour':<28} {'task':<20} {'rubric':<14} data")
    for name in sorted(names):
        rubric = ws.rubric_path(name)
        problems = len(validate_rubric(rubric)) if rubric.exists() else -1
        state = "missing" if problems < 0 else ("ok" if problems == 0 else f"{problems} problem(s)")
        files = (("train", ws.train_path(name)), ("test", ws.test_path(name)))
        data = [f"{split} {count_lines(p)}" for split, p in files if p.exists()]
        mark = "*" if name == current else " "
        task = read_task_name(rubric) or "-"
        print(f"{mark} {name:<28} {task:<20} {state:<14} {', '.join(data) or 'no train/test yet'}")
    return 0
