"""Batch mode: chunk, record, upload, create, poll, download, convert; resubmit failures once.

Every step is recorded in SQLite before the next provider call, so a run killed at any moment resumes
without paying twice:
  building  the batch row, its custom_id -> key map and the items' reservations (before any upload)
  uploading an upload may have happened: look for `<tag>.jsonl` before uploading again (OpenAI)
  uploaded  the input file id is known
  creating  a create may have happened: look for the batch (OpenAI: metadata tag; Anthropic: created
            after this record, with our request count, not claimed by another chunk) before creating
  created   the provider's batch id is known (stored before the first poll)
  ended     the batch is terminal; results are (re)downloaded and converted
  downloaded every item is settled: answered, invalid, or back to pending for the next round
Conversion settles groups of keys (ledger first, then the rows), and a rerun converts only the keys
still marked submitted. Requests that errored, expired or answered out of range are resubmitted in one
more batch; what is still unanswered after that is returned as stragglers (sync fallback).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pipeline.config import Price
from pipeline.errors import Interrupted, JudgeError
from pipeline.judges.base import Call, LineResult, Provider, ProviderError, RemoteBatch, RunSettings, stop_error
from pipeline.judges.costs import estimate_usd, usd
from pipeline.judges.ledger import BatchRecord, Entry, Ledger, Reservation, Settlement, answer_settlement
from pipeline.judges.sync_runner import RunReport, Sink, backoff_s
from pipeline.progress import NullReporter, Reporter

NOTE_EVERY_S = 60.0
MAX_SUBMISSIONS = 2  # a request goes into at most this many batches (the first, and one resubmission)
CONVERT_GROUP = 1000
T = TypeVar("T")


def crash_point(settings: RunSettings, name: str) -> None:
    """Test hook: SIGKILL this process at a named step (STEERTUI_TEST_CRASH_AT)."""
    if settings.crash_at == name:
        os.kill(os.getpid(), signal.SIGKILL)


def chunk_calls(
    calls: Sequence[Call], encode: Callable[[Call], bytes], max_requests: int, max_bytes: int
) -> list[list[tuple[Call, bytes]]]:
    """Split calls into request files under the provider's count and size limits."""
    chunks: list[list[tuple[Call, bytes]]] = []
    current: list[tuple[Call, bytes]] = []
    size = 0
    for call in calls:
        line = encode(call)
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append((call, line))
        size += len(line)
    if current:
        chunks.append(current)
    return chunks


def chunk_tag(chunk: Sequence[tuple[Call, bytes]], submissions: dict[str, int]) -> str:
    """Unique per (keys, submission round): a resubmission of the same keys gets a new tag."""
    h = hashlib.sha256()
    for call, _ in chunk:
        h.update(f"{call.key}:{submissions.get(call.key, 0)}\n".encode())
    return "steertui-" + h.hexdigest()[:24]


