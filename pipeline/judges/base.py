"""Provider-neutral requests, completions and errors for LLM calls (judging, prompting, data generation).

A `Request` is everything that decides what a provider answers: provider, model, system text, messages,
output spec (free text or a named JSON schema), temperature and max_tokens. Its `key` (sha256 of those) is
the ledger's identity for the request: the same request always gets the same key, so a rerun finds the
answer already paid for instead of asking again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Protocol

from pipeline.config import JudgeConfig
from pipeline.data import Message
from pipeline.errors import CredentialsError, JudgeError, SteerError

KEY_VERSION = 1
CREDENTIAL_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True)
class OutputSpec:
    """What the reply must be: free text (`schema` None) or a JSON object matching `schema`, called `name`."""

    name: str = "text"
    schema: Mapping[str, Any] | None = None


TEXT = OutputSpec()


@dataclass(frozen=True)
class Request:
    """One LLM call, provider-neutral. `key` is deterministic in every field."""

    provider: str
    model: str
    messages: tuple[Message, ...]
    system: str = ""
    output: OutputSpec = TEXT
    temperature: float = 0.0
    max_tokens: int = 20

    @cached_property
    def key(self) -> str:
        payload = {
            "v": KEY_VERSION,
            "provider": self.provider,
            "model": self.model,
            "system": self.system,
            "messages": [[m.role, m.content] for m in self.messages],
            "output": [self.output.name, self.output.schema],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    @cached_property
    def prompt_bytes(self) -> int:
        """UTF-8 size of all prompt text (for conservative token estimates)."""
        return len(self.system.encode()) + sum(len(m.content.encode()) for m in self.messages)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def as_row(self) -> dict[str, int]:
        """The study's `token_usage` shape."""
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True)
class Completion:
    """A provider's reply, normalised: raw text, the structured object (if it parsed), usage."""

    text: str
    data: Any = None  # the JSON object for structured outputs (None if absent or unparseable)
    usage: Usage = field(default_factory=Usage)
    finish: str = ""
    refusal: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A parsed answer: `value` when valid, else `reason` says why not (never coerced)."""

    valid: bool
    value: Any = None
    reason: str | None = None


Parser = Callable[[Completion], Verdict]


def parse_text(completion: Completion) -> Verdict:
    """Free-text replies are valid when non-empty."""
    if completion.refusal:
        return Verdict(False, None, f"refusal: {completion.refusal[:200]}")
    if not completion.text.strip():
        return Verdict(False, None, "empty reply")
    return Verdict(True, completion.text)


@dataclass(frozen=True)
class Call:
    """A request a stage wants answered: the request, how to judge its reply, and ledger labels."""

    request: Request
    parse: Parser
    task: str  # e.g. coherence, pairwise, levels
    cell: str  # the unit of work it belongs to, e.g. score:<model>:L<layer>:E<epoch>:<task>
    item: str  # the item within the cell, e.g. a generation id

    @property
    def key(self) -> str:
        return self.request.key


@dataclass(frozen=True)
class RunSettings:
    """How calls are executed (from `JudgeConfig`, plus test-only knobs from the environment)."""

    mode: str = "sync"  # sync | batch
    concurrency: int = 32
    max_retries: int = 6  # per attempt, for rate limits, 5xx, timeouts and connection errors
    max_reasks: int = 2  # extra asks after an unparseable or out-of-range answer
    batch_poll_s: float = 30.0
    batch_fallback_sync: bool = True
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    flush_interval_s: float = 0.05  # ledger + output writes are grouped at most this long
    crash_at: str = ""  # test hook: SIGKILL this process at after_upload | after_create | during_convert

    @classmethod
    def from_config(cls, judge: JudgeConfig, env: Mapping[str, str]) -> RunSettings:
        """STEERTUI_TEST_BACKOFF_S (backoff base seconds) and STEERTUI_TEST_CRASH_AT are for tests."""
        base = float(env.get("STEERTUI_TEST_BACKOFF_S") or 1.0)
        return cls(
            mode=judge.mode,
            concurrency=judge.concurrency,
            max_retries=judge.max_retries,
            max_reasks=judge.max_reasks,
            batch_poll_s=judge.batch_poll_s,
            batch_fallback_sync=judge.batch_fallback_sync,
            backoff_base_s=base,
            backoff_cap_s=max(base, 60.0 * base),
            crash_at=env.get("STEERTUI_TEST_CRASH_AT", ""),
        )


class ErrorKind(Enum):
    RATE_LIMIT = "rate_limit"
    SERVER = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    AUTH = "auth"
    QUOTA = "quota"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.RATE_LIMIT, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION)

    @property
    def fatal(self) -> bool:
        """Errors that would fail every request alike: stop the run instead of failing items one by one."""
        return self in (ErrorKind.AUTH, ErrorKind.QUOTA, ErrorKind.NOT_FOUND)


class ProviderError(Exception):
    """A classified provider failure; the message is already redacted."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(redact(message))
        self.kind = kind
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class LineResult:
    """One request's outcome inside a finished batch: a completion, or an error (expired, errored, ...)."""

    custom_id: str
    completion: Completion | None = None
    error: str | None = None


@dataclass(frozen=True)
class RemoteBatch:
    """A provider batch as last seen."""

    remote_id: str
    status: str
    terminal: bool
    output_file_id: str = ""
    error_file_id: str = ""
    failed_reason: str = ""


@dataclass(frozen=True)
class BatchLimits:
    max_requests: int
    max_bytes: int


class BatchAPI(Protocol):
    """A provider's batch endpoints, driven step by step by the batch runner (which persists between steps)."""

    limits: BatchLimits

    def encode_line(self, custom_id: str, request: Request) -> bytes: ...

    async def find_upload(self, tag: str) -> str | None: ...

    async def upload(self, tag: str, data: bytes) -> str: ...

    async def find_batch(self, tag: str, since: float, n_requests: int, known: set[str]) -> str | None: ...

    async def create(self, tag: str, file_id: str, data: bytes) -> str: ...

    async def retrieve(self, remote_id: str) -> RemoteBatch: ...

    async def results(self, remote: RemoteBatch) -> list[LineResult]: ...


class Provider(Protocol):
    """One provider + model: sync completions and its batch API, on one reused SDK client."""

    name: str
    model: str
    batch: BatchAPI

    async def complete(self, request: Request) -> Completion: ...

    async def aclose(self) -> None: ...


def stop_error(exc: ProviderError) -> SteerError:
    """The user-facing error for a failure that stops a run: a rejected key is bad input (exit 2)."""
    if exc.kind is ErrorKind.AUTH:
        return CredentialsError(f"the judge provider rejected the key: {exc.message}")
    return JudgeError(f"judge stopped: {exc.message}; fix it and rerun (paid answers are kept)")


def redact(text: str) -> str:
    """Remove any provider key that is set in the environment from `text` (errors, logs, DB)."""
    for var in CREDENTIAL_ENV.values():
        secret = os.environ.get(var, "")
        if len(secret) >= 4 and secret in text:
            text = text.replace(secret, "<redacted>")
    return text


def loads_object(text: str) -> Any:
    """JSON-decode `text`, or None when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None
