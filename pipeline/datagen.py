"""Generate a behaviour's DPO dataset with LLMs (SPEC §4.7; the study's `1-dataset-generation`, step by step).

    steertui data generate --behavior NAME --provider openai:gpt-4o [--n-cases 100] [--budget-usd 5]

1. Cases: requests built from the rubric's definition, target, anti-target and `levels.examples`
   (`pipeline.datagen_prompts`) ask `--provider` for single-turn, multi-turn and long conversations, each
   turn a user message with a target and an anti-target reply (structured output, schema `dpo_cases`).
   Replies are repaired or their broken cases dropped (`pipeline.datagen_repair`).
2. De-duplicate, then score each unique case 1-10 for quality with the workspace's judge (`case_quality`).
3. Keep cases scoring >= `min_score`, explode them into DPO rows and split by conversation
   (`pipeline.datagen_split`); write `data/NAME/train.jsonl` and `test.jsonl` atomically.

Both request sets go through the judge ledger, budget and sync/batch runners. Answers land in append-only
files under `data/NAME/generation/` (`cases.jsonl`: one line per answered request; `quality.jsonl`: one per
scored case), keyed by request key: a rerun sends only what is missing and pays for nothing twice.
`summary.json` records the counts and the hashes of every train/test file generation wrote, so a
hand-made dataset is never replaced without `--force`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config, Price
from pipeline.crashpoints import crash_point
from pipeline.datagen_prompts import (
    CASE_STRIDE,
    Brief,
    Case,
    CaseRequest,
    generation_request,
    load_brief,
    plan_requests,
    quality_request,
)
from pipeline.datagen_repair import case_parser
from pipeline.datagen_split import build_splits, dedupe
from pipeline.errors import InputError, SteerError
from pipeline.files import append_jsonl, atomic_write_json, atomic_write_text, dumps_row, iter_jsonl, repair_jsonl
from pipeline.judges.base import Call, Completion, RunSettings, Verdict
from pipeline.judges.costs import cost_row, resolve_price
from pipeline.judges.ledger import Entry, Ledger
from pipeline.judges.prompts import parse_rating
from pipeline.judges.providers import open_provider, require_credentials, split_spec
from pipeline.judges.run import estimate_calls_usd, raise_for_reports, run_calls
from pipeline.judges.sync_runner import RunReport
from pipeline.progress import NullReporter, Reporter
from pipeline.store import open_store
from pipeline.workspace import Workspace

GENERATION_TIMEOUT_S = 600.0  # a reply of up to 16k tokens takes minutes
KEEP_HASHES = 50


@dataclass(frozen=True)
class GenJob:
    """One dataset generation: where, for which behaviour, with which provider, and the selection knobs."""

    workspace: Workspace
    config: Config  # judge (quality scoring), budget, mode, prices
    behavior: str
    provider: str  # provider:model writing the cases
    n_cases: int = 100  # cases to ask for (rounded up to whole requests)
    per_request: int = 10  # cases per single-turn request (half as many per multi-turn or long one)
    min_score: float = 6.0  # keep cases the judge scores at least this (the study's 6)
    test_fraction: float = 0.05  # conversations held out for test (the study's 5 %)
    seed: int = 42  # split and test-row choice (the study's split seed); requests do not depend on it
    max_tokens: int = 16384  # per generation reply (the study's)
    force: bool = False  # replace train/test files generation did not write

    def __post_init__(self) -> None:
        checks = [
            (self.n_cases >= 1, "--n-cases", "must be >= 1"),
            (1 <= self.per_request <= 100, "--per-request", "must be in 1..100"),
            (1 <= self.min_score <= 10, "--min-score", "must be in 1..10"),
            (0 < self.test_fraction < 1, "--test-fraction", "must be in (0, 1)"),
            (self.max_tokens >= 256, "--max-tokens", "must be >= 256"),
        ]
        for ok, flag, problem in checks:
            if not ok:
                raise InputError(f"{flag}: {problem}")


@dataclass(frozen=True)
class GenResult:
    train_path: str
    test_path: str
    requests: int  # generation requests of the plan
    cases: int  # cases that survived repair
    duplicates: int
    scored: int  # unique cases with a valid quality score
    kept: int  # conversations at or above min_score
    train_rows: int
    test_rows: int
    spent_usd: float  # booked by this run (both request sets)


@dataclass(frozen=True)
class _Paths:
    train: Path
    test: Path
    cases: Path
    quality: Path
    summary: Path


def run_datagen(job: GenJob, reporter: Reporter | None = None) -> GenResult:
    """Generate, score, select and split; see the module docstring."""
    reporter = reporter or NullReporter()
    ws, judge = job.workspace, job.config.judge
    for spec in (job.provider, judge.judge):
        require_credentials(split_spec(spec)[0])  # before any work
    brief = load_brief(ws.rubric_path(job.behavior))
    with _exclusive(ws, job.behavior):
        return _run(job, brief, reporter)


def _run(job: GenJob, brief: Brief, reporter: Reporter) -> GenResult:
    """The stages, under the behaviour's lock."""
    ws, judge = job.workspace, job.config.judge
    paths = _paths(ws, job.behavior)
    known = _check_outputs(paths, job.force)
    requests = plan_requests(job.n_cases, job.per_request, brief)
    with open_store(ws.db_path) as store:
        ledger = Ledger(store, judge.budget_usd)
        before = ledger.spent()
        cases = _generate(job, brief, requests, ledger, paths.cases, reporter)
        crash_point("datagen:after_cases")
        unique, dupes = dedupe(cases)
        scores = _score(job, brief, unique, ledger, paths.quality, reporter)
        crash_point("datagen:after_quality")
        spent = ledger.spent() - before
    kept = [c for c in unique if scores.get(c.case_id, 0.0) >= job.min_score]
    if len(kept) < 2:
        raise SteerError(f"only {len(kept)} of {len(unique)} unique cases scored >= {job.min_score:g}; ask for more "
                         "(--n-cases) or lower --min-score (answers so far are kept)")  # fmt: skip
    train, test = build_splits(kept, job.test_fraction, job.seed)
    counts = {"requests": len(requests), "cases": len(cases), "duplicates": len(dupes), "scored": len(scores),
              "kept": len(kept), "train_rows": len(train), "test_rows": len(test)}  # fmt: skip
    _write_outputs(paths, train, test, known, {**_settings(job), **counts})
    reporter.message(f"{len(cases)} cases, {len(dupes)} duplicates, {len(kept)} kept (>= {job.min_score:g}): "
                     f"{len(train)} train rows, {len(test)} test rows")  # fmt: skip
    return GenResult(str(paths.train), str(paths.test), spent_usd=spent, **counts)


