"""Judge scoring of one vector's generations (SPEC §4.3): coherence, the behaviour rating, or pairwise.

    python -m pipeline.score --model smollm2-135m --layer 12 --epoch 2 --task coherence \
        [--judge openai:gpt-4o-mini] [--mode sync|batch] [--budget-usd 5]

Reads `vector_evals/<model>/layer<L>/generations_ep<E>.jsonl` and the test set, builds one judge call
per item from `rubrics/<behavior>.toml`, and appends rows to the study's score file
(`coherence_scores_ep<E>.jsonl`, `<task>_scores_ep<E>.jsonl`, `pairwise_<task>_scores_ep<E>.jsonl`).
Every request goes through the ledger in `.steertui/state.db` first, so a rerun pays for nothing twice
and only fills in what is missing. The budget (`judge.budget_usd`) caps the workspace's judge spending:
a run that cannot finish under it scores what fits and exits 1 saying how much more is needed.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config, Price
from pipeline.data import load_pairs
from pipeline.errors import DataError
from pipeline.files import append_jsonl, iter_jsonl, repair_jsonl
from pipeline.judges.base import Call, RunSettings
from pipeline.judges.costs import resolve_price
from pipeline.judges.items import PAIRWISE, Item, build_items, row_ids, score_cell, score_row
from pipeline.judges.ledger import Entry, Ledger
from pipeline.judges.providers import open_provider, require_credentials, split_spec
from pipeline.judges.run import estimate_calls_usd, raise_for_reports, run_calls, unique_calls
from pipeline.judges.sync_runner import RunReport
from pipeline.progress import NullReporter, Reporter
from pipeline.rubric import load_rubric
from pipeline.store import open_store
from pipeline.workspace import Workspace, short_model_name

FLAGS = {"judge": "judge.judge", "mode": "judge.mode", "budget_usd": "judge.budget_usd"}


@dataclass(frozen=True)
class ScoreJob:
    """One score cell: a task over the generations of (model, layer, epoch)."""

    workspace: Workspace
    config: Config
    model: str
    layer: int
    epoch: int
    task: str  # "coherence", the rubric's task (e.g. "relationship"), or "pairwise"


@dataclass(frozen=True)
class ScoreResult:
    path: str
    items: int  # items of the task
    already: int  # rows present before this run
    written: int  # rows appended now
    invalid: int  # of those, answers recorded invalid
    failed: int  # requests that got no answer (retried on the next run)
    spent_usd: float  # cost booked by this run
    estimate_usd: float  # upper estimate of what this run had to send


def run_score(job: ScoreJob, reporter: Reporter | None = None) -> ScoreResult:
    """Score every item of `job` not yet in its output file; see the module docstring."""
    reporter = reporter or NullReporter()
    judge = job.config.judge
    require_credentials(split_spec(judge.judge)[0])  # before any work
    items, path = _items(job)
    price = resolve_price(judge.model, job.config.prices, judge.budget_usd)
    batch = judge.mode == "batch"
    with open_store(job.workspace.db_path) as store:
        ledger = Ledger(store, judge.budget_usd)
        writer = _RowWriter(path, items, price=price, judge=judge.judge, reporter=reporter)
        try:
            calls = unique_calls([i.call for i in writer.todo()])
            estimate = _announce(calls, len(items), writer.already, ledger, price, batch, reporter)
            spent_before = ledger.spent()
            report = _run(job, calls, ledger, price, writer, reporter)
        finally:
            writer.close()
        result = ScoreResult(str(path), len(items), writer.already, writer.written, writer.invalid,
                             len(report.failed), ledger.spent() - spent_before, estimate)  # fmt: skip
        _finish(report, result, ledger, price, batch, reporter)
    return result


def _items(job: ScoreJob) -> tuple[list[Item], Path]:
    """The task's items (from the rubric, the generations and the test set) and its output file."""
    ws, cfg = job.workspace, job.config
    rubric = load_rubric(ws.rubric_path(cfg.behavior))
    generations = _load_generations(ws.generations_path(job.model, job.layer, job.epoch))
    prompts = {p.prompt_id: p for p in load_pairs(ws.test_path(cfg.behavior))}
    cell = score_cell(short_model_name(job.model), job.layer, job.epoch, job.task)
    items = build_items(job.task, rubric=rubric, generations=generations, prompts=prompts, judge=cfg.judge, cell=cell)
    task_name = rubric.task if job.task == PAIRWISE else job.task
    return items, ws.scores_path(job.model, job.layer, job.epoch, task_name, pairwise=job.task == PAIRWISE)


