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

NUMBER_LIST_FLAGS = ("--multipliers", "--multiplier")


def glue_number_lists(argv: list[str]) -> list[str]:
    """`--multipliers -2,-1,0` -> `--multipliers=-2,-1,0`: argparse would read "-2,-1,0" as an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NUMBER_LIST_FLAGS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


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


def run_worker(body: Callable[[], Any], args: argparse.Namespace | None = None) -> int:
    """Run a stage body with the exit-code contract; SIGTERM is treated like Ctrl-C.

    With `--job-id`, the exit code and error are also written to the job's row, so a scheduler that
    re-adopted this worker (and so cannot wait for it) still learns how it ended.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    code, error = 0, ""
    try:
        body()
    except SteerError as exc:
        code, error = exc.exit_code, exc.message
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        code, error = 130, "interrupted"
        print("interrupted", file=sys.stderr, flush=True)
    except Exception as exc:
        code, error = 1, f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    job_id = getattr(args, "job_id", None)
    if job_id is not None:
        _record_exit(Workspace(resolve_workspace(args.workspace)), job_id, code, error)  # type: ignore[union-attr]
    return code


def _record_exit(ws: Workspace, job_id: int, code: int, error: str) -> None:
    from pipeline.store import open_store
    from pipeline.store.jobs import record_exit

    with open_store(ws.db_path) as store:
        record_exit(store, job_id, code, error)
