"""`steertui status [--json]`: the plan's matrix, jobs, GPUs and costs, read from the store and artifacts."""

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


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Everything `status` shows, as plain data."""
    from pipeline.store import open_store
    from steertui.gpus import inventory
    from steertui.plan import build_plan

    config = load(args)
    ws = workspace(args)
    gpus = inventory()
    plan = build_plan(ws, config, gpu_machine=bool(gpus))
    with open_store(ws.db_path) as store:
        rows = {r["cell"]: dict(r) for r in store.query("SELECT * FROM jobs")}
        leases = [dict(r) for r in store.query("SELECT * FROM gpu_leases")]
        costs = _costs(store)
    cells = []
    for cell in plan.cells:
        row = rows.get(cell.key, {})
        prog = plan.progress(cell)
        state = "done" if prog.complete else row.get("state", "pending")
        cells.append({
            "cell": cell.key, "kind": cell.kind, "model": cell.short, "layer": cell.layer, "epoch": cell.epoch,
            "task": cell.task, "state": state, "done": prog.done, "expected": prog.expected,
            "attempts": row.get("attempts", 0), "pid": row.get("pid"), "gpus": json.loads(row.get("gpus") or "[]"),
            "eta_s": row.get("eta_s"), "message": row.get("message"), "error": (row.get("error") or "")[:500],
            "node": row.get("node"), "external_id": row.get("external_id"),
        })  # fmt: skip
    return {
        "workspace": str(ws.root),
        "behavior": config.behavior,
        "cells": cells,
        "gpus": [dict(vars(g)) for g in gpus],
        "leases": leases,
        "costs": costs,
        "budget_usd": None if config.judge.budget_usd == float("inf") else config.judge.budget_usd,
    }


def _costs(store: Any) -> list[dict[str, Any]]:
    from pipeline.judges.costs import spend_summary

    return [dict(r) for r in spend_summary(store)]


def run(args: argparse.Namespace) -> int:
    data = collect(args)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"workspace {data['workspace']}  behaviour {data['behavior']}")
    if not data["cells"]:
        console.print("plan: empty (add [[models]] to steertui.toml)")
        return 0
    table = Table(box=None, pad_edge=False)
    for name in ("cell", "state", "progress", "attempts", "info"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for c in data["cells"]:
        info = c["error"].splitlines()[0] if c["state"] == "failed" and c["error"] else (c["message"] or "")
        where = f" gpus {c['gpus']}" if c["gpus"] else ""
        table.add_row(c["cell"], c["state"], f"{c['done']}/{c['expected']}", str(c["attempts"] or 0),
                      (info + where)[:80])  # fmt: skip
    console.print(table)
    for g in data["gpus"]:
        console.print(f"GPU {g['index']} {g['name']}: {g['memory_used_mib']}/{g['memory_total_mib']} MiB, "
                      f"{g['utilization']}% util")  # fmt: skip
    total = sum(float(c.get("cost_usd", 0) or 0) for c in data["costs"])
    budget = f" of ${data['budget_usd']:.2f}" if data["budget_usd"] is not None else ""
    console.print(f"judge spend ${total:.4f}{budget}")
    return 0
