"""The request ledger in SQLite: exactly-once state per request key, budget reservations, batch records.

Every write is one short `BEGIN IMMEDIATE` transaction covering a group of requests. Spending is
`judge_spend.total_usd` = settled costs + open reservations, kept in step with the ledger rows inside the
same transactions, so the budget check before sending is a single-row read that counts in-flight work
of every process sharing the workspace.

Row states: `inflight` (a sync ask is reserved or on the wire), `submitted` (in a recorded batch),
`pending` (to ask again), `failed` (no answer after retries; asked again on the next run), and the final
`done` / `invalid`. `attempts` counts answers received (each one paid); `cost_usd` and the token columns
add up over all of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.judges.base import Completion, Usage, Verdict
from pipeline.store import Store

FINAL_STATES = frozenset({"done", "invalid"})
OPEN_BATCH_STATES = ("building", "uploading", "uploaded", "creating", "created", "ended")
CHUNK = 500  # keys per IN (...) query


@dataclass(frozen=True)
class Entry:
    """A ledger row as stored."""

    key: str
    state: str
    mode: str
    item: str
    batch_id: int | None
    attempts: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    reserved_usd: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens)


@dataclass(frozen=True)
class Reservation:
    """Budget held for one attempt of a request, recorded before it is sent."""

    key: str
    provider: str
    model: str
    task: str
    cell: str
    item: str
    usd: float


@dataclass(frozen=True)
class Settlement:
    """An attempt's outcome: release its reservation, book its cost; `state`/`result` when it changes them."""

    key: str
    released_usd: float
    cost_usd: float = 0.0
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    state: str | None = None
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class BatchRecord:
    id: int
    tag: str
    state: str
    input_file_id: str
    remote_id: str
    n_requests: int
    created_at: float
    updated_at: float