class BatchRunner:
    """Runs calls of one cell through the provider's batch API, resumably."""

    def __init__(
        self,
        provider: Provider,
        ledger: Ledger,
        *,
        price: Price,
        settings: RunSettings,
        sink: Sink,
        reporter: Reporter | None = None,
    ) -> None:
        self.provider = provider
        self.reporter = reporter or NullReporter()
        self.api = provider.batch
        self.ledger = ledger
        self.price = price
        self.settings = settings
        self.sink = sink
        self.report = RunReport()
        self._calls: dict[str, Call] = {}
        self._payloads: dict[int, bytes] = {}
        self._last_note = -float("inf")

    async def resume(self, calls: Sequence[Call]) -> None:
        """Finish the batches recorded for these calls' cells (a previous run may have died mid-flight)."""
        self._calls = {c.key: c for c in calls}
        for cell in sorted({c.cell for c in calls}):
            await self._drive(self.ledger.open_batches(cell, self.provider.name, self.provider.model))

    async def run(self, calls: Sequence[Call]) -> RunReport:
        """Resume, then submit rounds until every call is answered or has been in `MAX_SUBMISSIONS` batches."""
        await self.resume(calls)
        while todo := self._next_round():
            records = self._submit(todo)
            await self._drive(records)
            if self.report.blocked:
                break
        entries = self.ledger.lookup(self._calls)
        blocked = {c.key for c in self.report.blocked}
        self.report.stragglers = [
            c for k, c in self._calls.items() if k not in blocked and not (k in entries and entries[k].final)
        ]
        return self.report

    def _next_round(self) -> list[Call]:
        entries = self.ledger.lookup(self._calls)
        waiting = [c for k, c in self._calls.items() if not _settled_or_busy(entries.get(k))]
        submissions = self.ledger.submissions(c.key for c in waiting)
        return [c for c in waiting if submissions.get(c.key, 0) < MAX_SUBMISSIONS]

    # ------------------------------------------------------------------------------ submission
    def _submit(self, calls: list[Call]) -> list[BatchRecord]:
        """Record one batch per chunk (reserving budget); stop at the first chunk that does not fit."""
        submissions = self.ledger.submissions(c.key for c in calls)
        limits = self.api.limits
        chunks = chunk_calls(calls, lambda c: self.api.encode_line(c.key, c.request), limits.max_requests,
                             limits.max_bytes)  # fmt: skip
        records: list[BatchRecord] = []
        for index, chunk in enumerate(chunks):
            items = [(call.key, self._reservation(call)) for call, _ in chunk]
            record = self.ledger.create_batch(
                tag=chunk_tag(chunk, submissions), chunk=index, items=items,
                provider=self.provider.name, model=self.provider.model,
            )  # fmt: skip
            granted = record.n_requests if record else 0
            self.report.sent += granted
            if record is not None:
                self._payloads[record.id] = b"".join(line for _, line in chunk[:granted])
                records.append(record)
            if granted < len(chunk):
                self.report.blocked.extend(call for call, _ in chunk[granted:])
                for rest in chunks[index + 1 :]:
                    self.report.blocked.extend(call for call, _ in rest)
                break
        return records

    def _reservation(self, call: Call) -> Reservation:
        est = estimate_usd(call.request, self.price, batch=True)
        return Reservation(call.key, self.provider.name, self.provider.model, call.task, call.cell, call.item, est)

    def _payload(self, record: BatchRecord) -> bytes:
        """The request file of a recorded batch (rebuilt from its custom_id -> key map after a restart)."""
        if record.id not in self._payloads:
            lines = []
            for custom_id, key in sorted(self.ledger.batch_items(record.id).items()):
                call = self._calls.get(key)
                if call is None:
                    raise JudgeError(f"batch {record.tag}: request {key[:12]} is no longer part of this cell; "
                                     "the inputs changed since it was recorded")  # fmt: skip
                lines.append(self.api.encode_line(custom_id, call.request))
            self._payloads[record.id] = b"".join(lines)
        return self._payloads[record.id]

    # ------------------------------------------------------------------------------ upload, create
    async def _ensure_created(self, record: BatchRecord) -> BatchRecord:
        if record.state in ("building", "uploading"):
            await self._upload(record)
            record = self.ledger.batch(record.id)
        if record.state in ("uploaded", "creating"):
            await self._create(record)
            record = self.ledger.batch(record.id)
        return record

    async def _upload(self, record: BatchRecord) -> None:
        data = self._payload(record)
        file_id = await self._control(lambda: self.api.find_upload(record.tag)) if record.state == "uploading" else None
        if not file_id:
            self.ledger.update_batch(record.id, state="uploading")
            file_id = await self._act(
                lambda: self.api.upload(record.tag, data), lambda: self.api.find_upload(record.tag)
            )
            crash_point(self.settings, "after_upload")
        self.ledger.update_batch(record.id, state="uploaded", input_file_id=file_id)

    async def _create(self, record: BatchRecord) -> None:
        data = self._payload(record)
        known = self.ledger.known_remote_ids(self.provider.name)
        remote_id = None
        if record.state == "creating":
            since = record.updated_at
            remote_id = await self._control(lambda: self.api.find_batch(record.tag, since, record.n_requests, known))
        if not remote_id:
            self.ledger.update_batch(record.id, state="creating")
            since = self.ledger.batch(record.id).updated_at
            remote_id = await self._act(
                lambda: self.api.create(record.tag, record.input_file_id, data),
                lambda: self.api.find_batch(record.tag, since, record.n_requests, known),
            )
            crash_point(self.settings, "after_create")
        self.ledger.update_batch(record.id, state="created", remote_id=remote_id)

    async def _act(self, action: Callable[[], Awaitable[str]], find: Callable[[], Awaitable[str | None]]) -> str:
        """A non-idempotent step: after a transient failure, look for its effect before trying again."""
        for retry in range(self.settings.max_retries + 1):
            try:
                return await action()
            except ProviderError as exc:
                if not exc.kind.retryable or retry >= self.settings.max_retries:
                    raise stop_error(exc) from None
                await asyncio.sleep(backoff_s(retry, exc.retry_after, self.settings))
            found = await self._control(find)
            if found:
                return found
        raise AssertionError("unreachable")

    async def _control(self, step: Callable[[], Awaitable[T]]) -> T:
        """An idempotent control-plane call (list, retrieve, download), retried on transient errors."""
        for retry in range(self.settings.max_retries + 1):
            try:
                return await step()
            except ProviderError as exc:
                if not exc.kind.retryable or retry >= self.settings.max_retries:
                    raise stop_error(exc) from None
                await asyncio.sleep(backoff_s(retry, exc.retry_after, self.settings))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------ poll, convert
    async def _drive(self, records: Sequence[BatchRecord]) -> None:
        live = [await self._ensure_created(r) for r in records]
        while live:
            waiting = []
            for record in live:
                remote = await self._control(functools.partial(self.api.retrieve, record.remote_id))
                if remote.terminal:
                    self.ledger.update_batch(record.id, state="ended", remote_status=remote.status,
                                             output_file_id=remote.output_file_id, error_file_id=remote.error_file_id,
                                             error=remote.failed_reason)  # fmt: skip
                    await self._convert(record, remote)
                else:
                    waiting.append(record)
            live = waiting
            if live:
                self._waiting(live)
                await asyncio.sleep(self.settings.batch_poll_s)

    def _waiting(self, live: Sequence[BatchRecord]) -> None:
        """Between polls: honour a stop request (the batches are recorded; a rerun collects them) and say
        what is pending at most once a minute (which also keeps a job's heartbeat fresh)."""
        if self.reporter.should_stop():
            raise Interrupted("stopped while batches run at the provider; rerun to collect their results")
        now = time.monotonic()
        if now - self._last_note >= NOTE_EVERY_S:
            self._last_note = now
            ids = ", ".join(r.remote_id for r in live[:3]) + (" ..." if len(live) > 3 else "")
            self.reporter.message(f"waiting for {len(live)} batch(es) at {self.provider.name}: {ids}")

    async def _convert(self, record: BatchRecord, remote: RemoteBatch) -> None:
        lines = await self._control(lambda: self.api.results(remote))
        items = self.ledger.batch_items(record.id)
        stray = [line.custom_id for line in lines if line.custom_id and line.custom_id not in items]
        if stray:
            self.ledger.fail_batch(record.id, f"results hold ids of another batch, e.g. {stray[0]}")
            raise JudgeError(
                f"batch {remote.remote_id}: its results do not match chunk {record.tag} (found by the Anthropic "
                "creation-time heuristic?); check the provider's batches, then rerun to resubmit the chunk"
            )
        by_key = {items[line.custom_id]: line for line in lines if line.custom_id in items}
        open_entries = self.ledger.batch_entries(record.id)
        settlements = [self._settlement(e, by_key.get(e.key)) for e in open_entries.values()]
        group = max(1, min(CONVERT_GROUP, -(-len(settlements) // 2)))
        for start in range(0, len(settlements), group):
            part = settlements[start : start + group]
            self.ledger.settle(part)
            if start == 0:
                crash_point(self.settings, "during_convert")
            finals = [s.key for s in part if s.state in ("done", "invalid")]
            if finals:
                entries = self.ledger.lookup(finals)
                self.sink([entries[k] for k in finals])
        self.ledger.update_batch(record.id, state="downloaded")

    def _settlement(self, entry: Entry, line: LineResult | None) -> Settlement:
        if line is None or line.completion is None:
            reason = "missing from results" if line is None else (line.error or "no answer")
            return Settlement(entry.key, entry.reserved_usd, state="pending", result={"reason": reason})
        completion = line.completion
        cost = usd(completion.usage, self.price, batch=True)
        call = self._calls.get(entry.key)
        if call is None:  # answered (and paid) but the inputs changed since: book it, keep no answer
            result = {"reason": "answered, but no longer part of this cell"}
            return Settlement(entry.key, entry.reserved_usd, cost, completion.usage, 1, state="failed", result=result)
        return answer_settlement(
            entry.key,
            completion,
            call.parse(completion),
            released_usd=entry.reserved_usd,
            cost_usd=cost,
            asks=entry.attempts + 1,
            max_reasks=self.settings.max_reasks,
            pending_state="pending",
        )


def _settled_or_busy(entry: Entry | None) -> bool:
    return entry is not None and (entry.final or entry.state == "submitted")
