"""OpenAI (and any OpenAI-compatible `base_url`): chat completions, structured outputs, the Batch API.

Structured output is `response_format` with a strict JSON schema. Sync calls go through the SDK's
low-level `client.post` (its auth, timeouts and error classes, without per-call parameter transforms
and model parsing: that overhead alone caps one process near 200 requests/s). The SDK's own retries
are off (`max_retries=0`); the runners retry by error class.
"""

from __future__ import annotations

import json
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
    loads_object,
)

ENDPOINT = "/v1/chat/completions"
TAG_KEY = "steertui_tag"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# 50,000 requests and 200 MB per input file; keep 5 % headroom on bytes.
LIMITS = BatchLimits(max_requests=50_000, max_bytes=int(200 * 1024 * 1024 * 0.95))
CONTROL_TIMEOUT_S = 600.0  # uploads and downloads of large batch files
LIST_SKEW_S = 600.0  # stop scanning the batch list this long before the record's creation time


def request_body(request: Request) -> dict[str, Any]:
    """The chat-completions body for `request` (the same for sync calls and batch lines)."""
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages += [{"role": m.role, "content": m.content} for m in request.messages]
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "temperature": request.temperature,
        "max_completion_tokens": request.max_tokens,
    }
    if request.output.schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": request.output.name, "strict": True, "schema": dict(request.output.schema)},
        }
    return body


def completion_from_chat(data: Any) -> Completion:
    """Normalise a chat-completion JSON object."""
    if not isinstance(data, dict):
        return Completion(text="", finish="malformed response")
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    text = message.get("content") or ""
    usage = data.get("usage") or {}
    return Completion(
        text=text if isinstance(text, str) else json.dumps(text),
        data=loads_object(text) if isinstance(text, str) else None,
        usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        finish=str(choice.get("finish_reason") or ""),
        refusal=message.get("refusal") or None,
    )


def classify(exc: Exception) -> ProviderError:
    """Map an SDK exception to an error class (quota is a 429 with code insufficient_quota)."""
    import openai

    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, message)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(ErrorKind.CONNECTION, message)
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return ProviderError(ErrorKind.QUOTA, message)
        return ProviderError(ErrorKind.RATE_LIMIT, message, retry_after=retry_after(exc.response.headers))
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(ErrorKind.AUTH, message + " (check OPENAI_API_KEY)")
    if isinstance(exc, openai.NotFoundError):
        return ProviderError(ErrorKind.NOT_FOUND, message)
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return ProviderError(ErrorKind.SERVER, message, retry_after=retry_after(exc.response.headers))
    return ProviderError(ErrorKind.BAD_REQUEST, message)


def retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` / `retry-after` headers, when given as numbers."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name) if headers is not None else None
        try:
            return float(raw) * scale if raw is not None else None
        except ValueError:
            continue
    return None


def aiohttp_client(factory: Any) -> Any:
    """The SDK's aiohttp transport when aiohttp is installed (its connection pool costs far less per
    request than the default one at 32+ connections), else None for the SDK default."""
    try:
        return factory()
    except RuntimeError:
        return None


class OpenAIProvider:
    """Chat completions on one reused `AsyncOpenAI` client."""

    name = "openai"

    def __init__(self, model: str, *, api_key: str, base_url: str = "", timeout_s: float = 60.0) -> None:
        import openai  # lazy: the SDK is heavy and only judge stages need it

        self.model = model
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            timeout=timeout_s,
            http_client=aiohttp_client(openai.DefaultAioHttpClient),
        )
        self.batch: BatchAPI = OpenAIBatchAPI(self._client)

    async def complete(self, request: Request) -> Completion:
        import openai

        try:
            data = await self._client.post("/chat/completions", body=request_body(request), cast_to=object)
        except openai.APIError as exc:
            raise classify(exc) from None
        return completion_from_chat(data)

    async def aclose(self) -> None:
        await self._client.close()


class OpenAIBatchAPI:
    """Files + Batch API. Files are named `<tag>.jsonl` and batches carry `metadata.steertui_tag`, so an
    upload or create interrupted after the provider acted is found again instead of repeated."""

    limits = LIMITS

    def __init__(self, client: Any) -> None:
        self._client = client

    def encode_line(self, custom_id: str, request: Request) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": request_body(request)}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    async def find_upload(self, tag: str) -> str | None:
        async with _translated():
            async for item in self._client.files.list(purpose="batch"):
                if item.filename == f"{tag}.jsonl":
                    return str(item.id)
        return None

    async def upload(self, tag: str, data: bytes) -> str:
        async with _translated():
            uploaded = await self._client.files.create(
                file=(f"{tag}.jsonl", data), purpose="batch", timeout=CONTROL_TIMEOUT_S
            )
        return str(uploaded.id)

    async def find_batch(self, tag: str, since: float, n_requests: int, known: set[str]) -> str | None:
        async with _translated():
            async for batch in self._client.batches.list(limit=100):
                if batch.created_at < since - LIST_SKEW_S:
                    break
                if (batch.metadata or {}).get(TAG_KEY) == tag and batch.id not in known:
                    return str(batch.id)
        return None

    async def create(self, tag: str, file_id: str, data: bytes) -> str:
        async with _translated():
            batch = await self._client.batches.create(
                input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata={TAG_KEY: tag}
            )
        return str(batch.id)

    async def retrieve(self, remote_id: str) -> RemoteBatch:
        async with _translated():
            batch = await self._client.batches.retrieve(remote_id)
        errors = getattr(batch.errors, "data", None) or []
        reason = "; ".join(f"{e.code}: {e.message}" for e in errors[:3])
        return RemoteBatch(
            remote_id=remote_id,
            status=batch.status,
            terminal=batch.status in TERMINAL,
            output_file_id=batch.output_file_id or "",
            error_file_id=batch.error_file_id or "",
            failed_reason=reason,
        )

    async def results(self, remote: RemoteBatch) -> list[LineResult]:
        out: list[LineResult] = []
        for file_id in (remote.output_file_id, remote.error_file_id):
            if file_id:
                async with _translated():
                    content = await self._client.files.content(file_id, timeout=CONTROL_TIMEOUT_S)
                out.extend(parse_result_line(line) for line in content.text.splitlines() if line.strip())
        return out


def parse_result_line(line: str) -> LineResult:
    """One line of a batch output or error file."""
    row = loads_object(line)
    if not isinstance(row, dict):
        return LineResult(custom_id="", error="unparseable result line")
    custom_id = str(row.get("custom_id") or "")
    response = row.get("response") or {}
    if row.get("error"):
        err = row["error"]
        return LineResult(custom_id, error=f"{err.get('code')}: {err.get('message')}")
    if response.get("status_code") != 200:
        body = response.get("body") or {}
        err = body.get("error") or {}
        return LineResult(custom_id, error=f"status {response.get('status_code')}: {err.get('message', '')}")
    return LineResult(custom_id, completion=completion_from_chat(response.get("body")))


class _translated:
    """Context manager: SDK errors become classified `ProviderError`s."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        import openai

        if isinstance(exc, openai.APIError):
            raise classify(exc) from None
        return False
