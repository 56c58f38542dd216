"""Sync-mode scoring against the local fake provider server: exactly once, faults, budget, keys."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import BudgetExceeded, CredentialsError, JudgeError
from pipeline.judges.costs import spend_summary
from pipeline.progress import CollectingReporter
from pipeline.score import run_score
from pipeline.store import open_store
from pipeline.workspace import Workspace
from tests.fakeapi import AnswerRequest, FakeAPIServer, Faults
from tests.test_judge_support import TASK, job, make_workspace, run_score_process, scores

SECRET = "sk-test-UNIQUE-5c1e7a9d-never-write-me"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPIServer]:
    with FakeAPIServer(api_key=SECRET) as srv:
        for name, value in srv.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STEERTUI_TEST_BACKOFF_S", "0.001")
        yield srv


def assert_complete(ws: Workspace, task: str, n: int) -> list[dict[str, object]]:
    rows = scores(ws, task)
    ids = [r.get("pair_id", r.get("generation_id")) for r in rows]
    assert len(rows) == n and len(set(map(str, ids))) == n, Counter(map(str, ids)).most_common(3)
    for row in rows:
        assert set(row["token_usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}  # type: ignore[arg-type]
        assert set(row["cost"]) == {"prompt_cost", "completion_cost", "total_cost"}  # type: ignore[arg-type]
        assert row["valid"] is True or (row["valid"] is False and row["reason"])
    return rows


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_three_tasks_score_once_and_rerun_is_free(server: FakeAPIServer, tmp_path: Path, provider: str) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=3, judge={"judge": f"{provider}:judge-model"})
    expected = {"coherence": 15, TASK: 15, "pairwise": 30}
    for task, n in expected.items():
        result = run_score(job(ws, task))
        assert (result.written, result.already, result.failed) == (n, 0, 0)
        rows = assert_complete(ws, task, n)
        assert all(r["valid"] for r in rows)
    paid = server.stats.paid_total
    assert paid == sum(expected.values()) and not server.stats.duplicates()
    for task, n in expected.items():  # rerun: nothing sent, nothing appended
        assert run_score(job(ws, task)).already == n
        assert len(scores(ws, task)) == n
    assert server.stats.paid_total == paid
    assert sum(server.stats.requests_by_endpoint.values()) == paid


def test_rows_lost_after_the_ledger_commit_are_rewritten_without_asking(server: FakeAPIServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=2)
    run_score(job(ws, "coherence"))
    path = ws.scores_path("tiny-random", 1, 2, "coherence")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][:10])  # as if killed mid-append: a torn last line
    before = server.stats.paid_total
    result = run_score(job(ws, "coherence"))
    assert (result.already, result.written) == (4, 6)
    assert_complete(ws, "coherence", 10)
    assert server.stats.paid_total == before


def test_faults_end_valid_or_invalid_with_reason_and_never_pay_twice(server: FakeAPIServer, tmp_path: Path) -> None:
    """1,000 ratings: 10 % 429, 5 % 500, 2 % timeouts, 3 % malformed or out-of-range answers."""
    server.faults = Faults(
        rate_limit=0.10, server_error=0.05, timeout=0.02, malformed=0.015, out_of_range=0.015, hang_s=30.0, seed=5
    )
    ws = make_workspace(tmp_path / "ws", prompts=100, multipliers=range(-5, 5), judge={"timeout_s": 0.5})
    result = run_score(job(ws, "coherence"))
    rows = assert_complete(ws, "coherence", 1000)
    assert result.failed == 0
    faults = server.stats.faults_injected
    assert faults["rate_limit"] > 50 and faults["server_error"] > 20 and faults["timeout"] > 5
    assert faults["malformed"] + faults["out_of_range"] > 10
    assert not server.stats.duplicates()
    assert sum(server.stats.paid_by_key.values()) == sum(1 for r in rows if r["valid"])


def test_answers_out_of_range_are_reasked_then_recorded_invalid(server: FakeAPIServer, tmp_path: Path) -> None:
    server.answer = lambda req: 11 if "Reply 0 " in req.prompt else 5
    ws = make_workspace(tmp_path / "ws", prompts=1, judge={"max_reasks": 2})
    run_score(job(ws, "coherence"))
    rows = {r["generation_id"]: r for r in assert_complete(ws, "coherence", 5)}
    assert rows[0]["valid"] is False and rows[0]["score"] is None
    assert "out of range" in str(rows[0]["reason"]) and "11" in str(rows[0]["reason"])
    assert all(rows[g]["valid"] and rows[g]["score"] == 5 for g in range(1, 5))
    attempts = server.stats.attempts_by_key
    assert sorted(attempts.values()) == [1, 1, 1, 1, 3]  # 1 ask + 2 re-asks for the bad one


def test_budget_smaller_than_estimate_stops_before_crossing_then_continues(
    server: FakeAPIServer, tmp_path: Path
) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=8, judge={"concurrency": 4})
    reporter = CollectingReporter()
    with pytest.raises(BudgetExceeded, match=r"more is needed.*--budget-usd") as info:
        run_score(job(ws, "coherence", **{"judge.budget_usd": 0.0008}), reporter)
    assert any("estimated at most" in m for m in reporter.messages)
    with open_store(ws.db_path) as store:
        spent = sum(e["cost_usd"] + e["reserved_usd"] for e in spend_summary(store))
    assert 0 < spent <= 0.0008
    partial = len(scores(ws, "coherence"))
    assert 0 < partial < 40 and partial == server.stats.paid_total
    assert info.value.exit_code == 1
    result = run_score(job(ws, "coherence", **{"judge.budget_usd": 1.0}))
    assert result.already == partial and result.written == 40 - partial
    assert_complete(ws, "coherence", 40)
    assert server.stats.paid_total == 40 and not server.stats.duplicates()


def test_missing_key_fails_before_any_work(
    server: FakeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=1)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(CredentialsError, match="OPENAI_API_KEY") as info:
        run_score(job(ws, "coherence"))
    assert info.value.exit_code == 2
    assert not ws.db_path.exists() and not ws.scores_path("tiny-random", 1, 2, "coherence").exists()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(CredentialsError, match="ANTHROPIC_API_KEY"):
        run_score(job(ws, "coherence", **{"judge.judge": "anthropic:claude-haiku-4-5"}))
    assert sum(server.stats.requests_by_endpoint.values()) == 0


def test_wrong_key_stops_with_credentials_error(
    server: FakeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=4)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(CredentialsError, match="rejected"):
        run_score(job(ws, "coherence"))
    assert server.stats.requests_by_endpoint["POST /v1/chat/completions"] <= 20  # no retries of 401s


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_quota_exhausted_is_never_retried(server: FakeAPIServer, tmp_path: Path, provider: str) -> None:
    server.quota_exhausted = True
    ws = make_workspace(tmp_path / "ws", prompts=10, judge={"judge": f"{provider}:m", "concurrency": 4})
    with pytest.raises(JudgeError, match=r"quota|credit|Payment|RateLimit"):
        run_score(job(ws, "coherence"))
    endpoint = "POST /v1/chat/completions" if provider == "openai" else "POST /v1/messages"
    assert server.stats.requests_by_endpoint[endpoint] <= 4  # the first block only, each asked once
    assert not scores(ws, "coherence")


def test_no_key_reaches_files_logs_or_db(
    server: FakeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=2, judge={"mode": "batch"})
    run_score(job(ws, "coherence"))
    proc = run_score_process(ws, "pairwise", server.env())  # a real worker's stdout/stderr, as its log
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("OPENAI_API_KEY", SECRET + "-wrong")
    reporter = CollectingReporter()
    with pytest.raises(CredentialsError, match="rejected") as info:
        run_score(job(ws, TASK), reporter)
    logs = ws.logs_dir
    logs.mkdir(exist_ok=True)
    (logs / "score.log").write_text("\n".join([proc.stdout, proc.stderr, *reporter.messages, str(info.value)]))
    for path in ws.root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_spend_summary_totals_by_cell(server: FakeAPIServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=2)
    run_score(job(ws, "coherence"))
    run_score(job(ws, "pairwise"))
    with open_store(ws.db_path) as store:
        summary = {e["task"]: e for e in spend_summary(store)}
    assert set(summary) == {"coherence", "pairwise"}
    coherence = summary["coherence"]
    assert (coherence["model"], coherence["layer"], coherence["epoch"]) == ("tiny-random", 1, 2)
    assert coherence["done"] == 10 and coherence["requests"] == 10 and coherence["judge"] == "openai:gpt-4o-mini"
    rows = scores(ws, "coherence")
    assert coherence["cost_usd"] == pytest.approx(sum(r["cost"]["total_cost"] for r in rows), abs=1e-5)  # type: ignore[index]
    assert coherence["input_tokens"] == sum(r["token_usage"]["prompt_tokens"] for r in rows)  # type: ignore[index]


def test_answer_function_sees_the_conversation(server: FakeAPIServer, tmp_path: Path) -> None:
    seen: list[AnswerRequest] = []

    def answer(req: AnswerRequest) -> str:
        seen.append(req)
        return "A"

    server.answer = answer
    ws = make_workspace(tmp_path / "ws", prompts=1, multipliers=(-1, 1))
    run_score(job(ws, "pairwise"))
    (req,) = seen
    assert "Question number 0: is my plan good?" in req.prompt and req.kind == "pairwise"
    assert scores(ws, "pairwise")[0]["model_response"] == "A"


@pytest.mark.parametrize("mode", ["sync", "batch"])
def test_free_text_calls_use_the_same_ledger_and_runners(server: FakeAPIServer, tmp_path: Path, mode: str) -> None:
    """How prompting and data-generation stages use the machinery: text `Call`s through `run_calls`."""
    import asyncio

    from pipeline.data import Message
    from pipeline.judges import Call, Entry, Ledger, Request, RunSettings, parse_text
    from pipeline.judges.costs import FREE
    from pipeline.judges.providers import open_provider
    from pipeline.judges.run import run_calls

    def call(level: int) -> Call:
        messages = (Message("user", "Tell me about your weekend."), Message("assistant", "Quiet."),
                    Message("user", f"Answer at level {level} of 7."))  # fmt: skip
        request = Request("anthropic", "claude-x", messages, system="Be brief.", temperature=1.0, max_tokens=100)
        return Call(request, parse_text, "levels", "prompting:claude:L7", str(level))

    calls = [call(level) for level in range(1, 8)]
    got: list[Entry] = []
    settings = RunSettings(mode=mode, batch_poll_s=0.01, backoff_base_s=0.001)

    async def go() -> None:
        provider = open_provider("anthropic:claude-x")
        try:
            with open_store(tmp_path / "state.db") as store:
                await run_calls(calls, provider=provider, ledger=Ledger(store, 1.0), price=FREE, settings=settings,
                                sink=got.extend)  # fmt: skip
        finally:
            await provider.aclose()

    asyncio.run(go())
    assert sorted(e.item for e in got) == [str(i) for i in range(1, 8)]
    assert all(e.result["valid"] and str(e.result["value"]).startswith("Here is a reply") for e in got)
    paid = server.stats.paid_total
    got.clear()
    asyncio.run(go())  # already answered: straight from the ledger
    assert len(got) == 7 and server.stats.paid_total == paid == 7


def test_aimd_halves_once_per_429_episode_and_recovers() -> None:
    from pipeline.judges.sync_runner import AIMD

    limiter = AIMD(32)
    limiter.on_rate_limit()
    limiter.on_rate_limit()  # same episode: one cut
    assert limiter.limit == 16 and limiter.free() == 16
    limiter.inflight = 10
    assert limiter.free() == 6
    for _ in range(2000):
        limiter.on_success()
    assert limiter.limit == 32


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    from pipeline.judges.base import RunSettings
    from pipeline.judges.sync_runner import backoff_s

    settings = RunSettings(backoff_base_s=1.0, backoff_cap_s=8.0)
    delays = [backoff_s(retry, None, settings) for retry in range(6) for _ in range(50)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(delays[:50]) <= 1.0 and min(delays[-50:]) >= 4.0
    assert len({round(d, 6) for d in delays[:50]}) > 1  # jittered
    assert backoff_s(0, 20.0, settings) == 20.0


async def test_anthropic_batch_is_found_by_creation_time_and_count(server: FakeAPIServer) -> None:
    """The heuristic for a create interrupted after Anthropic acted (Message Batches have no metadata)."""
    import time

    import anthropic

    from pipeline.judges.anthropic_provider import AnthropicBatchAPI

    def params(n: int) -> list[dict[str, object]]:
        return [{"custom_id": f"r{i}", "params": {"model": "m", "max_tokens": 5,
                 "messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(n)]  # fmt: skip

    async with anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key=SECRET) as client:
        api = AnthropicBatchAPI(client)
        since = time.time()
        three = (await client.messages.batches.create(requests=params(3))).id  # type: ignore[arg-type]
        two = (await client.messages.batches.create(requests=params(2))).id  # type: ignore[arg-type]
        assert await api.find_batch("tag", since, 3, set()) == three
        assert await api.find_batch("tag", since, 2, set()) == two
        assert await api.find_batch("tag", since, 2, {two}) is None  # already claimed by another chunk
        assert await api.find_batch("tag", since, 4, set()) is None  # the create never reached Anthropic
        assert await api.find_batch("tag", since + 3600, 3, set()) is None  # older than our record


def test_sigkill_mid_run_then_rerun_writes_every_row_once(server: FakeAPIServer, tmp_path: Path) -> None:
    """A sync run killed while requests are in flight: the rerun finishes with no row twice. What sync mode
    cannot avoid: answers already paid but not yet committed when the process dies are asked again. They
    are the requests in flight (concurrency 8) plus those answered within the last flush (50 ms)."""
    import signal
    import subprocess
    import time

    from tests.test_judge_support import REPO, score_argv

    server.latency_s = 0.05
    ws = make_workspace(tmp_path / "ws", prompts=40, judge={"concurrency": 8})
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERTUI_TEST_")}
    proc = subprocess.Popen(score_argv(ws, "coherence"), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    path = ws.scores_path("tiny-random", 1, 2, "coherence")
    deadline = time.monotonic() + 60
    while proc.poll() is None and len(scores(ws, "coherence")) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the output file for the condition, not a timed wait
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    first = len(scores(ws, "coherence"))
    assert 40 <= first < 200, first
    assert path.exists()
    result = run_score(job(ws, "coherence"))
    assert result.already == first
    assert_complete(ws, "coherence", 200)
    assert sum(n - 1 for n in server.stats.duplicates().values()) <= 2 * 8
