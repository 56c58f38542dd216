"""Thread-safe server state: fault config, runtime knobs, billing stats and the file/batch stores.

The aiohttp handlers run on the server's own event-loop thread while tests read stats and flip
knobs from theirs, so every shared structure is guarded by a lock and readers get copies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .answers import AnswerFn, default_answer

FaultKind = Literal["rate_limit", "server_error", "timeout", "malformed", "out_of_range"]
TRANSPORT_FAULTS: frozenset[str] = frozenset({"rate_limit", "server_error", "timeout"})
BatchOutcome = Literal["ok", "expire", "fail"]


def unit_interval(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) derived from ``parts``."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Faults:
    """Per-request fault probabilities (mutually exclusive; their sum must be <= 1).

    Decisions are seeded and deterministic per *request key and attempt number* (the n-th time the
    same completion is asked for), so a run reproduces exactly regardless of client concurrency.
    Transport faults (rate_limit, server_error, timeout) hit the sync completion endpoints, and also
    the files/batches endpoints when ``control_plane`` is set; content faults (malformed,
    out_of_range) hit rating/pairwise answers, both sync and batch lines. Faulted answers are never
    billed. Frozen: change faults by assigning a new value (``server.faults = f.replace(timeout=0)``).
    """

    rate_limit: float = 0.0  # 429 + Retry-After: retry_after_s
    server_error: float = 0.0  # 500
    timeout: float = 0.0  # completions: hang hang_s before answering; control plane: act, then hang
    malformed: float = 0.0  # 200, but content is not valid JSON / not a valid answer
    out_of_range: float = 0.0  # 200 with score 0/11 or answer "C"/"Neither"
    hang_s: float = 5.0
    seed: int = 0
    retry_after_s: float = 0.01
    control_plane: bool = False

    def __post_init__(self) -> None:
        probs = (self.rate_limit, self.server_error, self.timeout, self.malformed, self.out_of_range)
        if any(p < 0 or p > 1 for p in probs) or sum(probs) > 1 + 1e-9:
            raise ValueError(f"fault probabilities must be in [0, 1] and sum to <= 1, got {probs}")

    def roll(self, scope: str, attempt: int) -> FaultKind | None:
        """The fault (if any) for the ``attempt``-th request in ``scope`` (usually a request key)."""
        u = unit_interval(self.seed, scope, attempt)
        edge = 0.0
        kinds: tuple[tuple[FaultKind, float], ...] = (
            ("rate_limit", self.rate_limit),
            ("server_error", self.server_error),
            ("timeout", self.timeout),
            ("malformed", self.malformed),
            ("out_of_range", self.out_of_range),
        )
        for kind, p in kinds:
            edge += p
            if u < edge:
                return kind
        return None

    def replace(self, **changes: Any) -> Faults:
        return dataclasses.replace(self, **changes)


class Stats:
    """Thread-safe counters proving exactly-once billing. Read properties return copies.

    A completion is *paid* when a sync call got a 200 with a valid answer, or a batch line got a
    succeeded, valid result (billed when its batch finishes). Faulted answers are never paid.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paid_by_key: Counter[str] = Counter()
        self._attempts_by_key: Counter[str] = Counter()
        self._requests_by_endpoint: Counter[str] = Counter()
        self._faults_injected: Counter[str] = Counter()
        self._ints: dict[str, int] = dict.fromkeys(self._INT_FIELDS, 0)

    _INT_FIELDS = (
        "paid_total",
        "paid_sync",
        "paid_batch",
        "batches_created",
        "files_uploaded",
        "tokens_in",
        "tokens_out",
    )

    # ---- recording (called by the server)
    def record_request(self, endpoint: str) -> None:
        with self._lock:
            self._requests_by_endpoint[endpoint] += 1

    def record_attempt(self, key: str) -> None:
        with self._lock:
            self._attempts_by_key[key] += 1

    def record_fault(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._faults_injected[kind] += n

    def record_paid(self, key: str, tokens_in: int, tokens_out: int, *, via_batch: bool) -> None:
        with self._lock:
            self._paid_by_key[key] += 1
            self._ints["paid_total"] += 1
            self._ints["paid_batch" if via_batch else "paid_sync"] += 1
            self._ints["tokens_in"] += tokens_in
            self._ints["tokens_out"] += tokens_out

    def record(self, counter: Literal["batches_created", "files_uploaded"]) -> None:
        with self._lock:
            self._ints[counter] += 1

    # ---- reading
    @property
    def paid_by_key(self) -> dict[str, int]:
        with self._lock:
            return dict(self._paid_by_key)

    @property
    def attempts_by_key(self) -> Counter[str]:
        """Completion requests received per key, faulted ones included (sync calls only)."""
        with self._lock:
            return Counter(self._attempts_by_key)

    @property
    def requests_by_endpoint(self) -> Counter[str]:
        """All API requests by ``"METHOD /route/{template}"``, faulted and unauthorised ones included."""
        with self._lock:
            return Counter(self._requests_by_endpoint)

    @property
    def faults_injected(self) -> Counter[str]:
        with self._lock:
            return Counter(self._faults_injected)

    def _int(self, name: str) -> int:
        with self._lock:
            return self._ints[name]

    @property
    def paid_total(self) -> int:
        """All payments."""
        return self._int("paid_total")

    @property
    def paid_sync(self) -> int:
        """Payments for sync completions."""
        return self._int("paid_sync")

    @property
    def paid_batch(self) -> int:
        """Payments for batch lines."""
        return self._int("paid_batch")

    @property
    def batches_created(self) -> int:
        """Batches created (both providers)."""
        return self._int("batches_created")

    @property
    def files_uploaded(self) -> int:
        """Files uploaded via POST /v1/files."""
        return self._int("files_uploaded")

    @property
    def tokens_in(self) -> int:
        """Billed prompt tokens."""
        return self._int("tokens_in")

    @property
    def tokens_out(self) -> int:
        """Billed completion tokens."""
        return self._int("tokens_out")

    def duplicates(self) -> dict[str, int]:
        """Keys paid more than once (empty when billing was exactly-once)."""
        return {k: n for k, n in self.paid_by_key.items() if n > 1}

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "paid_by_key": dict(self._paid_by_key),
                "attempts_by_key": dict(self._attempts_by_key),
                "requests_by_endpoint": dict(self._requests_by_endpoint),
                "faults_injected": dict(self._faults_injected),
                **self._ints,
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        """Rebuild a Stats from ``GET /_stats`` JSON (for servers running in another process)."""
        stats = cls()
        stats._paid_by_key.update(data.get("paid_by_key", {}))
        stats._attempts_by_key.update(data.get("attempts_by_key", {}))
        stats._requests_by_endpoint.update(data.get("requests_by_endpoint", {}))
        stats._faults_injected.update(data.get("faults_injected", {}))
        for name in cls._INT_FIELDS:
            stats._ints[name] = int(data.get(name, 0))
        return stats

    def reset(self) -> None:
        with self._lock:
            for c in (
                self._paid_by_key,
                self._attempts_by_key,
                self._requests_by_endpoint,
                self._faults_injected,
            ):
                c.clear()
            self._ints = dict.fromkeys(self._INT_FIELDS, 0)

    def __repr__(self) -> str:
        d = self.as_dict()
        return (
            f"Stats(paid_total={d['paid_total']}, keys={len(d['paid_by_key'])}, "
            f"faults={d['faults_injected']}, requests={sum(d['requests_by_endpoint'].values())})"
        )


@dataclass
class Knobs:
    """Runtime-adjustable behaviour. Read a consistent copy with :meth:`ServerState.knobs`."""

    faults: Faults = field(default_factory=Faults)
    latency_s: float = 0.0
    answer: AnswerFn = default_answer
    batch_polls_to_complete: int = 1
    quota_exhausted: bool = False
    expire_next_batches: int = 0
    fail_next_batches: int = 0
    batch_request_error_rate: float = 0.0

    def public(self) -> dict[str, Any]:
        """JSON-able view (everything but the answer function)."""
        return {
            "faults": dataclasses.asdict(self.faults),
            "latency_s": self.latency_s,
            "batch_polls_to_complete": self.batch_polls_to_complete,
            "quota_exhausted": self.quota_exhausted,
            "expire_next_batches": self.expire_next_batches,
            "fail_next_batches": self.fail_next_batches,
            "batch_request_error_rate": self.batch_request_error_rate,
        }


KNOB_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Knobs))


