"""Helpers shared by subcommands: workspace and config resolution, flag-to-config overrides."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from pipeline.config import Config
from pipeline.workspace import Workspace, resolve_workspace


def workspace(args: argparse.Namespace) -> Workspace:
    return Workspace(resolve_workspace(getattr(args, "workspace", None)))


def flag_overrides(args: argparse.Namespace, mapping: Mapping[str, str]) -> dict[str, Any]:
    """Dotted config keys for the flags the user actually typed (argparse default None = not typed)."""
    out = {}
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = value
    return out


def load(args: argparse.Namespace, mapping: Mapping[str, str] | None = None, *, check_layers: bool = True) -> Config:
    """The workspace config with env and flag overrides applied (defaults < file < env < flags)."""
    from pipeline.config_load import load_config
    from pipeline.models import layer_count

    ws = workspace(args)
    return load_config(
        ws.root,
        env=os.environ,
        overrides=flag_overrides(args, mapping or {}),
        layer_count=layer_count if check_layers else None,
    )


def add_parser(sub: Any, common: argparse.ArgumentParser, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
    return parser


def floats(text: str) -> tuple[float, ...]:
    """Parse "a,b,c" into floats (for --multipliers)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
