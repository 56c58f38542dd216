"""Shared entry-point plumbing for stage workers (`python -m pipeline.<stage> ...`).

A worker parses its flags, resolves the workspace config (defaults < file < env < flags), picks a
reporter (the job's store row when `--job-id` is given, else plain lines), runs the stage's typed core,
and maps errors to the CLI contract's exit codes: 0 done, 1 failed work, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pipeline.config import Config
from pipeline.errors import SteerError
from pipeline.progress import PrintReporter, Reporter
from pipeline.workspace import Workspace, resolve_workspace


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--workspace", "-w", metavar="DIR", default=None, help="workspace (default: cwd)")
    parser.add_argument("--job-id", type=int, default=None, help="report progress into this job row of the store")
    return parser


def resolve_config(args: argparse.Namespace, flags: Mapping[str, str]) -> tuple[Workspace, Config]:
    """Workspace + config with the typed flags of `flags` (attr -> dotted key) applied last."""
    from pipeline.config_load import load_config
    from pipeline.models import layer_count

    ws = Workspace(resolve_workspace(args.workspace))
    overrides = {key: getattr(args, attr) for attr, key in flags.items() if getattr(args, attr, None) is not None}
    return ws, load_config(ws.root, env=os.environ, overrides=overrides, layer_count=layer_count)


@contextmanager
def reporter_for(ws: Workspace, job_id: int | None) -> Iterator[Reporter]:
    if job_id is None:
        yield PrintReporter()
        return
    from pipeline.store import open_store
    from pipeline.store.jobs import StoreReporter

    store = open_store(ws.db_path)
    try:
        yield StoreReporter(store, job_id, echo=PrintReporter())
    finally:
        store.close()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_worker(body: Callable[[], Any]) -> int:
    """Run a stage body with the exit-code contract; SIGTERM is treated like Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        body()
    except SteerError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    return 0
