"""`steertui init DIR --example demo|paper|smoke [--behavior NAME]`: write a new workspace.

A bundled behaviour (relationship-seeking, sycophancy) comes with its dataset and rubric; any other name
gets a rubric scaffold to fill in (`pipeline.rubric_scaffold`) and an empty `data/NAME/`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from steertui.cli.common import add_parser
from steertui.examples import EXAMPLES, bundled_root, render

WORKSPACE_DIRS = ("data", "rubrics", "vector", "vector_evals", "logs")


ORDER = 10


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "init", "create a workspace: steertui.toml, dataset, rubric")
    p.add_argument("dir", metavar="DIR", help="directory to create or fill")
    p.add_argument("--example", choices=EXAMPLES, default="demo", help="which config to start from (default demo)")
    p.add_argument("--behavior", default="relationship-seeking",
                   help="behaviour name (default relationship-seeking); one that is not bundled gets a rubric "
                        "scaffold to fill in")  # fmt: skip
    p.add_argument("--task", default="", help="a new behaviour's rating task, for score file names (default: NAME)")
    p.add_argument("--force", action="store_true", help="overwrite an existing steertui.toml")
    p.set_defaults(func=run)


def bundled_behaviors() -> list[str]:
    """Behaviours shipped with a dataset and a rubric."""
    src = bundled_root()
    return sorted(p.stem for p in (src / "rubrics").glob("*.toml") if (src / "data" / p.stem).is_dir())


def run(args: argparse.Namespace) -> int:
    from pipeline.rubric_scaffold import check_name

    root = Path(args.dir).expanduser().resolve()
    config = root / "steertui.toml"
    if config.exists() and not args.force:
        raise InputError(f"{config}: already a workspace; pass --force to overwrite its steertui.toml")
    behavior = check_name(args.behavior)
    if behavior in bundled_behaviors():
        if args.task:
            raise InputError(f"--task: {behavior} is bundled with its rubric's task; --task is for new behaviours")
        src = bundled_root()
        write_workspace(root, args.example, behavior, src / "data" / behavior, src / "rubrics" / f"{behavior}.toml")
        print(f"workspace ready: {root}  (example {args.example}, behaviour {behavior})")
        print(f"next: cd {root} && steertui run --headless   # or just `steertui` for the TUI")
        return 0
    scaffold_workspace(root, args.example, behavior, args.task)
    return 0


def write_workspace(root: Path, example: str, behavior: str, data_src: Path, rubric_src: Path) -> None:
    from pipeline.files import atomic_write_text

    for name in WORKSPACE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    data_dst = root / "data" / behavior
    if data_src.resolve() != data_dst.resolve():
        data_dst.mkdir(parents=True, exist_ok=True)
        for path in sorted(data_src.glob("*.jsonl")):
            shutil.copyfile(path, data_dst / path.name)
    rubric_dst = root / "rubrics" / rubric_src.name
    if rubric_src.resolve() != rubric_dst.resolve():
        shutil.copyfile(rubric_src, rubric_dst)
    atomic_write_text(root / "steertui.toml", render(example, behavior))


def scaffold_workspace(root: Path, example: str, behavior: str, task: str) -> None:
    """A workspace for a new behaviour: the config, a rubric scaffold (an existing rubric is kept), data/NAME/."""
    from pipeline.files import atomic_write_text
    from pipeline.rubric_scaffold import check_task, write_scaffold
    from steertui.cli.commands_behavior import next_steps

    if task:
        check_task(task)
    for name in WORKSPACE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    rubric = root / "rubrics" / f"{behavior}.toml"
    kept = rubric.exists()
    if not kept:
        write_scaffold(root, behavior, task)
    (root / "data" / behavior).mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "steertui.toml", render(example, behavior))
    print(f"workspace ready: {root}  (example {example}, new behaviour {behavior})")
    print(f"{'kept the existing' if kept else 'wrote a scaffold'} {rubric}")
    print(next_steps(behavior, used=True))