@contextmanager
def _exclusive(ws: Workspace, behavior: str) -> Iterator[None]:
    """One generation per behaviour at a time (two would both ask for what neither has written yet)."""
    from filelock import FileLock, Timeout

    ws.locks_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(ws.locks_dir / f"datagen-{behavior}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(f"{ws.data_dir(behavior)}: another `steertui data generate` is running for "
                         f"{behavior}; wait for it to finish") from None  # fmt: skip
    try:
        yield
    finally:
        lock.release()


def _paths(ws: Workspace, behavior: str) -> _Paths:
    gen = ws.data_dir(behavior) / "generation"
    return _Paths(ws.train_path(behavior), ws.test_path(behavior), gen / "cases.jsonl", gen / "quality.jsonl",
                  gen / "summary.json")  # fmt: skip


def _settings(job: GenJob) -> dict[str, Any]:
    return {"behavior": job.behavior, "provider": job.provider, "judge": job.config.judge.judge,
            "n_cases": job.n_cases, "per_request": job.per_request, "min_score": job.min_score,
            "test_fraction": job.test_fraction, "seed": job.seed}  # fmt: skip


# ------------------------------------------------------------------------------------------------ cases
def _generate(job: GenJob, brief: Brief, requests: Sequence[CaseRequest], ledger: Ledger, path: Path,
              reporter: Reporter) -> list[Case]:  # fmt: skip
    """Every request answered (from the file, the ledger or the provider); their cases in plan order."""
    provider, model = split_spec(job.provider)
    cell = f"datagen:{job.behavior}:cases"
    by_key: dict[str, CaseRequest] = {}
    calls = []
    for spec in requests:
        request = generation_request(spec, brief, provider, model, job.max_tokens)
        by_key[request.key] = spec
        calls.append(Call(request, case_parser(spec.n_cases), "datagen_cases", cell, str(spec.index)))
    price = resolve_price(model, job.config.prices, job.config.judge.budget_usd)
    log = _Log(path, lambda e: _case_row(e, by_key[e.key], price), "datagen:case_rows", "cases", reporter)
    what = f"generation ({len(requests)} requests, {sum(s.n_cases for s in requests)} cases asked for)"
    timeout_s = max(job.config.judge.timeout_s, GENERATION_TIMEOUT_S)
    _phase(job, what, job.provider, calls, ledger, price, log, reporter, base_url="", timeout_s=timeout_s)
    cases: list[Case] = []
    for key, spec in by_key.items():
        row = log.rows[key]
        cases.extend(Case.from_dict(c, spec.index) for c in row["cases"])
    return cases


