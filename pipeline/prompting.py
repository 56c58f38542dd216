"""Prompting experiments (SPEC §4.4): the study's baselines for the steering vector, as resumable stages.

    python -m pipeline.prompting generate --provider anthropic:claude-3-7-sonnet-20250219 [--levels 7]
    python -m pipeline.prompting rate --provider claude [--task coherence]
    python -m pipeline.prompting rank --provider claude --vector MODEL:LAYER:EPOCH
    python -m pipeline.prompting stability --provider claude | --vector MODEL:LAYER:EPOCH
    python -m pipeline.prompting stability-rate --provider claude | --vector MODEL:LAYER:EPOCH

Exp1 (steerability, `pipeline.prompting_exp1`): a frontier model answers every test prompt at each
"Level k of N" from a system prompt built from the rubric (definition, target, anti-target, seeded
few-shot level examples, level text); the replies are rated like vector generations and ranked
head-to-head against the vector's reply at the level's multiplier. Exp2 (persona stability,
`pipeline.prompting_exp2`): scripted conversations (themes × persona attacks × multipliers) with a
prompted model or the steered local model; every assistant turn is rated.

Every API request goes through the judge stage's ledger, budget and sync/batch runners
(`pipeline.judges.run_calls`): requests are deterministic (everything seeded), so a rerun finds paid
answers in the ledger and only fills in missing rows. Output rows carry their own request's usage
and cost, never a running total. Layout and names: `pipeline.prompting_spec`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config, Price
from pipeline.crashpoints import crash_point
from pipeline.data import DPOPair, Message, load_pairs
from pipeline.errors import ConfigError, SteerError
from pipeline.files import append_jsonl, iter_jsonl, repair_jsonl
from pipeline.judges.base import Call, RunSettings
from pipeline.judges.costs import cost_row
from pipeline.judges.ledger import Entry, Ledger
from pipeline.judges.prompts import seeded
from pipeline.judges.run import estimate_calls_usd, raise_for_reports, unique_calls
from pipeline.judges.sync_runner import RunReport, Sink
from pipeline.progress import Reporter
from pipeline.prompting_cli import FLAGS, add_arguments
from pipeline.prompting_spec import ProviderSpec, parse_provider
from pipeline.rubric import Rubric
from pipeline.workspace import Workspace

Ask = Callable[[Sequence[Call], Sink], Awaitable[RunReport]]


# -- prompts -----------------------------------------------------------------------------------------------


def pick_level_examples(rubric: Rubric, n: int, *seed: object) -> list[int]:
    """Indices of the few-shot level examples for one system prompt, drawn (and ordered) by `seed`."""
    return seeded(*seed).sample(range(len(rubric.level_examples)), min(n, len(rubric.level_examples)))


def distinct_example_sets(rubric: Rubric, n: int, count: int, *seed: object) -> list[list[int]]:
    """`count` example choices (ordered index lists) that differ from each other while enough orderings exist.

    Exp2's scenarios of one theme and multiplier share their scripted turns; distinct system prompts make
    their requests differ, so each conversation is its own sample (the ledger answers identical requests once).
    """
    total, k = len(rubric.level_examples), min(n, len(rubric.level_examples))
    rng = seeded(*seed)
    out: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    while len(out) < count:
        if len(seen) == math.perm(total, k):
            seen.clear()  # fewer orderings than scenarios: start reusing them
        draw = tuple(rng.sample(range(total), k))
        if draw not in seen:
            seen.add(draw)
            out.append(list(draw))
    return out


def level_system_prompt(rubric: Rubric, level: int, num_levels: int, example_ids: Sequence[int]) -> str:
    """Definition, target, anti-target, the examples as JSON (the study's form), then the level instruction."""
    shots = [rubric.level_examples[i] for i in example_ids]
    examples = [{"user_message": ex.user, "target_response": ex.target, "antitarget_response": ex.anti_target}
                for ex in shots]  # fmt: skip
    return "\n\n".join((
        rubric.definition,
        f"Target ({rubric.name}): {rubric.target}",
        f"Anti-target: {rubric.anti_target}",
        "Examples of replies at the two ends of the scale:\n"
        + json.dumps({"examples": examples}, indent=2, ensure_ascii=False),
        rubric.level_text(level, num_levels),
    ))  # fmt: skip


def split_system(messages: Sequence[Message]) -> tuple[str, tuple[Message, ...]]:
    """A conversation's own system text (appended to ours) and its user/assistant turns."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    return system, tuple(m for m in messages if m.role != "system")


def exp1_prompts(ws: Workspace, config: Config) -> list[tuple[int, DPOPair]]:
    """(index in the test file, pair) of exp1's prompts: the first `prompting.max_prompts`, else the
    first `generate.max_prompts` (the prompts vectors are generated for), else all."""
    pairs = list(enumerate(load_pairs(ws.test_path(config.behavior))))
    n = config.prompting.max_prompts or config.generate.max_prompts
    return pairs[:n] if n > 0 else pairs


def resolve_provider(config: Config, text: str) -> ProviderSpec:
    """A configured provider by label or spec, else `text` parsed as `[label=]provider:model`."""
    known = config.prompting.provider_specs()
    for spec in known:
        if text in (spec.label, spec.spec, spec.entry):
            return spec
    try:
        spec = parse_provider(text)
    except ValueError as exc:
        labels = ", ".join(s.label for s in known) or "none configured"
        raise ConfigError(f"--provider: {exc} (configured labels: {labels})") from None
    if any(s.label == spec.label for s in known):
        raise ConfigError(f"--provider: label {spec.label!r} is configured as another model; use label=...")
    return spec


# -- rows --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One output row to produce: its id in the file, the call that answers it, and how to build the row
    from the final ledger entry (`charged` False for a second unit sharing the same request)."""

    row_id: str
    call: Call
    build: Callable[[Entry, bool], dict[str, Any]]


def usage_cost(entry: Entry, charged: bool, price: Price) -> dict[str, Any]:
    """This request's own `token_usage` and `cost` (zeros when another row already carries them)."""
    if not charged:
        return {"token_usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "cost": cost_row(0, 0, 0.0, price)}  # fmt: skip
    return {"token_usage": entry.usage.as_row(),
            "cost": cost_row(entry.input_tokens, entry.output_tokens, entry.cost_usd, price)}  # fmt: skip


def answer(entry: Entry) -> tuple[Any, bool, str | None]:
    """(value, valid, reason) of a final entry."""
    result = entry.result
    valid = bool(result.get("valid"))
    return (result.get("value") if valid else None), valid, (None if valid else result.get("reason"))


class RowWriter:
    """Appends one row per unit once its answer is final; units whose row is already in the file are
    skipped (a torn last line is dropped first). Rows are appended after the ledger commit, so a crash
    in between loses rows that the rerun rewrites from the ledger without asking again."""

    def __init__(self, path: Path, units: Sequence[Unit], row_id: Callable[[dict[str, Any]], str],
                 reporter: Reporter) -> None:  # fmt: skip
        self.path, self.reporter = path, reporter
        repair_jsonl(path)
        done = {row_id(row) for row in iter_jsonl(path)}
        self.total = len(units)
        self.already = sum(u.row_id in done for u in units)
        self._pending: dict[str, list[Unit]] = {}
        for unit in units:
            if unit.row_id not in done:
                self._pending.setdefault(unit.call.key, []).append(unit)
        self.written = self.invalid = self.flushes = 0

    def calls(self) -> list[Call]:
        return [units[0].call for units in self._pending.values()]

    def write(self, entries: Sequence[Entry]) -> None:
        rows = [unit.build(entry, n == 0) for entry in entries
                for n, unit in enumerate(self._pending.pop(entry.key, []))]  # fmt: skip
        if not rows:
            return
        self.flushes += 1
        crash_point(f"prompting-rows:{self.flushes}")  # tests: SIGKILL after the ledger commit, before the rows
        append_jsonl(self.path, rows, fsync=False)  # in the page cache: a killed process loses nothing
        self.written += len(rows)
        self.invalid += sum(1 for r in rows if r.get("valid") is False)
        self.reporter.progress(self.already + self.written, self.total, invalid=self.invalid)

    def close(self) -> None:
        """fsync what this writer appended (rows were written without it, for speed)."""
        if self.written and self.path.exists():
            with self.path.open("rb") as fh:
                os.fsync(fh.fileno())


def fan_out(writers: Sequence[RowWriter]) -> Sink:
    """One sink feeding several writers (each takes the entries of its own units)."""

    def sink(entries: list[Entry]) -> None:
        for writer in writers:
            writer.write(entries)

    return sink


# -- asking ------------------------------------------------------------------------------------------------


def run_api(ws: Workspace, config: Config, spec: str, base_url: str, rounds: Callable[[Ask], Awaitable[None]],
            reporter: Reporter) -> list[RunReport]:  # fmt: skip
    """Open the workspace ledger (judge budget, mode and retries) and `spec`'s provider, let `rounds` ask
    (each `ask` is one `run_calls`), then raise for anything left unanswered. Exp2 asks turn by turn."""
    from pipeline.judges.costs import resolve_price
    from pipeline.judges.providers import open_provider, require_credentials, split_spec
    from pipeline.judges.run import run_calls
    from pipeline.store import open_store

    name, model = split_spec(spec)
    require_credentials(name)
    judge = config.judge
    price = resolve_price(model, config.prices, judge.budget_usd)
    settings = RunSettings.from_config(judge, os.environ)
    reports: list[RunReport] = []
    with open_store(ws.db_path) as store:
        ledger = Ledger(store, judge.budget_usd)
        spent = ledger.spent()

        async def go() -> None:
            provider = open_provider(spec, base_url=base_url, timeout_s=judge.timeout_s)

            async def ask(calls: Sequence[Call], sink: Sink) -> RunReport:
                todo = unique_calls(calls)
                announce(todo, ledger, price, settings.mode == "batch", spec, reporter)
                report = await run_calls(todo, provider=provider, ledger=ledger, price=price, settings=settings,
                                         sink=sink, reporter=reporter)  # fmt: skip
                reports.append(report)
                return report

            try:
                await rounds(ask)
            finally:
                await provider.aclose()

        asyncio.run(go())
        sent = sum(r.sent for r in reports)
        reporter.message(f"{spec}: {sent} requests sent, ${ledger.spent() - spent:.4f} spent")
        raise_for(reports, ledger, price, settings.mode == "batch")
    return reports


def ask_missing(ws: Workspace, config: Config, spec: str, base_url: str, writers: Sequence[RowWriter],
                reporter: Reporter) -> None:  # fmt: skip
    """One `run_api` round for the writers' missing rows; nothing is opened (no key needed) when none is."""
    calls = [c for w in writers for c in w.calls()]
    if not calls:
        return

    async def rounds(ask: Ask) -> None:
        await ask(calls, fan_out(writers))

    try:
        run_api(ws, config, spec, base_url, rounds, reporter)
    finally:
        for writer in writers:
            writer.close()


def announce(calls: Sequence[Call], ledger: Ledger, price: Price, batch: bool, spec: str, reporter: Reporter) -> None:
    """What is left to ask and its upper cost estimate, before anything is sent."""
    entries = ledger.lookup(c.key for c in calls)
    todo = [c for c in calls if not (c.key in entries and entries[c.key].final)]
    budget = "no budget cap" if math.isinf(ledger.budget_usd) else f"${ledger.remaining():.4f} of budget left"
    reporter.message(f"{spec}: {len(calls)} requests, {len(todo)} to ask: estimated at most "
                     f"${estimate_calls_usd(todo, price, batch=batch):.4f} ({budget})")  # fmt: skip


def raise_for(reports: Sequence[RunReport], ledger: Ledger, price: Price, batch: bool) -> None:
    """Raise for anything that leaves the stage incomplete (the judge stage's rules and exit codes)."""
    raise_for_reports(reports, ledger, price, batch=batch)


@contextmanager
def cell_lock(ws: Workspace, cell: str) -> Iterator[None]:
    """One writer per prompting cell (released by the OS if the holder dies, SIGKILL included)."""
    from filelock import FileLock, Timeout

    path = ws.locks_dir / f"prompting-{cell.replace(':', '_').replace('/', '_')}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=0):
            yield
    except Timeout:
        raise SteerError(f"{cell}: another worker is running it; wait for it or stop it") from None


# -- command line ------------------------------------------------------------------------------------------


def run_subcommand(args: Any, ws: Workspace, config: Config, reporter: Reporter) -> None:
    """Dispatch a parsed subcommand to its stage."""
    from pipeline.prompting_exp1 import run_generate, run_rank, run_rate
    from pipeline.prompting_exp2 import run_stability, run_stability_rate

    provider = resolve_provider(config, args.provider) if args.provider else None
    if args.subcommand == "generate":
        run_generate(ws, config, _need(provider), reporter)
    elif args.subcommand == "rate":
        run_rate(ws, config, _need(provider), args.task, reporter)
    elif args.subcommand == "rank":
        run_rank(ws, config, _need(provider), reporter)
    elif args.subcommand == "stability":
        run_stability(ws, config, provider, reporter)
    else:
        run_stability_rate(ws, config, provider, reporter)


def _need(provider: ProviderSpec | None) -> ProviderSpec:
    if provider is None:
        raise ConfigError("--provider: required")
    return provider


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from pipeline.worker import reporter_for, resolve_config, run_worker

    parser = argparse.ArgumentParser(prog="python -m pipeline.prompting", description=__doc__.split("\n")[0])
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--workspace", "-w", metavar="DIR", default=None, help="workspace (default: cwd)")
    parent.add_argument("--job-id", type=int, default=None, help="report progress into this job row of the store")
    add_arguments(parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND"), parent)
    args = parser.parse_args(argv)

    def body() -> None:
        ws, config = resolve_config(args, FLAGS)
        with reporter_for(ws, args.job_id) as reporter:
            run_subcommand(args, ws, config, reporter)

    return run_worker(body, args)


if __name__ == "__main__":
    sys.exit(main())
