"""HTTP helpers shared by the OpenAI and Anthropic routes: provider-shaped errors and JSON I/O."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web

from .answers import Provider

T = TypeVar("T")


class APIFailure(Exception):
    """Raise from a handler to answer with ``response`` (a provider-shaped error)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def provider_for(path: str) -> Provider:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def request_id() -> str:
    return "req_" + secrets.token_hex(12)


def json_response(
    provider: Provider, data: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response carrying the provider's request-id header."""
    hdrs = {"x-request-id" if provider == "openai" else "request-id": request_id(), **(headers or {})}
    return web.Response(text=json.dumps(data), status=status, content_type="application/json", headers=hdrs)


def error_response(
    provider: Provider,
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """OpenAI: ``{"error": {message, type, param, code}}``; Anthropic: ``{"type": "error", "error":
    {type, message}, "request_id"}``."""
    if provider == "openai":
        body: dict[str, Any] = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    else:
        body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id()}
    return json_response(provider, body, status=status, headers=headers)


def bad_request(provider: Provider, message: str) -> APIFailure:
    return APIFailure(error_response(provider, 400, message, type_="invalid_request_error"))


def not_found(provider: Provider, message: str) -> APIFailure:
    type_ = "invalid_request_error" if provider == "openai" else "not_found_error"
    return APIFailure(error_response(provider, 404, message, type_=type_))


def unauthorised(provider: Provider) -> web.Response:
    if provider == "openai":
        return error_response(
            provider,
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            type_="invalid_request_error",
            code="invalid_api_key",
        )
    return error_response(provider, 401, "invalid x-api-key", type_="authentication_error")


def rate_limited(provider: Provider, retry_after_s: float) -> web.Response:
    headers = {"retry-after": f"{retry_after_s:g}"}
    if provider == "openai":
        return error_response(
            provider,
            429,
            "Rate limit reached for requests (fake API).",
            type_="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    return error_response(
        provider,
        429,
        "Number of request tokens has exceeded your per-minute rate limit (fake API).",
        type_="rate_limit_error",
        headers=headers,
    )


def server_error(
    provider: Provider, message: str = "The server had an error while processing your request."
) -> web.Response:
    return error_response(provider, 500, message, type_="server_error" if provider == "openai" else "api_error")


def quota_exhausted(provider: Provider) -> web.Response:
    """OpenAI: 429 ``insufficient_quota`` (the SDK raises RateLimitError with ``code ==
    "insufficient_quota"``; like the real API it sends no ``x-should-retry`` header, so SDK-level
    retries still happen -- classify on the code). Anthropic: 402 ``billing_error`` (the SDK raises
    PaymentRequiredError and never retries it)."""
    if provider == "openai":
        return error_response(
            provider,
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type_="insufficient_quota",
            code="insufficient_quota",
        )
    return error_response(
        provider, 402, "Your credit balance is too low to access the Anthropic API.", type_="billing_error"
    )


def service_stopping(provider: Provider) -> web.Response:
    return error_response(
        provider,
        503,
        "The fake API server is shutting down.",
        type_="server_error" if provider == "openai" else "overloaded_error",
    )


async def read_json_object(request: web.Request, provider: Provider) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(provider, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request(provider, "Request body must be a JSON object.")
    return data


def query_int(request: web.Request, provider: Provider, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(provider, f"Invalid integer for '{name}': {raw!r}") from exc
    if not 1 <= value <= maximum:
        raise bad_request(provider, f"'{name}' must be between 1 and {maximum}.")
    return value


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def page_after(items: Sequence[T], ids: Callable[[T], str], after: str | None, limit: int) -> tuple[list[T], bool]:
    """The ``limit`` items following the one whose id is ``after`` (from the start if None), and
    whether more follow. An unknown cursor yields an empty page."""
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(items) if ids(item) == after), len(items))
    return list(items[start : start + limit]), start + limit < len(items)
