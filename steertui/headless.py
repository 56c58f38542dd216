"""`steertui run --headless`: the scheduler with line output, for tmux and CI logs.

SIGINT/SIGTERM stop launching and return (exit 130); running workers keep going in their own sessions
and are adopted by the next `steertui run` or `steertui`.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from rich.console import Console

from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.progress import format_duration
from pipeline.store import Store
from pipeline.workspace import Workspace
from steertui.executors import make_executor
from steertui.plan import STAGES
from steertui.scheduler import Event, Scheduler, scheduler_lock

STYLE = {"launch": "cyan", "adopt": "cyan", "done": "green", "retry": "yellow", "failed": "bold red",
         "skipped": "magenta", "cancelled": "magenta"}  # fmt: skip
SUMMARY_EVERY_S = 15.0
QUIET_REPEAT_S = 120.0  # an unchanged summary is repeated at most this often


def preflight(ws: Workspace, config: Config, stages: tuple[str, ...]) -> None:
    """Refuse to start on bad data or rubric, naming the problem; nothing is launched."""
    from pipeline.data import validate_file
    from pipeline.rubric import validate_rubric

    if not config.models:
        raise InputError(f"{ws.config_path}: no [[models]]; add one (see `steertui init --example demo`)")
    paths = [ws.test_path(config.behavior)]
    if "train" in stages:
        paths.insert(0, ws.train_path(config.behavior))
    for path in paths:
        problems = validate_file(path)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InputError(
                f"{problems[0]}{more}; fix the dataset (steertui data validate {path}) or create one "
                f"(steertui data generate --provider openai:MODEL)"
            )
    if "score" in stages or "prompting" in stages:
        rubric_problems = validate_rubric(ws.rubric_path(config.behavior))
        if rubric_problems:
            raise InputError(f"{rubric_problems[0]}; fix the rubric (steertui rubric validate)")


def run_headless(ws: Workspace, config: Config, store: Store, stages: tuple[str, ...] = STAGES, *,
                 once: bool = False, console: Console | None = None) -> int:  # fmt: skip
    out = console or Console(highlight=False, soft_wrap=True)
    preflight(ws, config, stages)
    lock = scheduler_lock(ws)
    stopping = {"flag": False}

    def _stop(signum: int, frame: Any) -> None:
        stopping["flag"] = True
        out.print("[yellow]stopping: no new jobs; running workers continue and are adopted next time[/]")

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        sched = Scheduler(ws, config, store, stages=stages, on_event=lambda e: _print_event(out, e),
                          executor=make_executor(config, ws, store))  # fmt: skip
        last: dict[str, Any] = {"at": 0.0, "text": ""}

        def stop() -> bool:
            due = time.monotonic() - last["at"] > SUMMARY_EVERY_S
            text = summary_text(store, sched) if due else ""
            if due and (text != last["text"] or time.monotonic() - last["at"] > QUIET_REPEAT_S):
                out.print(text)
                last["text"] = text
            if due:
                last["at"] = time.monotonic()
            return stopping["flag"]

        _print_adopted(out, store, sched)
        code = sched.run(once=once, stop=stop)
        print_summary(out, store, sched)
        _print_outputs(out, ws)
        return code
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        lock.release()


def _print_event(out: Console, event: Event) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    out.print(f"{stamp} [{STYLE.get(event.kind, 'white')}]{event.kind:<9}[/] {event.key}  {event.message}")


def _print_adopted(out: Console, store: Store, sched: Scheduler) -> None:
    for row in store.query(
        "SELECT cell, pid, executor, external_id FROM jobs WHERE state IN ('running', 'cancelling')"
    ):
        if row["cell"] in sched.cells:
            where = f"{row['executor']} job {row['external_id']}" if row["external_id"] else f"pid {row['pid']}"
            out.print(f"adopting {row['cell']} ({where})")


def print_summary(out: Console, store: Store, sched: Scheduler) -> None:
    out.print(summary_text(store, sched))


def summary_text(store: Store, sched: Scheduler) -> str:
    """Cell counts, spend, and one line per running job (progress, ETA, last message)."""
    rows = [r for r in store.query("SELECT * FROM jobs") if r["cell"] in sched.cells]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    parts = [
        f"{counts.get(s, 0)} {s}"
        for s in ("done", "running", "queued", "pending", "failed", "skipped")
        if counts.get(s)
    ]
    spend = store.one("SELECT COALESCE(SUM(cost_usd), 0) AS usd FROM ledger")
    lines = [f"[bold]{len(rows)} cells:[/] {', '.join(parts)}   spend ${float(spend['usd'] if spend else 0):.4f}"]
    for r in rows:
        if r["state"] != "running":
            continue
        done, total = r["progress_done"], r["progress_total"]
        pct = f"{100 * done / total:5.1f}%" if done is not None and total else "  ... "
        eta = f" eta {format_duration(r['eta_s'])}" if r["eta_s"] else ""
        lines.append(f"    {r['cell']:<44} {pct}{eta}  {r['message'] or ''}"[:160])
    return "\n".join(lines)


def _print_outputs(out: Console, ws: Workspace) -> None:
    out.print(f"vectors:      {ws.root / 'vector'}")
    out.print(f"generations:  {ws.root / 'vector_evals'}")
    out.print(f"logs:         {ws.logs_dir}")
    out.print("report/plots: steertui report   (tables, figures and report.md under reports/)")
