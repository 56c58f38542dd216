"""`steertui config show|reference`: the resolved config, and the reference generated from the code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any

from steertui.cli.common import add_parser, load

ORDER = 90


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "config", "config: show the resolved values, print the reference")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = add_parser(csub, common, "show", "the config after defaults < steertui.toml < STEERTUI_* env")
    show.set_defaults(func=run_show)
    ref = add_parser(csub, common, "reference", "every key with its default and meaning (markdown)")
    ref.set_defaults(func=run_reference)


def run_show(args: argparse.Namespace) -> int:
    config = load(args)

    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and math.isinf(value) else value

    data = json.loads(json.dumps(dataclasses.asdict(config), default=str), parse_float=float)
    data["judge"]["budget_usd"] = clean(config.judge.budget_usd)
    print(json.dumps(data, indent=2))
    return 0


def run_reference(args: argparse.Namespace) -> int:
    from steertui.config_doc import reference

    print(reference(), end="")
    return 0
