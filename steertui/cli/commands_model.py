"""`steertui model prepare|info NAME`: fetch/convert a model into the cache, show its shape."""

from __future__ import annotations

import argparse
import time
from typing import Any

from steertui.cli.common import add_parser

ORDER = 85


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_parser(sub, common, "model", "models: prepare (convert/cache once), info")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    prep = add_parser(msub, common, "prepare", "materialise aliases and convert GGUF files into the cache")
    prep.add_argument("names", nargs="+", metavar="NAME", help="smollm2-135m, tiny-random, a .gguf file or hub id")
    prep.set_defaults(func=run_prepare)
    info = add_parser(msub, common, "info", "layers, hidden size, dtype and where a model loads from")
    info.add_argument("name", metavar="NAME")
    info.set_defaults(func=run_info)


def run_prepare(args: argparse.Namespace) -> int:
    from pipeline.models import local_model_dir

    for name in args.names:
        start = time.monotonic()
        path = local_model_dir(name)
        where = path if path is not None else "the Hugging Face cache (downloaded on first load)"
        print(f"{name}: {where} ({time.monotonic() - start:.1f}s)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from pipeline.models import load_model

    start = time.monotonic()
    lm = load_model(args.name, device="cpu")
    print(f"{args.name}: {type(lm.model).__name__}, {lm.num_layers} layers, hidden {lm.hidden_size}, "
          f"{lm.dtype}, loaded in {time.monotonic() - start:.1f}s")  # fmt: skip
    return 0
