"""Run calls exactly once: answers already in the ledger go straight to the sink; the rest are sent in
sync or batch mode under the workspace budget. Judging, prompting and data generation all use this.

    provider = open_provider("openai:gpt-4o", timeout_s=60)
    report = asyncio.run(run_calls(calls, provider=provider, ledger=Ledger(store, budget),
                                   price=price, settings=RunSettings(), sink=write_rows))

`sink(entries)` receives final ledger entries (answer in `entry.result`) after they are committed, on
the event loop (keep it quick: append rows). Across runs it may see a key again (a row lost in a crash is
rewritten from the ledger), so stages skip items whose rows exist before building calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import Price
from pipeline.errors import BudgetExceeded, Interrupted, JudgeError
from pipeline.judges.base import Call, Provider, RunSettings, stop_error
from pipeline.judges.batch_runner import BatchRunner
from pipeline.judges.costs import estimate_usd
from pipeline.judges.ledger import Entry, Ledger, Settlement
from pipeline.judges.sync_runner import RunReport, Sink, SyncRunner
from pipeline.progress import Reporter


def unique_calls(calls: Sequence[Call]) -> list[Call]:
    """One call per request key (identical requests are asked once), first occurrence kept."""
    seen: dict[str, Call] = {}
    for call in calls:
        seen.setdefault(call.key, call)
    return list(seen.values())


def estimate_calls_usd(calls: Sequence[Call], price: Price, *, batch: bool) -> float:
    """Upper estimate of one ask each (re-asks not included)."""
    return sum(estimate_usd(c.request, price, batch=batch) for c in calls)


async def run_calls(
    calls: Sequence[Call],
    *,
    provider: Provider,
    ledger: Ledger,
    price: Price,
    settings: RunSettings,
    sink: Sink,
    reporter: Reporter | None = None,
) -> RunReport:
    """Answer every call once; see the module docstring. Unanswered calls are listed in the report."""
    calls = unique_calls(calls)
    entries = ledger.lookup(c.key for c in calls)
    finished = [entries[c.key] for c in calls if c.key in entries and entries[c.key].final]
    if finished:
        sink(finished)
    todo = [c for c in calls if not (c.key in entries and entries[c.key].final)]
    busy = _in_other_cells_batches(todo, entries, ledger)
    todo = [c for c in todo if c.key not in busy]
    for cell in sorted({c.cell for c in todo}):
        ledger.release_stale(cell)
    batches = BatchRunner(provider, ledger, price=price, settings=settings, sink=sink, reporter=reporter)
    if settings.mode != "batch":
        await batches.resume(todo)  # never ask in sync what a recorded batch may still answer
        settled = ledger.lookup(c.key for c in todo)
        todo = [c for c in todo if not (c.key in settled and settled[c.key].final)]
        report = await SyncRunner(provider, ledger, price=price, settings=settings, sink=sink,
                                  reporter=reporter).run(todo)  # fmt: skip
        report.busy = list(busy.values())
        return report
    report = await batches.run(todo)
    report.busy = list(busy.values())
    if report.stragglers and settings.batch_fallback_sync:
        fallback = await SyncRunner(provider, ledger, price=price, settings=settings, sink=sink,
                                    reporter=reporter).run(report.stragglers)  # fmt: skip
        return _merge(report, fallback)
    if report.stragglers:
        ledger.settle([Settlement(c.key, 0.0, state="failed") for c in report.stragglers])
        report.failed.extend((c, "unanswered after batch resubmission") for c in report.stragglers)
    return report


def _in_other_cells_batches(calls: Sequence[Call], entries: dict[str, Entry], ledger: Ledger) -> dict[str, Call]:
    """Calls whose identical request sits in a batch recorded by another cell (e.g. the same unsteered
    reply judged for two layers): that batch will answer it; asking now would pay twice."""
    submitted = {
        c.key: entries[c.key].batch_id for c in calls if c.key in entries and entries[c.key].state == "submitted"
    }
    cells = ledger.batch_cells(b for b in submitted.values() if b is not None)
    return {c.key: c for c in calls if c.key in submitted and cells.get(submitted[c.key] or -1) != c.cell}


def _merge(batch: RunReport, sync: RunReport) -> RunReport:
    return RunReport(
        sent=batch.sent + sync.sent,
        retries=batch.retries + sync.retries,
        failed=batch.failed + sync.failed,
        blocked=batch.blocked + sync.blocked,
        busy=batch.busy,
        fatal=sync.fatal or batch.fatal,
        stopped=sync.stopped,
    )


def raise_for_reports(
    reports: Sequence[RunReport], ledger: Ledger, price: Price, *, batch: bool, what: str = ""
) -> None:
    """Raise for anything that leaves a stage incomplete, with the stages' shared rules and exit codes:
    a fatal provider error, a stop request, the budget (saying how much more is needed), requests held by
    another job's batch, and requests that got no answer (all rerunnable without paying twice)."""
    where = f" in {what}" if what else ""
    fatal = next((r.fatal for r in reports if r.fatal is not None), None)
    if fatal is not None:
        raise stop_error(fatal)
    if any(r.stopped for r in reports):
        raise Interrupted(f"stopped on request{where}; rerun to continue")
    blocked = [c for r in reports for c in r.blocked]
    if blocked:
        need = max(0.0, estimate_calls_usd(blocked, price, batch=batch) - max(0.0, ledger.remaining()))
        raise BudgetExceeded(
            f"budget reached{where}: {len(blocked)} requests not sent (judge.budget_usd = {ledger.budget_usd:g}, "
            f"${ledger.spent():.4f} spent); about ${need:.4f} more is needed, so rerun with "
            f"--budget-usd {ledger.spent() + need:.4f} or more to continue (answers so far are kept)"
        )
    busy = [c for r in reports for c in r.busy]
    if busy:
        raise JudgeError(f"{len(busy)} requests{where} are also in another job's running batch; rerun when it has "
                         "finished to fill them in without paying twice")  # fmt: skip
    failed = [f for r in reports for f in r.failed]
    if failed:
        raise JudgeError(f"{len(failed)} requests{where} got no answer (e.g. {failed[0][1]}); rerun to retry them")
