"""`steertui status [--json]`: the plan's matrix, jobs and costs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from steertui.cli.common import add_parser, load, workspace

ORDER = 20


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "status", "show the matrix, jobs, GPUs and costs of the workspace")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    ws = workspace(args)
    summary = {
        "workspace": str(ws.root),
        "behavior": config.behavior,
        "models": [{"name": m.name, "layers": list(m.layers), "eval_epochs": list(config.eval_epochs(m))}
                   for m in config.models],
        "jobs": [],
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"workspace {ws.root}  behaviour {config.behavior}")
    if not config.models:
        print("plan: empty (add [[models]] to steertui.toml)")
    for m in config.models:
        print(f"  {m.short}: layers {list(m.layers)}, epochs {list(config.eval_epochs(m))}")
    return 0
