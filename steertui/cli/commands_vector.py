"""`steertui vector info|import|export`: inspect, import the study's layout, export to llama.cpp."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from steertui.cli.common import add_parser, workspace

ORDER = 80


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "vector", "steering vectors: info, import, export")
    vsub = p.add_subparsers(dest="vector_command", metavar="ACTION", required=True)
    info = add_parser(vsub, common, "info", "show a vector's size, norm and metadata")
    info.add_argument("paths", nargs="+", metavar="PATH")
    info.add_argument("--json", action="store_true", help="one JSON object per vector")
    info.set_defaults(func=run_info)
    imp = add_parser(vsub, common, "import", "import vectors in the study's layout into the workspace")
    imp.add_argument("src", metavar="DIR", help="vector/<behavior>_<model> (or its parent vector/ directory)")
    imp.set_defaults(func=run_import)
    exp = add_parser(vsub, common, "export", "export a vector as a llama.cpp control vector (GGUF)")
    exp.add_argument("path", metavar="PATH")
    exp.add_argument("--gguf", metavar="OUT", required=True, help="output .gguf file")
    exp.add_argument("--scale", type=float, default=1.0, help="bake a multiplier into the file (default 1)")
    exp.add_argument("--model-hint", default="llama", help="llama.cpp architecture hint (default llama)")
    exp.set_defaults(func=run_export)


def run_info(args: argparse.Namespace) -> int:
    from pipeline.vectors import vector_info

    for raw in args.paths:
        info = vector_info(Path(raw))
        if args.json:
            print(json.dumps(info, sort_keys=True))
            continue
        print(info["path"])
        for key in ("model", "layer", "epoch", "hidden_size", "norm", "dtype", "hook_site", "config_hash", "source"):
            if key in info and info[key] not in ("", None):
                print(f"  {key:<12} {info[key]}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from pipeline.vector_io import import_study

    ws = workspace(args)
    result = import_study(Path(args.src).expanduser(), ws)
    sizes = ", ".join(str(s) for s in sorted(result.hidden_sizes)) or "-"
    print(
        f"imported {result.imported} vector(s), {result.skipped} already present, "
        f"{result.metrics_rows} metric rows; runs: {', '.join(result.runs)}; hidden size {sizes}"
    )
    print(f"into {ws.root / 'vector'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pipeline.vector_io import export_gguf

    out = export_gguf(Path(args.path), Path(args.gguf), scale=args.scale, model_hint=args.model_hint)
    print(f"wrote {out} (llama.cpp: --control-vector {out})")
    return 0
