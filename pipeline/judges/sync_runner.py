"""Sync mode: many requests in flight on one async client, under an adaptive limit and the budget.

A dispatcher reserves budget for a block of requests (one ledger transaction) and starts them while the
AIMD limit allows: the limit halves on a 429 episode and grows by one per window of successes. Rate
limits, 5xx, timeouts and dropped connections are retried with jittered exponential backoff (honouring
retry-after); auth, quota and not-found errors stop the run. Unparseable or out-of-range answers are
re-asked (each ask reserved anew) up to `max_reasks`, then recorded invalid. Finished requests are
settled in groups: one ledger transaction, then the stage's sink writes their rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.config import Price
from pipeline.judges.base import Call, Completion, ErrorKind, Provider, ProviderError, RunSettings
from pipeline.judges.costs import estimate_usd, usd
from pipeline.judges.ledger import Entry, Ledger, Reservation, Settlement, answer_settlement
from pipeline.progress import NullReporter, Reporter

Sink = Callable[[list[Entry]], None]
RATE_LIMIT_COOLDOWN_S = 1.0  # 429s within this long after a cut count as one episode
FLUSH_GROUP = 256


@dataclass
class RunReport:
    """What happened to the calls a runner was given (final answers reach the sink, not this)."""

    sent: int = 0
    retries: int = 0
    failed: list[tuple[Call, str]] = field(default_factory=list)  # not answered; retried on the next run
    blocked: list[Call] = field(default_factory=list)  # not sent: the budget would be crossed
    stragglers: list[Call] = field(default_factory=list)  # batch mode: still unanswered after resubmission
    busy: list[Call] = field(default_factory=list)  # the same request is in another cell's running batch
    fatal: ProviderError | None = None
    stopped: bool = False  # the reporter asked to stop


class AIMD:
    """Additive-increase / multiplicative-decrease concurrency limit."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.inflight = 0
        self._last_cut = -float("inf")

    def free(self) -> int:
        return max(0, int(self.limit) - self.inflight)

    def on_success(self) -> None:
        self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)

    def on_rate_limit(self) -> None:
        now = time.monotonic()
        if now - self._last_cut >= RATE_LIMIT_COOLDOWN_S:
            self.limit = max(1.0, self.limit / 2)
            self._last_cut = now


def backoff_s(retry: int, retry_after: float | None, settings: RunSettings) -> float:
    """Exponential backoff with equal jitter, never shorter than the server's retry-after."""
    ceiling = min(settings.backoff_cap_s, settings.backoff_base_s * 2.0**retry)
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)


@dataclass
class _Live:
    call: Call
    est: float
    asks: int


class SyncRunner:
    """Answers calls with bounded, adaptive concurrency; ledger first, then the sink."""

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
        self.ledger = ledger
        self.price = price
        self.settings = settings
        self.sink = sink
        self.reporter = reporter or NullReporter()
        self.report = RunReport()
        self._limiter = AIMD(settings.concurrency)
        self._queue: deque[_Live] = deque()
        self._settlements: list[Settlement] = []
        self._finals: list[str] = []
        self._wake = asyncio.Event()
        self._flush_due = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, calls: Sequence[Call]) -> RunReport:
        prior = self.ledger.lookup(c.key for c in calls)
        for call in calls:
            entry = prior.get(call.key)
            est = estimate_usd(call.request, self.price, batch=False)
            self._queue.append(_Live(call, est, entry.attempts if entry else 0))
        flusher = asyncio.create_task(self._flush_loop())
        try:
            await self._dispatch()
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            self._flush()
        return self.report

    # ---------------------------------------------------------------------------------- dispatch
    async def _dispatch(self) -> None:
        while self._queue or self._limiter.inflight:
            if self._halted():
                self._queue.clear()
            free = self._limiter.free() if self._queue else 0
            if free == 0:
                await self._wait()
                continue
            block = [self._queue.popleft() for _ in range(min(free, len(self._queue)))]
            granted = self.ledger.reserve([self._reservation(x) for x in block])
            for live in block[:granted]:
                self._start(live)
            if granted < len(block):
                self._queue.extendleft(reversed(block[granted:]))
                await self._on_budget_short()

    async def _on_budget_short(self) -> None:
        """Wait for in-flight requests to settle (freeing over-reserved budget); with none left, stop."""
        if self._limiter.inflight:
            await self._wait()
            return
        self._flush()
        if self.ledger.remaining() < self._queue[0].est:
            self.report.blocked.extend(x.call for x in self._queue)
            self._queue.clear()

    def _halted(self) -> bool:
        if self.report.fatal is not None:
            return True
        if self.reporter.should_stop():
            self.report.stopped = True
            return True
        return False

    async def _wait(self) -> None:
        self._wake.clear()
        await self._wake.wait()

    def _reservation(self, live: _Live) -> Reservation:
        c = live.call
        return Reservation(c.key, self.provider.name, self.provider.model, c.task, c.cell, c.item, live.est)

    def _start(self, live: _Live) -> None:
        self._limiter.inflight += 1
        self.report.sent += 1
        task = asyncio.create_task(self._run_one(live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------------------------- requests
    async def _run_one(self, live: _Live) -> None:
        try:
            await self._ask(live)
        finally:
            self._limiter.inflight -= 1
            self._wake.set()

    async def _ask(self, live: _Live) -> None:
        key = live.call.key
        try:
            completion = await self._send(live)
        except ProviderError as exc:
            if exc.kind.fatal:
                self.report.fatal = self.report.fatal or exc
                self._book(Settlement(key, live.est, state="pending"), final=False)
            else:
                self.report.failed.append((live.call, exc.message))
                self._book(Settlement(key, live.est, state="failed", result={"reason": exc.message}), final=False)
            return
        live.asks += 1
        verdict = live.call.parse(completion)
        settlement = answer_settlement(
            key,
            completion,
            verdict,
            released_usd=live.est,
            cost_usd=usd(completion.usage, self.price, batch=False),
            asks=live.asks,
            max_reasks=self.settings.max_reasks,
            pending_state=None,
        )
        final = settlement.state in ("done", "invalid")
        self._book(settlement, final=final)
        if not final:
            self._queue.appendleft(live)  # re-ask: reserved again by the dispatcher

    async def _send(self, live: _Live) -> Completion:
        for retry in itertools.count():
            try:
                completion = await self.provider.complete(live.call.request)
            except ProviderError as exc:
                if not exc.kind.retryable or retry >= self.settings.max_retries or self.report.fatal:
                    raise
                if exc.kind is ErrorKind.RATE_LIMIT:
                    self._limiter.on_rate_limit()
                self.report.retries += 1
                await asyncio.sleep(backoff_s(retry, exc.retry_after, self.settings))
                continue
            self._limiter.on_success()
            return completion
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------------------------- settling
    def _book(self, settlement: Settlement, *, final: bool) -> None:
        self._settlements.append(settlement)
        if final:
            self._finals.append(settlement.key)
        if len(self._settlements) >= FLUSH_GROUP:
            self._flush_due.set()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_due.wait(), self.settings.flush_interval_s)
            self._flush_due.clear()
            self._flush()

    def _flush(self) -> None:
        """One ledger transaction for everything settled so far, then the sink for the finished ones.
        Synchronous on purpose: nothing can interleave or cancel it between the commit and the rows."""
        settlements, finals = self._settlements, self._finals
        self._settlements, self._finals = [], []
        if not settlements:
            return
        self.ledger.settle(settlements)
        if finals:
            entries = self.ledger.lookup(finals)
            self.sink([entries[k] for k in finals])
        self._wake.set()
