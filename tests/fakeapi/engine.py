"""Provider-neutral completion flow: fault rolls, answering, and billing.

Each provider module supplies a :data:`Render` function that wraps a :class:`Reply` in its wire
format (an OpenAI chat completion or an Anthropic message); everything else is shared so both
providers bill and fault identically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import common
from .answers import (
    AnswerFn,
    AnswerRequest,
    ContentFault,
    OutputSpec,
    Provider,
    Reply,
    answer_request,
    estimate_tokens,
    make_reply,
    output_spec,
    request_key,
)
from .state import BatchLine, Knobs, ServerState

#: (spec, reply, request, tokens_in, tokens_out, via_batch) -> provider response body
Render = Callable[[OutputSpec, Reply, AnswerRequest, int, int, bool], dict[str, Any]]


class AnswerFunctionError(RuntimeError):
    """The user-supplied answer function raised."""


@dataclass(frozen=True)
class Answered:
    data: dict[str, Any]
    tokens_in: int
    tokens_out: int
    fault: ContentFault | None  # a content fault was applied: the answer must not be billed


def answer(
    provider: Provider,
    body: Mapping[str, Any],
    answer_fn: AnswerFn,
    fault: ContentFault | None,
    render: Render,
    *,
    custom_id: str | None = None,
) -> Answered:
    """Answer one completion request body (sync call or batch line)."""
    spec = output_spec(provider, body)
    req = answer_request(provider, body, custom_id)
    applied = fault if spec.kind != "text" else None
    try:
        reply = make_reply(spec, req, answer_fn, applied)
    except Exception as exc:  # the answer function is test code; surface its failure as a 500
        raise AnswerFunctionError(f"answer function raised {exc!r}") from exc
    tokens_in, tokens_out = estimate_tokens(req.prompt), estimate_tokens(reply.as_text())
    data = render(spec, reply, req, tokens_in, tokens_out, custom_id is not None)
    return Answered(data=data, tokens_in=tokens_in, tokens_out=tokens_out, fault=applied)


async def sync_completion(
    state: ServerState, provider: Provider, body: Mapping[str, Any], render: Render
) -> web.Response:
    """The whole life of a sync completion: quota, transport faults, latency, answer, bill."""
    knobs = state.knobs()
    key = request_key(provider, body)
    state.stats.record_attempt(key)
    attempt = state.next_attempt(key)
    if knobs.quota_exhausted:
        state.stats.record_fault("insufficient_quota")
        return common.quota_exhausted(provider)
    fault = knobs.faults.roll(key, attempt)
    if fault == "rate_limit":
        state.stats.record_fault(fault)
        return common.rate_limited(provider, knobs.faults.retry_after_s)
    if fault == "server_error":
        state.stats.record_fault(fault)
        return common.server_error(provider)
    if fault == "timeout":
        state.stats.record_fault(fault)
        if await state.hang(knobs.faults.hang_s):
            return common.service_stopping(provider)
    if knobs.latency_s > 0 and await state.hang(knobs.latency_s):
        return common.service_stopping(provider)
    content_fault: ContentFault | None = fault if fault in ("malformed", "out_of_range") else None
    try:
        result = answer(provider, body, knobs.answer, content_fault, render)
    except AnswerFunctionError as exc:
        return common.server_error(provider, str(exc))
    # Billed only once the answer is about to be delivered: a client that gave up during a hang
    # disconnects, which cancels this handler before we get here.
    if result.fault is not None:
        state.stats.record_fault(result.fault)
    else:
        state.stats.record_paid(key, result.tokens_in, result.tokens_out, via_batch=False)
    return common.json_response(provider, result.data)


def batch_line(state: ServerState, provider: Provider, line: BatchLine, knobs: Knobs, render: Render) -> Answered:
    """Answer a batch line, with content faults rolled like a sync attempt (not billed here)."""
    fault = knobs.faults.roll(line.key, state.next_attempt(line.key))
    content_fault: ContentFault | None = fault if fault in ("malformed", "out_of_range") else None
    return answer(provider, line.body, knobs.answer, content_fault, render, custom_id=line.custom_id)


def bill_batch_line(state: ServerState, line: BatchLine, result: Answered) -> None:
    if result.fault is not None:
        state.stats.record_fault(result.fault)
    else:
        state.stats.record_paid(line.key, result.tokens_in, result.tokens_out, via_batch=True)