@dataclass
class StoredFile:
    id: str
    seq: int
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class BatchLine:
    custom_id: str
    body: dict[str, Any]
    key: str


@dataclass
class BatchRecord:
    """Provider-neutral part of a batch; provider modules subclass it with their wire fields."""

    id: str
    seq: int
    created_at: int
    lines: list[BatchLine]
    outcome: BatchOutcome
    polls_needed: int
    polls: int = 0
    status: str = "validating"
    cancel_requested: bool = False


_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(n))


class ServerState:
    """Everything the route handlers share."""

    def __init__(self, knobs: Knobs, api_key: str) -> None:
        self.api_key = api_key
        self.stats = Stats()
        self._lock = threading.RLock()
        self._knobs = knobs
        self._attempts: Counter[str] = Counter()
        self._seq = itertools.count(1)
        self.files: dict[str, StoredFile] = {}
        self.stopping: asyncio.Event | None = None  # created on the server loop

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def knobs(self) -> Knobs:
        with self._lock:
            return dataclasses.replace(self._knobs)

    def update(self, **changes: Any) -> None:
        unknown = set(changes) - KNOB_NAMES
        if unknown:
            raise TypeError(f"unknown knobs: {sorted(unknown)}")
        if isinstance(changes.get("faults"), Mapping):  # partial update from JSON
            changes["faults"] = self.knobs().faults.replace(**changes["faults"])
        with self._lock:
            self._knobs = dataclasses.replace(self._knobs, **changes)

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def next_attempt(self, scope: str) -> int:
        """0 for the first request in ``scope``, 1 for the second, ... (drives fault rolls)."""
        with self._lock:
            n = self._attempts[scope]
            self._attempts[scope] += 1
            return n

    def take_batch_outcome(self) -> BatchOutcome:
        """Consume one ``fail_next_batches`` / ``expire_next_batches`` credit, if any."""
        with self._lock:
            if self._knobs.fail_next_batches > 0:
                self._knobs.fail_next_batches -= 1
                return "fail"
            if self._knobs.expire_next_batches > 0:
                self._knobs.expire_next_batches -= 1
                return "expire"
            return "ok"

    def line_errors(self, batch_id: str, custom_id: str, rate: float, seed: int) -> bool:
        """Whether a batch line gets a per-request error (``batch_request_error_rate``)."""
        return rate > 0 and unit_interval(seed, "batch-line-error", batch_id, custom_id) < rate

    def add_file(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        f = StoredFile(
            id=new_id("file-", 22),
            seq=self.next_seq(),
            filename=filename,
            purpose=purpose,
            data=data,
            created_at=int(time.time()),
        )
        with self._lock:
            self.files[f.id] = f
        return f

    async def hang(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the server stops first; returns True if it is stopping."""
        if self.stopping is None:
            await asyncio.sleep(seconds)
            return False
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
