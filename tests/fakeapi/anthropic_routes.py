"""Anthropic wire protocol: Messages and the Message Batches API."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import common, engine
from .answers import AnswerRequest, OutputSpec, Provider, Reply, request_key
from .common import APIFailure, bad_request, not_found
from .state import BatchLine, BatchRecord, ServerState, new_id

PROVIDER: Provider = "anthropic"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
COUNT_NAMES = ("processing", "succeeded", "errored", "canceled", "expired")


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def render_message(
    spec: OutputSpec, reply: Reply, req: AnswerRequest, tokens_in: int, tokens_out: int, via_batch: bool
) -> dict[str, Any]:
    if spec.tool_name is not None:
        field_name = "score" if spec.kind == "rating" else "answer"
        tool_input = reply.obj if reply.obj is not None else {field_name: reply.text}
        content: list[dict[str, Any]] = [
            {"type": "tool_use", "id": new_id("toolu_01", 22), "name": spec.tool_name, "input": tool_input}
        ]
        stop_reason = "tool_use"
    else:
        content = [{"type": "text", "text": reply.as_text(), "citations": None}]
        stop_reason = "end_turn"
    return {
        "id": new_id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch" if via_batch else "standard",
        },
    }


def validate_params(params: dict[str, Any]) -> str | None:
    """An error message if ``params`` is not an acceptable Messages request."""
    if not isinstance(params.get("model"), str) or not params["model"]:
        return "model: Field required"
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "messages: must be a non-empty list of objects"
    if params.get("stream"):
        return "stream: streaming is not supported by the fake API"
    return None


@dataclass
class AnthropicBatch(BatchRecord):
    origin: str = ""  # scheme://host:port the batch was created through, for results_url
    created_ts: float = 0.0
    ended_ts: float | None = None
    cancel_ts: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    results: bytes = b""

    def to_json(self) -> dict[str, Any]:
        counts = self.counts or {**dict.fromkeys(COUNT_NAMES, 0), "processing": len(self.lines)}
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": counts,
            "created_at": iso(self.created_ts),
            "expires_at": iso(self.created_ts + 86_400),
            "ended_at": iso(self.ended_ts),
            "cancel_initiated_at": iso(self.cancel_ts),
            "archived_at": None,
            "results_url": f"{self.origin}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class AnthropicRoutes:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.batches: dict[str, AnthropicBatch] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.create_message),
            web.post("/v1/messages/batches", self.create_batch),
            web.get("/v1/messages/batches", self.list_batches),
            web.get("/v1/messages/batches/{batch_id}", self.retrieve_batch),
            web.delete("/v1/messages/batches/{batch_id}", self.delete_batch),
            web.post("/v1/messages/batches/{batch_id}/cancel", self.cancel_batch),
            web.get("/v1/messages/batches/{batch_id}/results", self.batch_results),
        ]

    async def create_message(self, request: web.Request) -> web.Response:
        body = await common.read_json_object(request, PROVIDER)
        if (problem := validate_params(body)) is not None:
            raise bad_request(PROVIDER, problem)
        return await engine.sync_completion(self.state, PROVIDER, body, render_message)

    # --------------------------------------------------------------------------------------- batches
    async def create_batch(self, request: web.Request) -> web.Response:
        body = await common.read_json_object(request, PROVIDER)
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise bad_request(PROVIDER, "requests: must be a non-empty list")
        lines: list[BatchLine] = []
        seen: set[str] = set()
        for i, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise bad_request(PROVIDER, f"requests.{i}.custom_id: must match {CUSTOM_ID.pattern}")
            if custom_id in seen:
                raise bad_request(PROVIDER, f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
            if not isinstance(params, dict):
                raise bad_request(PROVIDER, f"requests.{i}.params: Field required")
            if (problem := validate_params(params)) is not None:
                raise bad_request(PROVIDER, f"requests.{i}.params.{problem}")
            seen.add(custom_id)
            lines.append(BatchLine(custom_id=custom_id, body=params, key=request_key(PROVIDER, params)))
        if self.state.knobs().quota_exhausted:
            self.state.stats.record_fault("insufficient_quota")
            return common.quota_exhausted(PROVIDER)
        now = time.time()
        batch = AnthropicBatch(
            id=new_id("msgbatch_01", 22),
            seq=self.state.next_seq(),
            created_at=int(now),
            lines=lines,
            outcome=self.state.take_batch_outcome(),
            polls_needed=self.state.knobs().batch_polls_to_complete,
            status="in_progress",
            origin=str(request.url.origin()),
            created_ts=now,
        )
        with self.state.lock:
            self.batches[batch.id] = batch
        self.state.stats.record("batches_created")
        return common.json_response(PROVIDER, batch.to_json())

    def _batch(self, request: web.Request) -> AnthropicBatch:
        batch_id = request.match_info["batch_id"]
        with self.state.lock:
            found = self.batches.get(batch_id)
        if found is None:
            raise not_found(PROVIDER, f"No message batch with id '{batch_id}'.")
        return found

    async def retrieve_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        with self.state.lock:
            if batch.status != "ended":
                batch.polls += 1
                if batch.cancel_requested or batch.polls >= batch.polls_needed:
                    self._finish(batch)
            return common.json_response(PROVIDER, batch.to_json())

    async def list_batches(self, request: web.Request) -> web.Response:
        limit = common.query_int(request, PROVIDER, "limit", 20, 1000)
        with self.state.lock:
            batches = sorted(self.batches.values(), key=lambda b: b.seq, reverse=True)
            before = request.query.get("before_id")
            if before is not None:
                end = next((i for i, b in enumerate(batches) if b.id == before), 0)
                page, has_more = batches[max(0, end - limit) : end], end - limit > 0
            else:
                page, has_more = common.page_after(batches, lambda b: b.id, request.query.get("after_id"), limit)
            data = [b.to_json() for b in page]
        return common.json_response(
            PROVIDER,
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        with self.state.lock:
            if batch.status == "ended":
                raise bad_request(PROVIDER, f"Message batch {batch.id} has already ended.")
            batch.cancel_requested = True
            batch.status = "canceling"
            batch.cancel_ts = batch.cancel_ts or time.time()
            return common.json_response(PROVIDER, batch.to_json())

    async def delete_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        with self.state.lock:
            if batch.status != "ended":
                raise bad_request(PROVIDER, "Message batches must end before they can be deleted.")
            self.batches.pop(batch.id, None)
        return common.json_response(PROVIDER, {"id": batch.id, "type": "message_batch_deleted"})

    async def batch_results(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if batch.status != "ended":
            raise APIFailure(
                common.error_response(
                    PROVIDER,
                    400,
                    f"Message batch {batch.id} is still processing.",
                    type_="invalid_request_error",
                )
            )
        return web.Response(
            body=batch.results, content_type="application/binary", headers={"request-id": common.request_id()}
        )

    def _finish(self, batch: AnthropicBatch) -> None:
        """Answer (and bill) the lines and end the batch. Expired batches answer the first half."""
        knobs = self.state.knobs()
        answered = len(batch.lines) // 2 if batch.outcome == "expire" else len(batch.lines)
        counts = dict.fromkeys(COUNT_NAMES, 0)
        rows: list[dict[str, Any]] = []
        for i, line in enumerate(batch.lines):
            result: dict[str, Any]
            if batch.cancel_requested:
                result = {"type": "canceled"}
            elif i >= answered:
                result = {"type": "expired"}
            elif batch.outcome == "fail" or self.state.line_errors(
                batch.id, line.custom_id, knobs.batch_request_error_rate, knobs.faults.seed
            ):
                result = self._errored("Internal server error")
            else:
                try:
                    answer = engine.batch_line(self.state, PROVIDER, line, knobs, render_message)
                except engine.AnswerFunctionError as exc:
                    result = self._errored(str(exc))
                else:
                    engine.bill_batch_line(self.state, line, answer)
                    result = {"type": "succeeded", "message": answer.data}
            counts[result["type"]] += 1
            rows.append({"custom_id": line.custom_id, "result": result})
        if batch.outcome == "fail" and not batch.cancel_requested:
            self.state.stats.record_fault("batch_failed")  # every line errored, like a failed OpenAI batch
        elif counts["errored"]:
            self.state.stats.record_fault("batch_request_error", counts["errored"])
        if counts["expired"]:
            self.state.stats.record_fault("batch_expired")
        batch.results, batch.counts = common.jsonl(rows), counts
        batch.status, batch.ended_ts = "ended", time.time()

    @staticmethod
    def _errored(message: str) -> dict[str, Any]:
        return {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "api_error", "message": message},
                "request_id": common.request_id(),
            },
        }
