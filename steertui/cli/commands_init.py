"""`steertui init DIR --example demo|paper|smoke`: write a new workspace."""

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
    p.add_argument("--behavior", default="relationship-seeking", help="behaviour name (default relationship-seeking)")
    p.add_argument("--force", action="store_true", help="overwrite an existing steertui.toml")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser().resolve()
    config = root / "steertui.toml"
    if config.exists() and not args.force:
        raise InputError(f"{config}: already a workspace; pass --force to overwrite its steertui.toml")
    src = bundled_root()
    data_src = src / "data" / args.behavior
    rubric_src = src / "rubrics" / f"{args.behavior}.toml"
    if not data_src.is_dir() or not rubric_src.is_file():
        raise InputError(
            f"--behavior {args.behavior}: no bundled dataset/rubric for it in {src}; "
            "bundled: " + ", ".join(sorted(p.stem for p in (src / "rubrics").glob("*.toml")))
        )
    write_workspace(root, args.example, args.behavior, data_src, rubric_src)
    print(f"workspace ready: {root}  (example {args.example}, behaviour {args.behavior})")
    print(f"next: cd {root} && steertui run --headless   # or just `steertui` for the TUI")
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