def _case_row(entry: Entry, spec: CaseRequest, price: Price) -> dict[str, Any]:
    result = entry.result
    value = result.get("value") if result.get("valid") else None
    cases = [{"case_id": spec.index * CASE_STRIDE + j, **c} for j, c in enumerate((value or {}).get("cases", []))]
    return {"key": entry.key, "request": spec.index, "kind": spec.kind, "asked": spec.n_cases,
            "valid": bool(value), "reason": None if value else result.get("reason"), "cases": cases,
            "notes": (value or {}).get("notes", []), **_costs(entry, price)}  # fmt: skip


# ------------------------------------------------------------------------------------------------ quality
def _score(job: GenJob, brief: Brief, cases: Sequence[Case], ledger: Ledger, path: Path,
           reporter: Reporter) -> dict[int, float]:  # fmt: skip
    """case_id -> quality score for every case with a valid answer."""
    judge = job.config.judge
    cell = f"datagen:{job.behavior}:quality"
    by_key = {}
    calls = []
    for case in cases:
        request = quality_request(case, brief, judge.provider, judge.model)
        by_key[request.key] = case
        calls.append(Call(request, parse_quality, "datagen_quality", cell, str(case.case_id)))
    price = resolve_price(judge.model, job.config.prices, judge.budget_usd)
    log = _Log(path, lambda e: _quality_row(e, by_key[e.key], price), "datagen:quality_rows", "scores", reporter)
    _phase(job, f"quality scoring ({len(cases)} unique cases)", judge.judge, calls, ledger, price, log, reporter,
           base_url=judge.base_url, timeout_s=judge.timeout_s)  # fmt: skip
    rows = (log.rows[key] for key in by_key)
    return {int(r["case_id"]): float(r["score"]) for r in rows if r["valid"]}


def parse_quality(completion: Completion) -> Verdict:
    """A score in [1, 10] (never coerced), with the judge's short reasoning kept alongside."""
    verdict = parse_rating(completion)
    if not verdict.valid:
        return verdict
    reasoning = completion.data.get("reasoning") if isinstance(completion.data, dict) else None
    return Verdict(True, {"score": verdict.value, "reasoning": str(reasoning or "")[:500]})


def _quality_row(entry: Entry, case: Case, price: Price) -> dict[str, Any]:
    result = entry.result
    value = result.get("value") if result.get("valid") else None
    return {"key": entry.key, "case_id": case.case_id, "valid": value is not None,
            "score": value["score"] if value else None, "reasoning": value["reasoning"] if value else None,
            "reason": None if value else result.get("reason"), **_costs(entry, price)}  # fmt: skip


def _costs(entry: Entry, price: Price) -> dict[str, Any]:
    return {"token_usage": entry.usage.as_row(),
            "cost": cost_row(entry.input_tokens, entry.output_tokens, entry.cost_usd, price)}  # fmt: skip


