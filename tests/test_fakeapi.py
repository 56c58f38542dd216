"""Tests for the fake OpenAI/Anthropic server, driven through the official SDKs.

No sleeps: readiness is signalled by start() / a READY line, batches advance per retrieve, and
timeouts are provoked with short client timeouts against long server hangs that stop() cuts short.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pydantic
import pytest

from tests.fakeapi import AnswerRequest, FakeAPIServer, Faults, Stats, default_answer, output_spec, request_key

REPO = Path(__file__).resolve().parents[1]
RATING_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer"}},
    "required": ["score"],
    "additionalProperties": False,
}
PAIRWISE_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["A", "B"]}},
    "required": ["answer"],
}


def openai_rating(prompt: str, model: str = "gpt-judge") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": "Rate 1-10."}, {"role": "user", "content": prompt}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "rating", "schema": RATING_SCHEMA}},
    }


def anthropic_rating(prompt: str, model: str = "claude-judge") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "system": "Rate 1-10.",
        "messages": [{"role": "user", "content": prompt}],
        "tools": [{"name": "rate", "input_schema": RATING_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "rate"},
    }


def anthropic_pairwise(prompt: str) -> dict[str, Any]:
    return {
        "model": "claude-judge",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
        "tools": [{"name": "pick", "input_schema": PAIRWISE_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "pick"},
    }


def batch_jsonl(bodies: dict[str, dict[str, Any]]) -> bytes:
    lines = [
        {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
        for cid, body in bodies.items()
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def batch_requests(params: dict[str, dict[str, Any]]) -> Any:
    """Anthropic batch ``requests`` (typed Any: plain dicts don't satisfy the SDK's TypedDicts)."""
    return [{"custom_id": cid, "params": p} for cid, p in params.items()]


def http_json(url: str, payload: dict[str, Any] | None = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def assert_exactly_once(stats: Stats) -> None:
    assert stats.paid_by_key, "nothing was paid"
    assert max(stats.paid_by_key.values()) == 1, stats.duplicates()


@pytest.fixture
def server() -> Iterator[FakeAPIServer]:
    with FakeAPIServer() as srv:
        yield srv


@pytest.fixture
def oai(server: FakeAPIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture
def claude(server: FakeAPIServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.anthropic_base_url, api_key=server.api_key, max_retries=0, timeout=5) as c:
        yield c


# ------------------------------------------------------------------------------------- request analysis


def test_kind_inference_and_request_key() -> None:
    assert output_spec("openai", openai_rating("x")).kind == "rating"
    assert output_spec("anthropic", anthropic_rating("x")).kind == "rating"
    assert output_spec("anthropic", anthropic_pairwise("x")).kind == "pairwise"
    assert output_spec("openai", {"model": "m", "messages": []}).kind == "text"
    fmt = {"format": {"type": "json_schema", "schema": PAIRWISE_SCHEMA}}
    assert output_spec("anthropic", {**anthropic_pairwise("x"), "tools": [], "output_config": fmt}).kind == "pairwise"

    body = anthropic_rating("hello")
    blocks = {**body, "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}
    assert request_key("anthropic", body) == request_key("anthropic", blocks)  # text blocks == plain string
    assert request_key("anthropic", body) == request_key("anthropic", {**body, "max_tokens": 5, "temperature": 0})
    assert request_key("anthropic", body) != request_key("anthropic", anthropic_rating("hello!"))
    assert request_key("anthropic", body) != request_key("openai", body)
    assert request_key("openai", openai_rating("a", model="m1")) != request_key("openai", openai_rating("a", "m2"))


def test_default_answer_is_deterministic() -> None:
    req = AnswerRequest(provider="openai", model="m", prompt="Rate this essay", kind="rating")
    assert default_answer(req) == default_answer(req)
    assert 1 <= int(default_answer(req)) <= 10
    assert default_answer(AnswerRequest("openai", "m", "Which one?", "pairwise")) in ("A", "B")
    text = default_answer(AnswerRequest("openai", "m", "Tell me about the sea, please", "text"))
    assert text == "Here is a reply about Tell me about the sea, please."


# -------------------------------------------------------------------------------------- sync completions


def test_openai_sync_json_schema_rating(server: FakeAPIServer, oai: openai.OpenAI) -> None:
    body = openai_rating("Essay: the cat sat on the mat.")
    resp = oai.chat.completions.create(**body)
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    score = json.loads(choice.message.content or "")["score"]
    assert isinstance(score, int) and 1 <= score <= 10
    assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.id.startswith("chatcmpl-")
    assert server.stats.paid_by_key == {request_key("openai", body): 1}
    assert server.stats.tokens_in == resp.usage.prompt_tokens


async def test_async_openai_parse_with_pydantic(server: FakeAPIServer) -> None:
    class Rating(pydantic.BaseModel):
        score: int

    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0) as c:
        resp = await c.chat.completions.parse(
            model="gpt-judge", messages=[{"role": "user", "content": "Rate: hi"}], response_format=Rating
        )
    parsed = resp.choices[0].message.parsed
    assert parsed is not None and 1 <= parsed.score <= 10
    assert server.stats.paid_total == 1


def test_anthropic_forced_tool_returns_tool_use(server: FakeAPIServer, claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(**anthropic_rating("Essay: the dog barked."))
    assert msg.stop_reason == "tool_use"
    block = msg.content[0]
    assert block.type == "tool_use" and block.name == "rate"
    assert block.input["score"] in range(1, 11)
    pick = claude.messages.create(**anthropic_pairwise("A: foo\nB: bar"))
    assert pick.content[0].type == "tool_use" and pick.content[0].input["answer"] in ("A", "B")
    text = claude.messages.create(model="c", max_tokens=50, messages=[{"role": "user", "content": "Say hi"}])
    assert text.content[0].type == "text" and text.content[0].text.startswith("Here is a reply about")
    assert server.stats.paid_total == 3
    assert_exactly_once(server.stats)


async def test_async_anthropic_and_custom_answer(server: FakeAPIServer) -> None:
    seen: list[AnswerRequest] = []

    def answer(req: AnswerRequest) -> int:
        seen.append(req)
        return 9

    server.answer = answer
    async with anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key=server.api_key) as c:
        msgs = await asyncio.gather(*(c.messages.create(**anthropic_rating(f"essay {i}")) for i in range(5)))
    assert all(m.content[0].type == "tool_use" and m.content[0].input == {"score": 9} for m in msgs)
    assert {r.kind for r in seen} == {"rating"} and {r.schema_name for r in seen} == {"rate"}
    assert seen[0].provider == "anthropic" and seen[0].prompt.startswith("Rate 1-10.\n\nessay ")


def test_env_points_sdks_at_server(server: FakeAPIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    with openai.OpenAI() as o, anthropic.Anthropic() as a:
        o.chat.completions.create(**openai_rating("env"))
        a.messages.create(**anthropic_rating("env"))
    assert server.stats.paid_total == 2


# ------------------------------------------------------------------------------------------ auth, quota


def test_wrong_key_raises_authentication_error(server: FakeAPIServer) -> None:
    with openai.OpenAI(base_url=server.openai_base_url, api_key="nope", max_retries=0) as o:
        with pytest.raises(openai.AuthenticationError) as oerr:
            o.chat.completions.create(**openai_rating("x"))
    assert oerr.value.code == "invalid_api_key"
    with anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="nope", max_retries=0) as a:
        with pytest.raises(anthropic.AuthenticationError) as aerr:
            a.messages.create(**anthropic_rating("x"))
    assert aerr.value.type == "authentication_error"
    assert server.stats.paid_total == 0
    assert server.stats.requests_by_endpoint["POST /v1/messages"] == 1


def test_quota_exhausted_is_classifiable(server: FakeAPIServer) -> None:
    server.quota_exhausted = True
    with openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0) as o:
        with pytest.raises(openai.RateLimitError) as oerr:
            o.chat.completions.create(**openai_rating("x"))
    assert oerr.value.code == "insufficient_quota"
    # Anthropic: 402 billing_error, which the SDK never retries even with retries enabled.
    with anthropic.Anthropic(base_url=server.anthropic_base_url, api_key=server.api_key, max_retries=3) as a:
        with pytest.raises(anthropic.PaymentRequiredError) as aerr:
            a.messages.create(**anthropic_rating("x"))
    assert aerr.value.type == "billing_error"
    assert server.stats.requests_by_endpoint["POST /v1/messages"] == 1
    assert server.stats.paid_total == 0 and server.stats.faults_injected["insufficient_quota"] == 2


# ----------------------------------------------------------------------------------------------- faults


def test_rate_limit_without_sdk_retries(server: FakeAPIServer, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    server.faults = Faults(rate_limit=1.0, retry_after_s=0.01)
    with pytest.raises(openai.RateLimitError) as oerr:
        oai.chat.completions.create(**openai_rating("x"))
    assert oerr.value.response.headers["retry-after"] == "0.01"
    assert oerr.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(**anthropic_rating("x"))
    assert server.stats.faults_injected["rate_limit"] == 2 and server.stats.paid_total == 0


async def test_sdk_retries_through_faults_pay_exactly_once(server: FakeAPIServer) -> None:
    # 429s carry Retry-After (0.01 s) so the SDK's own retries are fast; 500s would back off ~0.5 s+.
    server.faults = Faults(rate_limit=0.5, seed=7)
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=20) as c:
        bodies = [openai_rating(f"essay number {i}") for i in range(20)]
        results = await asyncio.gather(*(c.chat.completions.create(**b) for b in bodies))
    assert all(1 <= json.loads(r.choices[0].message.content or "")["score"] <= 10 for r in results)
    stats = server.stats
    assert stats.paid_total == 20 and set(stats.paid_by_key) == {request_key("openai", b) for b in bodies}
    assert_exactly_once(stats)
    faults = stats.faults_injected["rate_limit"]
    assert faults > 0
    assert stats.requests_by_endpoint["POST /v1/chat/completions"] == 20 + faults
    assert sum(stats.attempts_by_key.values()) == 20 + faults


def test_fault_rolls_are_deterministic_per_key_and_attempt() -> None:
    faults = Faults(rate_limit=0.25, server_error=0.25, malformed=0.25, seed=3)
    rolls = [faults.roll("key", n) for n in range(40)]
    assert rolls == [faults.roll("key", n) for n in range(40)]
    assert {"rate_limit", "server_error", "malformed", None} <= set(rolls)
    with pytest.raises(ValueError):
        Faults(rate_limit=0.7, timeout=0.7)


def test_malformed_and_out_of_range_are_not_billed(
    server: FakeAPIServer, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    server.faults = Faults(malformed=1.0)
    content = oai.chat.completions.create(**openai_rating("x")).choices[0].message.content or ""
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    tool = claude.messages.create(**anthropic_rating("x")).content[0]
    assert tool.type == "tool_use" and not isinstance(tool.input["score"], int)
    server.faults = Faults(out_of_range=1.0)
    score = json.loads(oai.chat.completions.create(**openai_rating("y")).choices[0].message.content or "")
    assert score["score"] in (0, 11)
    pick = claude.messages.create(**anthropic_pairwise("y")).content[0]
    assert pick.type == "tool_use" and pick.input["answer"] in ("C", "Neither")
    stats = server.stats
    assert stats.paid_total == 0
    assert stats.faults_injected["malformed"] == 2 and stats.faults_injected["out_of_range"] == 2


def test_timeout_fault_client_gives_up_and_is_not_billed() -> None:
    server = FakeAPIServer(faults=Faults(timeout=1.0, hang_s=60)).start()
    try:
        with openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0) as o:
            with pytest.raises(openai.APITimeoutError):
                o.chat.completions.create(**openai_rating("slow"), timeout=0.3)
            server.faults = Faults()
            o.chat.completions.create(**openai_rating("slow"))  # the retry is answered and paid
    finally:
        server.stop()  # must not wait for the 60 s hang
    assert server.stats.faults_injected["timeout"] == 1
    assert server.stats.paid_by_key == {request_key("openai", openai_rating("slow")): 1}


def test_control_plane_timeout_still_creates_batch(server: FakeAPIServer, oai: openai.OpenAI) -> None:
    """The crash-safety case: the create times out client-side, yet the batch exists."""
    f = oai.files.create(file=("in.jsonl", batch_jsonl({"r1": openai_rating("a")})), purpose="batch")
    server.faults = Faults(timeout=1.0, hang_s=60, control_plane=True)
    with pytest.raises(openai.APITimeoutError):
        oai.batches.create(
            input_file_id=f.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "ctl"},
            timeout=0.3,
        )
    server.faults = Faults(rate_limit=1.0, control_plane=True)
    with pytest.raises(openai.RateLimitError):
        oai.batches.list()
    server.faults = Faults()
    found = [b for b in oai.batches.list() if (b.metadata or {}).get("run") == "ctl"]
    assert len(found) == 1 and server.stats.batches_created == 1


# ---------------------------------------------------------------------------------------- OpenAI batches


def poll_openai(client: openai.OpenAI, batch_id: str) -> tuple[Any, list[str]]:
    statuses: list[str] = []
    for _ in range(20):
        batch = client.batches.retrieve(batch_id)
        statuses.append(batch.status)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch, statuses
    raise AssertionError(f"batch never finished: {statuses}")


def test_openai_batch_round_trip(server: FakeAPIServer, oai: openai.OpenAI) -> None:
    server.batch_polls_to_complete = 3
    bodies = {f"item-{i}": openai_rating(f"essay {i}") for i in range(4)}
    upload = oai.files.create(file=("judge.jsonl", batch_jsonl(bodies)), purpose="batch")
    assert upload.purpose == "batch" and oai.files.retrieve(upload.id).bytes == upload.bytes
    created = oai.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"stage": "judge", "run_id": "r1"},
    )
    assert created.status == "validating" and server.stats.paid_total == 0
    batch, statuses = poll_openai(oai, created.id)
    assert statuses == ["in_progress", "in_progress", "completed"]
    assert batch.request_counts is not None and batch.request_counts.total == 4
    assert batch.request_counts.completed == 4 and batch.error_file_id is None
    assert batch.output_file_id is not None
    rows = [json.loads(line) for line in oai.files.content(batch.output_file_id).text.splitlines()]
    assert {r["custom_id"] for r in rows} == set(bodies)
    for row in rows:
        assert row["error"] is None and row["response"]["status_code"] == 200
        assert 1 <= json.loads(row["response"]["body"]["choices"][0]["message"]["content"])["score"] <= 10
    listed = [b.id for b in oai.batches.list() if (b.metadata or {}).get("run_id") == "r1"]
    assert listed == [created.id]
    stats = server.stats
    assert stats.paid_batch == 4 and stats.files_uploaded == 1 and stats.batches_created == 1
    assert set(stats.paid_by_key) == {request_key("openai", b) for b in bodies.values()}
    assert_exactly_once(stats)
    # Retrieving again does not bill again.
    poll_openai(oai, created.id)
    assert server.stats.paid_total == 4
    assert oai.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(upload.id)


def test_openai_batch_request_errors_go_to_error_file(server: FakeAPIServer, oai: openai.OpenAI) -> None:
    server.batch_request_error_rate = 1.0
    upload = oai.files.create(file=("in.jsonl", batch_jsonl({"a": openai_rating("a")})), purpose="batch")
    created = oai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch, _ = poll_openai(oai, created.id)
    assert batch.status == "completed" and batch.output_file_id is None and batch.error_file_id is not None
    (row,) = [json.loads(x) for x in oai.files.content(batch.error_file_id).text.splitlines()]
    assert row["custom_id"] == "a" and row["response"]["status_code"] == 500
    assert server.stats.paid_total == 0


def test_openai_expired_and_failed_batches(server: FakeAPIServer, oai: openai.OpenAI) -> None:
    bodies = {f"e{i}": openai_rating(f"expiring {i}") for i in range(4)}
    upload = oai.files.create(file=("in.jsonl", batch_jsonl(bodies)), purpose="batch")
    server.configure(expire_next_batches=1, fail_next_batches=1)

    def run() -> Any:
        created = oai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        return poll_openai(oai, created.id)[0]

    failed = run()  # fail_next_batches takes precedence
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data
    assert failed.output_file_id is None and server.stats.paid_total == 0

    expired = run()
    assert expired.status == "expired" and expired.expired_at is not None
    assert expired.request_counts is not None
    assert (expired.request_counts.completed, expired.request_counts.failed) == (2, 2)
    assert expired.output_file_id is not None and expired.error_file_id is not None
    done = [json.loads(x)["custom_id"] for x in oai.files.content(expired.output_file_id).text.splitlines()]
    errors = [json.loads(x) for x in oai.files.content(expired.error_file_id).text.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"} and all(e["response"] is None for e in errors)
    assert set(done) | {e["custom_id"] for e in errors} == set(bodies)
    assert server.stats.paid_batch == 2

    # Resubmitting only the expired ones completes them; nothing is paid twice.
    retry = {e["custom_id"]: bodies[e["custom_id"]] for e in errors}
    upload2 = oai.files.create(file=("retry.jsonl", batch_jsonl(retry)), purpose="batch")
    again = oai.batches.create(input_file_id=upload2.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert poll_openai(oai, again.id)[0].status == "completed"
    assert server.stats.paid_total == 4
    assert_exactly_once(server.stats)


def test_openai_batch_validation_cancel_and_pagination(server: FakeAPIServer, oai: openai.OpenAI) -> None:
    bad = oai.files.create(file=("bad.jsonl", b"not json\n"), purpose="batch")
    created = oai.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
    failed, _ = poll_openai(oai, created.id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "invalid_json_line"

    server.batch_polls_to_complete = 5
    good = oai.files.create(file=("ok.jsonl", batch_jsonl({"x": openai_rating("x")})), purpose="batch")
    ids = [
        oai.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(4)
    ]
    assert oai.batches.cancel(ids[0]).status == "cancelling"
    assert oai.batches.retrieve(ids[0]).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        oai.batches.cancel(ids[0])
    page = oai.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in oai.batches.list(limit=2)] == [*ids[::-1], created.id]  # auto-pagination
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_missing")
    assert server.stats.paid_total == 0


# ------------------------------------------------------------------------------------- Anthropic batches


def poll_anthropic(client: anthropic.Anthropic, batch_id: str) -> tuple[Any, list[str]]:
    statuses: list[str] = []
    for _ in range(20):
        batch = client.messages.batches.retrieve(batch_id)
        statuses.append(batch.processing_status)
        if batch.processing_status == "ended":
            return batch, statuses
    raise AssertionError(f"batch never ended: {statuses}")


def test_anthropic_batch_round_trip(server: FakeAPIServer, claude: anthropic.Anthropic) -> None:
    server.batch_polls_to_complete = 2
    params = {f"q{i}": anthropic_rating(f"essay {i}") for i in range(3)}
    params["p0"] = anthropic_pairwise("A: x\nB: y")
    created = claude.messages.batches.create(requests=batch_requests(params))
    assert created.processing_status == "in_progress" and created.results_url is None
    assert created.request_counts.processing == 4
    batch, statuses = poll_anthropic(claude, created.id)
    assert statuses == ["in_progress", "ended"]
    assert batch.request_counts.succeeded == 4 and batch.results_url.startswith(server.url)
    results = {r.custom_id: r.result for r in claude.messages.batches.results(created.id)}
    assert set(results) == set(params)
    for cid, result in results.items():
        assert result.type == "succeeded"
        block = result.message.content[0]
        assert block.type == "tool_use"
        assert block.input["answer"] in ("A", "B") if cid == "p0" else block.input["score"] in range(1, 11)
    assert [b.id for b in claude.messages.batches.list()] == [created.id]
    stats = server.stats
    assert stats.paid_batch == 4 and set(stats.paid_by_key) == {request_key("anthropic", p) for p in params.values()}
    assert_exactly_once(stats)
    assert claude.messages.batches.delete(created.id).type == "message_batch_deleted"


async def test_async_anthropic_batch_results(server: FakeAPIServer) -> None:
    async with anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key=server.api_key) as c:
        created = await c.messages.batches.create(requests=batch_requests({"a": anthropic_rating("a")}))
        assert (await c.messages.batches.retrieve(created.id)).processing_status == "ended"
        results = [r async for r in await c.messages.batches.results(created.id)]
    assert [r.result.type for r in results] == ["succeeded"]


def test_anthropic_expired_errored_and_canceled(server: FakeAPIServer, claude: anthropic.Anthropic) -> None:
    def create(n: int, prefix: str) -> str:
        reqs = {f"{prefix}{i}": anthropic_rating(f"{prefix} {i}") for i in range(n)}
        return claude.messages.batches.create(requests=batch_requests(reqs)).id

    server.expire_next_batches = 1
    expired_id = create(4, "e")
    batch, _ = poll_anthropic(claude, expired_id)
    assert (batch.request_counts.succeeded, batch.request_counts.expired) == (2, 2)
    types = sorted(r.result.type for r in claude.messages.batches.results(expired_id))
    assert types == ["expired", "expired", "succeeded", "succeeded"]

    server.configure(fail_next_batches=1)
    failed, _ = poll_anthropic(claude, create(2, "f"))
    assert failed.request_counts.errored == 2
    errored = [r.result for r in claude.messages.batches.results(failed.id)]
    assert all(r.type == "errored" and r.error.error.type == "api_error" for r in errored)

    server.batch_polls_to_complete = 10
    cancel_id = create(2, "c")
    assert claude.messages.batches.cancel(cancel_id).processing_status == "canceling"
    canceled, _ = poll_anthropic(claude, cancel_id)
    assert canceled.request_counts.canceled == 2 and canceled.cancel_initiated_at is not None
    ids = [create(1, f"page{i}x") for i in range(3)]
    assert [b.id for b in claude.messages.batches.list(limit=2)] == [*ids[::-1], cancel_id, failed.id, expired_id]
    assert server.stats.paid_total == 2 and server.stats.faults_injected["batch_expired"] == 1
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.batches.create(requests=batch_requests({"bad id!": anthropic_rating("x")}))


def test_sync_and_batch_of_same_request_count_twice(server: FakeAPIServer, claude: anthropic.Anthropic) -> None:
    """The double-billing a judge must avoid: the same request answered both sync and via batch."""
    body = anthropic_rating("dup")
    claude.messages.create(**body)
    batch = claude.messages.batches.create(requests=batch_requests({"d": body}))
    poll_anthropic(claude, batch.id)
    assert server.stats.paid_by_key == {request_key("anthropic", body): 2}
    assert server.stats.duplicates() == {request_key("anthropic", body): 2}


# --------------------------------------------------------------------------------- control endpoints, CLI


def test_stats_reset_and_config_endpoints(server: FakeAPIServer, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(**openai_rating("x"))
    data = http_json(f"{server.url}/_stats")
    assert data["paid_total"] == 1 and data["requests_by_endpoint"] == {"POST /v1/chat/completions": 1}
    assert Stats.from_dict(data).paid_by_key == server.stats.paid_by_key
    cfg = http_json(f"{server.url}/_config", {"faults": {"rate_limit": 1.0}, "latency_s": 0.0})
    assert cfg["faults"]["rate_limit"] == 1.0 and server.faults.rate_limit == 1.0
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(**openai_rating("y"))
    assert http_json(f"{server.url}/_reset", {}) == {"ok": True}
    assert server.stats.paid_total == 0 and not server.stats.requests_by_endpoint


def test_cli_subprocess_server() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "--port", "0", "--latency-ms", "1", "--batch-polls", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("FAKEAPI_READY "), line + (proc.stderr.read() if proc.stderr else "")
        info = json.loads(line.split(" ", 1)[1])
        with openai.OpenAI(base_url=info["openai_base_url"], api_key=info["api_key"], max_retries=0) as o:
            o.chat.completions.create(**openai_rating("subprocess"))
        base = info["anthropic_base_url"]
        assert http_json(f"{base}/_config")["batch_polls_to_complete"] == 2
        assert http_json(f"{base}/_stats")["paid_total"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
