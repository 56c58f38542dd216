"""OpenAI wire protocol: chat completions, files and the Batch API."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import common, engine
from .answers import AnswerRequest, OutputSpec, Provider, Reply, request_key
from .common import APIFailure, bad_request, not_found
from .state import BatchLine, BatchRecord, ServerState, StoredFile, new_id

PROVIDER: Provider = "openai"
BATCH_ENDPOINT = "/v1/chat/completions"
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


def render_chat_completion(
    spec: OutputSpec, reply: Reply, req: AnswerRequest, tokens_in: int, tokens_out: int, via_batch: bool
) -> dict[str, Any]:
    return {
        "id": new_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.as_text(),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fakeapi",
    }


def validate_chat_body(body: dict[str, Any]) -> str | None:
    """An error message if ``body`` is not an acceptable chat completion request."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a non-empty array of objects"
    if body.get("stream"):
        return "streaming is not supported by the fake API"
    return None


@dataclass
class OpenAIBatch(BatchRecord):
    input_file_id: str = ""
    endpoint: str = BATCH_ENDPOINT
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    timestamps: dict[str, int | None] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    usage: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        ts = {
            name: self.timestamps.get(name)
            for name in (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        }
        model = self.lines[0].body.get("model") if self.lines else None
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": model,
            "errors": {"object": "list", "data": self.errors} if self.status == "failed" else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86_400,
            **ts,
            "request_counts": {"total": len(self.lines), "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
            "usage": self.usage,
        }


def parse_batch_input(data: bytes, endpoint: str) -> tuple[list[BatchLine], list[dict[str, Any]]]:
    """Batch input lines, and validation errors (``{code, line, message, param}``, 1-based lines)."""
    lines: list[BatchLine] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()

    def error(code: str, n: int, message: str) -> None:
        errors.append({"code": code, "line": n, "message": message, "param": None})

    for n, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError:
            error("invalid_json_line", n, "This line is not parseable as valid JSON.")
            continue
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            error("missing_required_parameter", n, "Each line needs a string 'custom_id'.")
        elif item["custom_id"] in seen:
            error("duplicate_custom_id", n, f"The custom_id {item['custom_id']!r} is duplicated.")
        elif item.get("method") != "POST" or item.get("url") != endpoint:
            error("invalid_url", n, f"Each line needs method 'POST' and url {endpoint!r}.")
        elif not isinstance(item.get("body"), dict) or (msg := validate_chat_body(item["body"])) is not None:
            error(
                "invalid_request",
                n,
                "Invalid 'body'." if not isinstance(item.get("body"), dict) else str(msg),
            )
        else:
            seen.add(item["custom_id"])
            lines.append(
                BatchLine(custom_id=item["custom_id"], body=item["body"], key=request_key(PROVIDER, item["body"]))
            )
    if not lines and not errors:
        errors.append({"code": "empty_file", "line": None, "message": "The input file is empty.", "param": None})
    return lines, errors


class OpenAIRoutes:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.batches: dict[str, OpenAIBatch] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/files", self.upload_file),
            web.get("/v1/files", self.list_files),
            web.get("/v1/files/{file_id}", self.retrieve_file),
            web.delete("/v1/files/{file_id}", self.delete_file),
            web.get("/v1/files/{file_id}/content", self.file_content),
            web.post("/v1/batches", self.create_batch),
            web.get("/v1/batches", self.list_batches),
            web.get("/v1/batches/{batch_id}", self.retrieve_batch),
            web.post("/v1/batches/{batch_id}/cancel", self.cancel_batch),
        ]

    # ----------------------------------------------------------------------------- chat completions
    async def chat_completions(self, request: web.Request) -> web.Response:
        body = await common.read_json_object(request, PROVIDER)
        if (problem := validate_chat_body(body)) is not None:
            raise bad_request(PROVIDER, problem)
        return await engine.sync_completion(self.state, PROVIDER, body, render_chat_completion)

    # ----------------------------------------------------------------------------------------- files
    def _file(self, request: web.Request) -> StoredFile:
        file_id = request.match_info["file_id"]
        with self.state.lock:
            found = self.state.files.get(file_id)
        if found is None:
            raise not_found(PROVIDER, f"No such File object: {file_id}")
        return found

    async def upload_file(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            raise bad_request(PROVIDER, "Missing multipart field 'file'.")
        if not isinstance(purpose, str) or purpose not in FILE_PURPOSES:
            raise bad_request(PROVIDER, f"Invalid 'purpose': {purpose!r}.")
        stored = self.state.add_file(upload.filename or "upload", purpose, upload.file.read())
        self.state.stats.record("files_uploaded")
        return common.json_response(PROVIDER, stored.to_json())

    async def list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        with self.state.lock:
            files = [f for f in self.state.files.values() if purpose is None or f.purpose == purpose]
        files.sort(key=lambda f: f.seq, reverse=request.query.get("order", "desc") != "asc")
        limit = common.query_int(request, PROVIDER, "limit", 10_000, 10_000)
        page, has_more = common.page_after(files, lambda f: f.id, request.query.get("after"), limit)
        return common.json_response(PROVIDER, self._list([f.to_json() for f in page], has_more))

    async def retrieve_file(self, request: web.Request) -> web.Response:
        return common.json_response(PROVIDER, self._file(request).to_json())

    async def file_content(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._file(request).data,
            content_type="application/octet-stream",
            headers={"x-request-id": common.request_id()},
        )

    async def delete_file(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        with self.state.lock:
            self.state.files.pop(stored.id, None)
        return common.json_response(PROVIDER, {"id": stored.id, "object": "file", "deleted": True})

    @staticmethod
    def _list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

    # --------------------------------------------------------------------------------------- batches
    async def create_batch(self, request: web.Request) -> web.Response:
        body = await common.read_json_object(request, PROVIDER)
        if body.get("endpoint") != BATCH_ENDPOINT:
            raise bad_request(PROVIDER, f"The fake API only batches {BATCH_ENDPOINT!r}.")
        if body.get("completion_window") != "24h":
            raise bad_request(PROVIDER, "completion_window must be '24h'.")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and len(metadata) <= 16
            and all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items()
            )
        ):
            raise bad_request(PROVIDER, "metadata must be at most 16 string pairs (keys <= 64, values <= 512).")
        with self.state.lock:
            source = self.state.files.get(str(body.get("input_file_id")))
        if source is None:
            raise not_found(PROVIDER, f"No such File object: {body.get('input_file_id')}")
        if source.purpose != "batch":
            raise bad_request(PROVIDER, "The input file must be uploaded with purpose 'batch'.")
        if self.state.knobs().quota_exhausted:
            self.state.stats.record_fault("insufficient_quota")
            return common.quota_exhausted(PROVIDER)
        lines, errors = parse_batch_input(source.data, BATCH_ENDPOINT)
        outcome = "fail" if errors else self.state.take_batch_outcome()
        if outcome == "fail" and not errors:
            errors = [
                {
                    "code": "fake_failure",
                    "line": None,
                    "param": None,
                    "message": "Batch failed (injected by fail_next_batches).",
                }
            ]
            self.state.stats.record_fault("batch_failed")
        batch = OpenAIBatch(
            id=new_id("batch_", 24),
            seq=self.state.next_seq(),
            created_at=int(time.time()),
            lines=lines,
            outcome=outcome,
            polls_needed=self.state.knobs().batch_polls_to_complete,
            input_file_id=source.id,
            metadata=metadata,
            errors=errors,
        )
        with self.state.lock:
            self.batches[batch.id] = batch
        self.state.stats.record("batches_created")
        return common.json_response(PROVIDER, batch.to_json())

    def _batch(self, request: web.Request) -> OpenAIBatch:
        batch_id = request.match_info["batch_id"]
        with self.state.lock:
            found = self.batches.get(batch_id)
        if found is None:
            raise not_found(PROVIDER, f"No batch found with id '{batch_id}'.")
        return found

    async def retrieve_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        with self.state.lock:
            self._advance(batch)
            return common.json_response(PROVIDER, batch.to_json())

    async def list_batches(self, request: web.Request) -> web.Response:
        with self.state.lock:
            batches = sorted(self.batches.values(), key=lambda b: b.seq, reverse=True)
            limit = common.query_int(request, PROVIDER, "limit", 20, 100)
            page, has_more = common.page_after(batches, lambda b: b.id, request.query.get("after"), limit)
            return common.json_response(PROVIDER, self._list([b.to_json() for b in page], has_more))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        with self.state.lock:
            if batch.status in TERMINAL:
                raise APIFailure(
                    common.error_response(
                        PROVIDER,
                        400,
                        f"Cannot cancel a batch with status '{batch.status}'.",
                        type_="invalid_request_error",
                    )
                )
            batch.cancel_requested = True
            batch.status = "cancelling"
            batch.timestamps.setdefault("cancelling_at", int(time.time()))
            return common.json_response(PROVIDER, batch.to_json())

    def _advance(self, batch: OpenAIBatch) -> None:
        """One retrieve's worth of progress: validating -> in_progress -> completed/expired/failed."""
        if batch.status in TERMINAL:
            return
        batch.polls += 1
        now = int(time.time())
        if batch.cancel_requested:
            batch.status = "cancelled"
            batch.timestamps["cancelled_at"] = now
        elif batch.outcome == "fail":
            batch.status = "failed"
            batch.timestamps["failed_at"] = now
        else:
            batch.timestamps.setdefault("in_progress_at", now)
            batch.status = "in_progress"
            if batch.polls >= batch.polls_needed:
                self._finish(batch, now)

    def _finish(self, batch: OpenAIBatch, now: int) -> None:
        """Answer (and bill) the lines, write output/error files and close the batch."""
        knobs = self.state.knobs()
        answered = len(batch.lines) // 2 if batch.outcome == "expire" else len(batch.lines)
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        tokens_in = tokens_out = 0
        for i, line in enumerate(batch.lines):
            row: dict[str, Any] = {
                "id": new_id("batch_req_", 32),
                "custom_id": line.custom_id,
                "response": None,
                "error": None,
            }
            if i >= answered:
                err.append({**row, "error": EXPIRED_ERROR})
                continue
            message = "The server had an error while processing your request."
            if not self.state.line_errors(batch.id, line.custom_id, knobs.batch_request_error_rate, knobs.faults.seed):
                try:
                    result = engine.batch_line(self.state, PROVIDER, line, knobs, render_chat_completion)
                except engine.AnswerFunctionError as exc:
                    message = str(exc)
                else:
                    engine.bill_batch_line(self.state, line, result)
                    tokens_in, tokens_out = tokens_in + result.tokens_in, tokens_out + result.tokens_out
                    out.append(
                        {
                            **row,
                            "response": {
                                "status_code": 200,
                                "request_id": common.request_id(),
                                "body": result.data,
                            },
                        }
                    )
                    continue
            self.state.stats.record_fault("batch_request_error")
            err.append(
                {
                    **row,
                    "response": {
                        "status_code": 500,
                        "request_id": common.request_id(),
                        "body": {"error": {"message": message, "type": "server_error", "param": None, "code": None}},
                    },
                }
            )
        if answered < len(batch.lines):
            self.state.stats.record_fault("batch_expired")
        if out:
            batch.output_file_id = self.state.add_file(f"{batch.id}_output.jsonl", "batch_output", common.jsonl(out)).id
        if err:
            batch.error_file_id = self.state.add_file(f"{batch.id}_error.jsonl", "batch_output", common.jsonl(err)).id
        batch.completed, batch.failed = len(out), len(err)
        batch.usage = {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        }
        batch.timestamps["finalizing_at"] = now
        batch.status = "expired" if batch.outcome == "expire" else "completed"
        batch.timestamps["expired_at" if batch.outcome == "expire" else "completed_at"] = now