class Ledger:
    """Ledger, spending and batch records of one workspace store, under a budget cap."""

    def __init__(self, store: Store, budget_usd: float) -> None:
        self.store = store
        self.budget_usd = budget_usd

    # ------------------------------------------------------------------------------------ reading
    def lookup(self, keys: Iterable[str]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for part in _chunks(list(keys)):
            marks = ",".join("?" * len(part))
            for r in self.store.query(f"SELECT * FROM ledger WHERE key IN ({marks})", tuple(part)):
                out[r["key"]] = _entry(r)
        return out

    def spent(self) -> float:
        """Settled costs plus open reservations of the whole workspace."""
        row = self.store.one("SELECT total_usd FROM judge_spend WHERE id = 1")
        return float(row["total_usd"]) if row is not None else 0.0

    def remaining(self) -> float:
        return self.budget_usd - self.spent()

    # ------------------------------------------------------------------------------------ writing
    def reserve(self, entries: Sequence[Reservation], *, mode: str = "sync") -> int:
        """Reserve budget for `entries` in order, stopping at the first that does not fit; returns how many."""
        with self.store.tx():
            granted = self._reserve(entries, mode=mode, state="inflight", batch_id=None)
        return granted

    def settle(self, items: Sequence[Settlement]) -> None:
        if not items:
            return
        with self.store.tx():
            self._settle(items)

    def release_stale(self, cell: str) -> None:
        """Drop reservations left by a sync run of `cell` that died mid-request (batch items stay).
        Safe because one runner works on a cell at a time (the scheduler runs one job per cell)."""
        with self.store.tx():
            row = self.store.one(
                "SELECT COALESCE(SUM(reserved_usd), 0) AS r FROM ledger WHERE cell = ? AND state = 'inflight'", (cell,)
            )
            self.store.conn.execute(
                "UPDATE ledger SET state = 'pending', reserved_usd = 0 WHERE cell = ? AND state = 'inflight'", (cell,)
            )
            self._add_spend(-float(row["r"]) if row is not None else 0.0)

    def _reserve(self, entries: Sequence[Reservation], *, mode: str, state: str, batch_id: int | None) -> int:
        total = self.spent()
        granted: list[Reservation] = []
        for entry in entries:
            if total + entry.usd > self.budget_usd:
                break
            total += entry.usd
            granted.append(entry)
        now = time.time()
        self.store.conn.executemany(
            "INSERT INTO ledger (key, provider, model, task, cell, item, state, mode, batch_id, attempts, "
            "reserved_usd, cost_usd, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET state = excluded.state, mode = excluded.mode, "
            "batch_id = excluded.batch_id, reserved_usd = reserved_usd + excluded.reserved_usd, "
            "updated_at = excluded.updated_at",
            [(e.key, e.provider, e.model, e.task, e.cell, e.item, state, mode, batch_id, e.usd, now, now)
             for e in granted],
        )  # fmt: skip
        self._add_spend(sum(e.usd for e in granted))
        return len(granted)

    def _settle(self, items: Sequence[Settlement]) -> None:
        now = time.time()
        self.store.conn.executemany(
            "UPDATE ledger SET reserved_usd = reserved_usd - ?, cost_usd = cost_usd + ?, "
            "input_tokens = COALESCE(input_tokens, 0) + ?, output_tokens = COALESCE(output_tokens, 0) + ?, "
            "attempts = attempts + ?, state = COALESCE(?, state), result = COALESCE(?, result), updated_at = ? "
            "WHERE key = ?",
            [(s.released_usd, s.cost_usd, s.usage.input_tokens, s.usage.output_tokens, s.attempts, s.state,
              None if s.result is None else json.dumps(s.result, ensure_ascii=False), now, s.key) for s in items],
        )  # fmt: skip
        self._add_spend(sum(s.cost_usd - s.released_usd for s in items))

    def _add_spend(self, delta: float) -> None:
        if delta:
            self.store.conn.execute("UPDATE judge_spend SET total_usd = total_usd + ? WHERE id = 1", (delta,))

    # ------------------------------------------------------------------------------------ batches
    def create_batch(
        self, *, tag: str, chunk: int, items: Sequence[tuple[str, Reservation]], provider: str, model: str
    ) -> BatchRecord | None:
        """Record a batch, its custom_id -> key map and the items' reservations in one transaction, before
        anything is uploaded. Takes the prefix of `items` that fits the budget; None if none does."""
        if not items:
            return None
        try:
            return self._create_batch(tag=tag, chunk=chunk, items=items, provider=provider, model=model)
        except _NothingFits:
            return None

    def _create_batch(
        self, *, tag: str, chunk: int, items: Sequence[tuple[str, Reservation]], provider: str, model: str
    ) -> BatchRecord:
        first = items[0][1]
        now = time.time()
        with self.store.tx():
            cur = self.store.conn.execute(
                "INSERT INTO batches (provider, model, task, cell, tag, chunk, state, n_requests, reserved_usd, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'building', 0, 0, ?, ?)",
                (provider, model, first.task, first.cell, tag, chunk, now, now),
            )
            batch_id = int(cur.lastrowid or 0)
            granted = self._reserve([r for _, r in items], mode="batch", state="submitted", batch_id=batch_id)
            if granted == 0:
                raise _NothingFits
            kept = items[:granted]
            self.store.conn.executemany(
                "INSERT INTO batch_items (batch_id, custom_id, key) VALUES (?, ?, ?)",
                [(batch_id, cid, r.key) for cid, r in kept],
            )
            self.store.conn.execute(
                "UPDATE batches SET n_requests = ?, reserved_usd = ? WHERE id = ?",
                (granted, sum(r.usd for _, r in kept), batch_id),
            )
        return self.batch(batch_id)

    def update_batch(self, batch_id: int, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self.store.tx():
            self.store.conn.execute(f"UPDATE batches SET {sets} WHERE id = ?", (*fields.values(), batch_id))

    def batch(self, batch_id: int) -> BatchRecord:
        row = self.store.one("SELECT * FROM batches WHERE id = ?", (batch_id,))
        assert row is not None
        return _batch_record(row)

    def open_batches(self, cell: str, provider: str, model: str) -> list[BatchRecord]:
        marks = ",".join("?" * len(OPEN_BATCH_STATES))
        rows = self.store.query(
            f"SELECT * FROM batches WHERE cell = ? AND provider = ? AND model = ? AND state IN ({marks}) ORDER BY id",
            (cell, provider, model, *OPEN_BATCH_STATES),
        )
        return [_batch_record(r) for r in rows]

    def batch_items(self, batch_id: int) -> dict[str, str]:
        rows = self.store.query("SELECT custom_id, key FROM batch_items WHERE batch_id = ?", (batch_id,))
        return {r["custom_id"]: r["key"] for r in rows}

    def batch_cells(self, batch_ids: Iterable[int]) -> dict[int, str]:
        ids = sorted(set(batch_ids))
        if not ids:
            return {}
        rows = self.store.query(f"SELECT id, cell FROM batches WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
        return {int(r["id"]): r["cell"] for r in rows}

    def known_remote_ids(self, provider: str) -> set[str]:
        rows = self.store.query("SELECT remote_id FROM batches WHERE provider = ? AND remote_id != ''", (provider,))
        return {r["remote_id"] for r in rows}

    def submissions(self, keys: Iterable[str]) -> dict[str, int]:
        """How many batches each key has been submitted in."""
        out: dict[str, int] = {}
        for part in _chunks(list(keys)):
            marks = ",".join("?" * len(part))
            for r in self.store.query(
                f"SELECT key, COUNT(*) AS n FROM batch_items WHERE key IN ({marks}) GROUP BY key", tuple(part)
            ):
                out[r["key"]] = int(r["n"])
        return out

    def fail_batch(self, batch_id: int, error: str) -> None:
        """Give up on a batch: its unanswered items go back to pending (a rerun resubmits them)."""
        with self.store.tx():
            row = self.store.one(
                "SELECT COALESCE(SUM(reserved_usd), 0) AS r FROM ledger WHERE batch_id = ? AND state = 'submitted'",
                (batch_id,),
            )
            self.store.conn.execute(
                "UPDATE ledger SET state = 'pending', reserved_usd = 0 WHERE batch_id = ? AND state = 'submitted'",
                (batch_id,),
            )
            self._add_spend(-float(row["r"]) if row is not None else 0.0)
            self.store.conn.execute(
                "UPDATE batches SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                (error, time.time(), batch_id),
            )

    def batch_entries(self, batch_id: int) -> dict[str, Entry]:
        """Keys of `batch_id` still awaiting its results (a conversion interrupted midway left the rest)."""
        rows = self.store.query("SELECT * FROM ledger WHERE batch_id = ? AND state = 'submitted'", (batch_id,))
        return {r["key"]: _entry(r) for r in rows}


def answer_settlement(
    key: str,
    completion: Completion,
    verdict: Verdict,
    *,
    released_usd: float,
    cost_usd: float,
    asks: int,
    max_reasks: int,
    pending_state: str | None,
) -> Settlement:
    """Book an answer: final (done/invalid) when valid or out of re-asks, else `pending_state`."""
    final = verdict.valid or asks > max_reasks
    state = ("done" if verdict.valid else "invalid") if final else pending_state
    result = {
        "value": verdict.value,
        "valid": verdict.valid,
        "reason": verdict.reason,
        "raw": completion.text[:500],
        "finish": completion.finish,
        "asks": asks,
    }
    return Settlement(key, released_usd, cost_usd, completion.usage, attempts=1, state=state, result=result)


class _NothingFits(Exception):
    """Raised inside `create_batch`'s transaction to roll it back."""


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(keys), CHUNK):
        yield keys[i : i + CHUNK]


def _entry(r: Any) -> Entry:
    return Entry(
        key=r["key"],
        state=r["state"],
        mode=r["mode"] or "",
        item=r["item"] or "",
        batch_id=r["batch_id"],
        attempts=int(r["attempts"] or 0),
        cost_usd=float(r["cost_usd"] or 0.0),
        input_tokens=int(r["input_tokens"] or 0),
        output_tokens=int(r["output_tokens"] or 0),
        reserved_usd=float(r["reserved_usd"] or 0.0),
        result=json.loads(r["result"]) if r["result"] else {},
    )


def _batch_record(r: Any) -> BatchRecord:
    return BatchRecord(
        id=int(r["id"]),
        tag=r["tag"],
        state=r["state"],
        input_file_id=r["input_file_id"] or "",
        remote_id=r["remote_id"] or "",
        n_requests=int(r["n_requests"] or 0),
        created_at=float(r["created_at"] or 0.0),
        updated_at=float(r["updated_at"] or 0.0),
    )