# ------------------------------------------------------------------------------------------------ running
class _Log:
    """An append-only JSONL of answers keyed by request key: a row present means that request is done."""

    def __init__(self, path: Path, make_row: Callable[[Entry], dict[str, Any]], crash: str, unit: str,
                 reporter: Reporter) -> None:  # fmt: skip
        self.path, self.make_row, self.crash, self.unit, self.reporter = path, make_row, crash, unit, reporter
        repair_jsonl(path)
        self.rows: dict[str, dict[str, Any]] = {r["key"]: r for r in iter_jsonl(path) if isinstance(r.get("key"), str)}
        self.wanted: set[str] = set()

    def todo(self, calls: Sequence[Call]) -> list[Call]:
        self.wanted = {c.key for c in calls}
        return [c for c in calls if c.key not in self.rows]

    def write(self, entries: Sequence[Entry]) -> None:
        rows = [self.make_row(e) for e in entries if e.key in self.wanted and e.key not in self.rows]
        append_jsonl(self.path, rows)
        self.rows.update((r["key"], r) for r in rows)
        if rows:
            crash_point(self.crash)
        done = sum(k in self.rows for k in self.wanted)
        self.reporter.progress(done, len(self.wanted), unit=self.unit)


def _phase(job: GenJob, what: str, spec: str, calls: Sequence[Call], ledger: Ledger, price: Price, log: _Log,
           reporter: Reporter, *, base_url: str, timeout_s: float) -> None:  # fmt: skip
    """Answer `calls` not yet in `log` once each, or raise saying what is left and how to continue."""
    judge = job.config.judge
    todo = log.todo(calls)
    batch = judge.mode == "batch"
    entries = ledger.lookup(c.key for c in todo)
    unpaid = [c for c in todo if not (c.key in entries and entries[c.key].final)]
    budget = "no budget cap" if math.isinf(ledger.budget_usd) else f"${ledger.remaining():.4f} of budget left"
    reporter.message(f"{what} with {spec}: {len(calls) - len(todo)} done, {len(unpaid)} to send, estimated at "
                     f"most ${estimate_calls_usd(unpaid, price, batch=batch):.4f} ({budget})")  # fmt: skip
    if not todo:
        return
    settings = RunSettings.from_config(judge, os.environ)
    provider = open_provider(spec, base_url=base_url, timeout_s=timeout_s)

    async def go() -> RunReport:
        try:
            return await run_calls(todo, provider=provider, ledger=ledger, price=price, settings=settings,
                                   sink=log.write, reporter=reporter)  # fmt: skip
        finally:
            await provider.aclose()

    raise_for_reports([asyncio.run(go())], ledger, price, batch=batch, what=what)


# ------------------------------------------------------------------------------------------------ outputs
def _check_outputs(paths: _Paths, force: bool) -> list[str]:
    """Hashes of train/test files generation wrote before; refuses to replace any other file unless `force`."""
    try:
        known = list(json.loads(paths.summary.read_text()).get("written_sha256", []))
    except (OSError, ValueError, AttributeError):
        known = []
    for path in (paths.train, paths.test):
        if path.exists() and not force and _sha256(path.read_bytes()) not in known:
            raise InputError(f"{path}: exists and was not written by `steertui data generate`; move it away or "
                             "pass --force to replace it")  # fmt: skip
    return known


def _write_outputs(paths: _Paths, train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]],
                   known: list[str], summary: dict[str, Any]) -> None:  # fmt: skip
    """The summary (with the new files' hashes) first, then test, then train: a crash anywhere leaves
    files a rerun recognises as its own and rewrites."""
    texts = {paths.test: "".join(dumps_row(r) + "\n" for r in test),
             paths.train: "".join(dumps_row(r) + "\n" for r in train)}  # fmt: skip
    hashes = [_sha256(t.encode()) for t in texts.values()]
    written = [h for h in known if h not in hashes] + hashes
    atomic_write_json(paths.summary, {**summary, "written_sha256": written[-KEEP_HASHES:]})
    for i, (path, text) in enumerate(texts.items()):
        if i:
            crash_point("datagen:between_outputs")
        atomic_write_text(path, text)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
