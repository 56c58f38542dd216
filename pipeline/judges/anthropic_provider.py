"""Anthropic: Messages with a forced tool call for structured answers, and Message Batches.

Message Batches have no metadata, so a create interrupted after the provider acted is found again by a
heuristic (see `AnthropicBatchAPI.find_batch`): a batch created no earlier than our record of the attempt
(minus clock skew), with exactly our request count, not already recorded for another chunk. Results are
later checked against the chunk's custom ids, so a wrong match is detected rather than converted.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pipeline.judges.base import (
    BatchAPI,
    BatchLimits,
    Completion,
    ErrorKind,
    LineResult,
    ProviderError,
    RemoteBatch,
    Request,
    Usage,
)
from pipeline.judges.openai_provider import aiohttp_client, retry_after

# 100,000 requests and 256 MB per batch; keep 5 % headroom on bytes.
LIMITS = BatchLimits(max_requests=100_000, max_bytes=int(256 * 1024 * 1024 * 0.95))
CONTROL_TIMEOUT_S = 600.0
CLOCK_SKEW_S = 120.0  # tolerated difference between our clock and the provider's created_at


def request_body(request: Request) -> dict[str, Any]:
    """The Messages body for `request` (the same for sync calls and batch params)."""
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    if request.system:
        body["system"] = request.system
    if request.output.schema is not None:
        name = request.output.name
        body["tools"] = [{"name": name, "description": f"Record the {name}.", "input_schema": request.output.schema}]
        body["tool_choice"] = {"type": "tool", "name": name}
    return body


def completion_from_message(data: Any) -> Completion:
    """Normalise a Messages JSON object; a tool_use block's input is the structured answer."""
    if not isinstance(data, dict):
        return Completion(text="", finish="malformed response")
    blocks = [b for b in data.get("content") or [] if isinstance(b, dict)]
    tool = next((b for b in blocks if b.get("type") == "tool_use"), None)
    usage = data.get("usage") or {}
    text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    return Completion(
        text=json.dumps(tool.get("input")) if tool is not None else text,
        data=tool.get("input") if tool is not None else None,
        usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
        finish=str(data.get("stop_reason") or ""),
        refusal="refusal" if data.get("stop_reason") == "refusal" else None,
    )


def classify(exc: Exception) -> ProviderError:
    """Map an SDK exception to an error class (quota/billing is a 402 billing_error)."""
    import anthropic

    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, message)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(ErrorKind.CONNECTION, message)
    if isinstance(exc, anthropic.RateLimitError):
        return ProviderError(ErrorKind.RATE_LIMIT, message, retry_after=retry_after(exc.response.headers))
    if isinstance(exc, anthropic.PaymentRequiredError):
        return ProviderError(ErrorKind.QUOTA, message)
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return ProviderError(ErrorKind.AUTH, message + " (check ANTHROPIC_API_KEY)")
    if isinstance(exc, anthropic.NotFoundError):
        return ProviderError(ErrorKind.NOT_FOUND, message)
    if isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 500:
        return ProviderError(ErrorKind.SERVER, message, retry_after=retry_after(exc.response.headers))
    return ProviderError(ErrorKind.BAD_REQUEST, message)


class AnthropicProvider:
    """Messages on one reused `AsyncAnthropic` client."""

    name = "anthropic"

    def __init__(self, model: str, *, api_key: str, base_url: str = "", timeout_s: float = 60.0) -> None:
        import anthropic  # lazy: the SDK is heavy and only judge stages need it

        self.model = model
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            timeout=timeout_s,
            http_client=aiohttp_client(anthropic.DefaultAioHttpClient),
        )
        self.batch: BatchAPI = AnthropicBatchAPI(self._client)

    async def complete(self, request: Request) -> Completion:
        import anthropic

        try:
            data = await self._client.post("/v1/messages", body=request_body(request), cast_to=object)
        except anthropic.APIError as exc:
            raise classify(exc) from None
        return completion_from_message(data)

    async def aclose(self) -> None:
        await self._client.close()


class AnthropicBatchAPI:
    """Message Batches: no file upload; the request list is the create call's body."""

    limits = LIMITS

    def __init__(self, client: Any) -> None:
        self._client = client

    def encode_line(self, custom_id: str, request: Request) -> bytes:
        line = {"custom_id": custom_id, "params": request_body(request)}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    async def find_upload(self, tag: str) -> str | None:
        return ""

    async def upload(self, tag: str, data: bytes) -> str:
        return ""

    async def find_batch(self, tag: str, since: float, n_requests: int, known: set[str]) -> str | None:
        """The oldest batch created at or after `since - CLOCK_SKEW_S` with exactly `n_requests` requests
        and not in `known` (ids already recorded for other chunks); None if there is none."""
        found: list[tuple[float, str]] = []
        async with _translated():
            async for batch in self._client.messages.batches.list(limit=100):
                created = _timestamp(batch.created_at)
                if created < since - CLOCK_SKEW_S:
                    break
                counts = batch.request_counts
                total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
                if total == n_requests and batch.id not in known:
                    found.append((created, str(batch.id)))
        return min(found)[1] if found else None

    async def create(self, tag: str, file_id: str, data: bytes) -> str:
        content = b'{"requests":[' + b",".join(data.splitlines()) + b"]}"
        async with _translated():
            batch = await self._client.post(
                "/v1/messages/batches",
                content=content,
                cast_to=object,
                options={"timeout": CONTROL_TIMEOUT_S, "headers": {"Content-Type": "application/json"}},
            )
        return str(batch["id"])

    async def retrieve(self, remote_id: str) -> RemoteBatch:
        async with _translated():
            batch = await self._client.messages.batches.retrieve(remote_id)
        return RemoteBatch(
            remote_id=remote_id, status=batch.processing_status, terminal=batch.processing_status == "ended"
        )

    async def results(self, remote: RemoteBatch) -> list[LineResult]:
        out: list[LineResult] = []
        async with _translated():
            decoder = await self._client.messages.batches.results(remote.remote_id, timeout=CONTROL_TIMEOUT_S)
            async for row in decoder:
                out.append(_line_result(row))
        return out


def _line_result(row: Any) -> LineResult:
    result = row.result
    if result.type == "succeeded":
        return LineResult(row.custom_id, completion=completion_from_message(result.message.model_dump()))
    if result.type == "errored":
        err = result.error.error
        return LineResult(row.custom_id, error=f"errored: {err.type}: {err.message}")
    return LineResult(row.custom_id, error=str(result.type))


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class _translated:
    """Context manager: SDK errors become classified `ProviderError`s."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        import anthropic

        if isinstance(exc, anthropic.APIError):
            raise classify(exc) from None
        return False
