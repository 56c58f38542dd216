"""Flags of the prompting stages, shared by `python -m pipeline.prompting` and `steertui prompting`.

Import-light (argparse only) so `steertui --help` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

# CLI attribute -> dotted config key (flags the user typed override steertui.toml and env)
FLAGS = {"levels": "prompting.levels", "mode": "judge.mode", "budget_usd": "judge.budget_usd",
         "judge": "judge.judge", "vector": "prompting.vector", "max_prompts": "prompting.max_prompts",
         "gpus": "generate.gpus"}  # fmt: skip


def add_arguments(sub: Any, parent: argparse.ArgumentParser | None) -> None:
    """The five subcommands (shared by `python -m pipeline.prompting` and `steertui prompting`)."""
    common = argparse.ArgumentParser(add_help=False, parents=[parent] if parent is not None else [])
    common.add_argument("--levels", type=int, choices=(7, 9), default=None, help="7 (λ −1.5…1.5) or 9 (λ −2…2)")
    common.add_argument("--mode", choices=("sync", "batch"), default=None, help="sync requests or the batch API")
    common.add_argument("--budget-usd", type=float, default=None, metavar="X", help="cap on the workspace's spend")
    common.add_argument("--gpus", type=int, default=None, help=argparse.SUPPRESS)
    provider = "[label=]anthropic:MODEL, [label=]openai:MODEL, or a configured label"
    helps = {
        "generate": "exp1: replies at every level of N from a prompted model",
        "rate": "exp1: rate the prompted replies (coherence and the behaviour task)",
        "rank": "exp1: prompted vs vector replies, head to head at matched level/multiplier",
        "stability": "exp2: scripted persona-attack conversations with a prompted model or the steered model",
        "stability-rate": "exp2: rate every assistant turn with the behaviour rating",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text, parents=[common])
        p.add_argument("--provider", required=name in ("generate", "rate", "rank"), metavar="P", help=provider)
        if name in ("rank", "stability", "stability-rate"):
            p.add_argument("--vector", default=None, metavar="MODEL:LAYER:EPOCH", help="default: prompting.vector")
        if name in ("rate", "rank", "stability-rate"):
            p.add_argument("--judge", default=None, metavar="PROVIDER:MODEL", help="default: judge.judge")
        if name == "rate":
            p.add_argument("--task", default=None, help="coherence or the behaviour's task (default: both)")
        if name == "generate":
            p.add_argument("--max-prompts", type=int, default=None, help="first N test prompts (0 = as generate)")
        p.set_defaults(subcommand=name)