def _announce(calls: Sequence[Call], n_items: int, already: int, ledger: Ledger, price: Price, batch: bool,
              reporter: Reporter) -> float:  # fmt: skip
    """Print what is left and its upper cost estimate before anything is sent; returns the estimate."""
    entries = ledger.lookup(c.key for c in calls)
    todo = [c for c in calls if not (c.key in entries and entries[c.key].final)]
    estimate = estimate_calls_usd(todo, price, batch=batch)
    budget = "no budget cap" if math.isinf(ledger.budget_usd) else f"${ledger.remaining():.4f} of budget left"
    reporter.message(f"{n_items} items, {already} already scored, {len(todo)} to judge: estimated at most "
                     f"${estimate:.4f} ({budget})")  # fmt: skip
    return estimate


def _run(job: ScoreJob, calls: Sequence[Call], ledger: Ledger, price: Price, writer: _RowWriter,
         reporter: Reporter) -> RunReport:  # fmt: skip
    if not calls:
        return RunReport()
    judge = job.config.judge
    settings = RunSettings.from_config(judge, os.environ)
    provider = open_provider(judge.judge, base_url=judge.base_url, timeout_s=judge.timeout_s)

    async def go() -> RunReport:
        try:
            return await run_calls(calls, provider=provider, ledger=ledger, price=price, settings=settings,
                                   sink=writer.write, reporter=reporter)  # fmt: skip
        finally:
            await provider.aclose()

    return asyncio.run(go())


def _finish(report: RunReport, result: ScoreResult, ledger: Ledger, price: Price, batch: bool,
            reporter: Reporter) -> None:  # fmt: skip
    """Say what happened; raise for anything that leaves the task incomplete."""
    reporter.message(f"{result.written} rows written ({result.invalid} invalid), {report.sent} requests sent, "
                     f"{report.retries} retries, ${result.spent_usd:.4f} spent -> {result.path}")  # fmt: skip
    reporter.artifact(result.path)
    raise_for_reports([report], ledger, price, batch=batch)


def _load_generations(path: Path) -> list[dict[str, Any]]:
    rows = list(iter_jsonl(path))
    if not rows:
        raise DataError(f"{path}: no generations to score; run `steertui generate` for this vector first")
    for i, row in enumerate(rows, start=1):
        missing = [k for k in ("generation_id", "test_prompt_id", "multiplier", "response_str") if k not in row]
        if missing:
            raise DataError(f"{path}:{i}: {missing[0]}: missing")
    return rows


class _RowWriter:
    """Appends one row per item as answers become final; skips items already in the file."""

    def __init__(self, path: Path, items: Sequence[Item], *, price: Price, judge: str, reporter: Reporter) -> None:
        self.path, self.price, self.judge, self.reporter = path, price, judge, reporter
        repair_jsonl(path)
        done = {rid for row in iter_jsonl(path) for rid in row_ids(row)}
        self.total = len(items)
        self._pending: dict[str, list[Item]] = {}
        self.already = 0
        for item in items:
            if any(i in done for i in item.done_ids):
                self.already += 1
            else:
                self._pending.setdefault(item.call.key, []).append(item)
        self.written = self.invalid = 0

    def todo(self) -> list[Item]:
        return [i for items in self._pending.values() for i in items]

    def write(self, entries: Sequence[Entry]) -> None:
        rows = []
        for entry in entries:
            for n, item in enumerate(self._pending.pop(entry.key, [])):
                rows.append(score_row(item, entry, price=self.price, judge=self.judge, charged=n == 0))
        append_jsonl(self.path, rows, fsync=False)
        self.written += len(rows)
        self.invalid += sum(1 for r in rows if not r["valid"])
        self.reporter.progress(self.already + self.written, self.total, invalid=self.invalid)

    def close(self) -> None:
        if self.path.exists():
            with self.path.open("rb") as fh:
                os.fsync(fh.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.worker import base_parser, reporter_for, resolve_config, run_worker

    parser = base_parser("python -m pipeline.score", "LLM-judge scoring of one vector's generations")
    parser.add_argument("--model", required=True)
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--epoch", type=int, required=True)
    parser.add_argument("--task", required=True, help="coherence, the behaviour's task, or pairwise")
    parser.add_argument("--judge", default=None, help="openai:MODEL or anthropic:MODEL")
    parser.add_argument("--mode", choices=("sync", "batch"), default=None)
    parser.add_argument("--budget-usd", type=float, default=None)
    args = parser.parse_args(argv)

    def body() -> None:
        ws, config = resolve_config(args, FLAGS)
        with reporter_for(ws, args.job_id) as reporter:
            run_score(ScoreJob(ws, config, args.model, args.layer, args.epoch, args.task), reporter)

    return run_worker(body, args)


if __name__ == "__main__":
    sys.exit(main())
