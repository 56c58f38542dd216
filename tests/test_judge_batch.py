"""Batch-mode scoring against the fake server: chunks, expiry, per-request errors, resubmission, the sync
fallback, budget, and crash safety (a real subprocess SIGKILLed at precise steps, then a rerun)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import BudgetExceeded, JudgeError
from pipeline.files import read_jsonl
from pipeline.judges.base import BatchLimits
from pipeline.judges.openai_provider import OpenAIBatchAPI
from pipeline.score import run_score
from pipeline.store import open_store
from pipeline.workspace import Workspace
from tests.fakeapi import FakeAPIServer, Faults
from tests.test_judge_support import job, make_workspace, run_score_process, scores


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPIServer]:
    with FakeAPIServer(batch_polls_to_complete=2) as srv:
        for name, value in srv.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STEERTUI_TEST_BACKOFF_S", "0.001")
        yield srv


def batch_ws(root: Path, provider: str = "openai", prompts: int = 4, **judge: object) -> Workspace:
    return make_workspace(root, prompts=prompts, judge={"mode": "batch", "judge": f"{provider}:judge-model", **judge})


def assert_scored_once(ws: Workspace, task: str, n: int, server: FakeAPIServer) -> None:
    rows = scores(ws, task)
    ids = [str(r.get("pair_id", r.get("generation_id"))) for r in rows]
    assert len(rows) == n == len(set(ids))
    assert all(r["valid"] is True or r["reason"] for r in rows)
    assert not server.stats.duplicates()


def batch_rows(ws: Workspace) -> list[dict[str, object]]:
    with open_store(ws.db_path) as store:
        return [dict(r) for r in store.query("SELECT * FROM batches ORDER BY id")]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_round_trip(server: FakeAPIServer, tmp_path: Path, provider: str) -> None:
    ws = batch_ws(tmp_path / "ws", provider)
    result = run_score(job(ws, "pairwise"))
    assert result.written == 40 and result.failed == 0
    assert_scored_once(ws, "pairwise", 40, server)
    stats = server.stats
    assert (stats.batches_created, stats.paid_batch, stats.paid_sync) == (1, 40, 0)
    assert stats.files_uploaded == (1 if provider == "openai" else 0)
    rows = scores(ws, "pairwise")
    tokens_in = sum(r["token_usage"]["prompt_tokens"] for r in rows)  # type: ignore[index]
    tokens_out = sum(r["token_usage"]["completion_tokens"] for r in rows)  # type: ignore[index]
    assert tokens_in == stats.tokens_in and tokens_out == stats.tokens_out
    (record,) = batch_rows(ws)
    assert record["state"] == "downloaded" and record["remote_id"] and record["n_requests"] == 40
    assert run_score(job(ws, "pairwise")).already == 40 and server.stats.batches_created == 1


def test_priced_batch_costs_half(server: FakeAPIServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=2, judge={"mode": "batch", "judge": "openai:gpt-4o"})
    result = run_score(job(ws, "coherence"))
    stats = server.stats
    assert result.spent_usd == pytest.approx((stats.tokens_in * 2.5 + stats.tokens_out * 10.0) / 1e6 * 0.5)
    row = scores(ws, "coherence")[0]
    usage, cost = row["token_usage"], row["cost"]
    assert cost["prompt_cost"] == pytest.approx(usage["prompt_tokens"] * 2.5e-6 * 0.5, abs=1e-6)  # type: ignore[index]


def test_chunks_stay_under_provider_limits(
    server: FakeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OpenAIBatchAPI, "limits", BatchLimits(max_requests=7, max_bytes=10**9))
    ws = batch_ws(tmp_path / "ws")
    run_score(job(ws, "coherence"))
    assert_scored_once(ws, "coherence", 20, server)
    assert server.stats.batches_created == 3 == server.stats.files_uploaded
    assert [r["n_requests"] for r in batch_rows(ws)] == [7, 7, 6]


def test_expired_and_errored_requests_are_resubmitted_once(server: FakeAPIServer, tmp_path: Path) -> None:
    server.configure(expire_next_batches=1)
    ws = batch_ws(tmp_path / "ws")
    run_score(job(ws, "coherence"))
    assert_scored_once(ws, "coherence", 20, server)
    assert server.stats.batches_created == 2 and server.stats.paid_sync == 0
    assert [r["n_requests"] for r in batch_rows(ws)] == [20, 10]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_twice_failed_batches_fall_back_to_sync(server: FakeAPIServer, tmp_path: Path, provider: str) -> None:
    server.configure(fail_next_batches=2)
    ws = batch_ws(tmp_path / "ws", provider)
    run_score(job(ws, "coherence"))
    assert_scored_once(ws, "coherence", 20, server)
    assert server.stats.batches_created == 2 and server.stats.paid_sync == 20


def test_without_fallback_stragglers_fail_then_a_rerun_finishes(server: FakeAPIServer, tmp_path: Path) -> None:
    server.configure(fail_next_batches=2)
    ws = batch_ws(tmp_path / "ws", batch_fallback_sync=False)
    with pytest.raises(JudgeError, match="20 requests got no answer"):
        run_score(job(ws, "coherence"))
    assert not scores(ws, "coherence")
    run_score(job(ws, "coherence", **{"judge.batch_fallback_sync": True}))
    assert_scored_once(ws, "coherence", 20, server)
    assert server.stats.paid_sync == 20 and server.stats.batches_created == 2


def test_bad_answers_in_a_batch_are_reasked(server: FakeAPIServer, tmp_path: Path) -> None:
    server.faults = Faults(malformed=0.2, out_of_range=0.2, seed=3)
    server.batch_request_error_rate = 0.2
    ws = batch_ws(tmp_path / "ws", prompts=6)
    run_score(job(ws, "coherence"))
    assert_scored_once(ws, "coherence", 30, server)
    rows = scores(ws, "coherence")
    assert sum(server.stats.paid_by_key.values()) == sum(1 for r in rows if r["valid"])
    assert server.stats.faults_injected["batch_request_error"] > 0


def test_batch_budget_stops_before_crossing_then_continues(server: FakeAPIServer, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=4, judge={"mode": "batch", "judge": "openai:gpt-4o"})
    with pytest.raises(BudgetExceeded, match="more is needed"):
        run_score(job(ws, "coherence", **{"judge.budget_usd": 0.002}))
    first = len(scores(ws, "coherence"))
    assert 0 < first < 20 and server.stats.batches_created == 1
    run_score(job(ws, "coherence", **{"judge.budget_usd": 1.0}))
    assert_scored_once(ws, "coherence", 20, server)
    assert server.stats.paid_total == 20


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("point", ["after_upload", "after_create", "during_convert"])
def test_sigkill_at_each_step_then_rerun_pays_nothing_twice(
    server: FakeAPIServer, tmp_path: Path, provider: str, point: str
) -> None:
    ws = batch_ws(tmp_path / "ws", provider, prompts=4)
    proc = run_score_process(ws, "coherence", {**server.env(), "STEERTUI_TEST_CRASH_AT": point})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stats = server.stats
    uploads = 1 if provider == "openai" else 0
    expected = {"after_upload": (uploads, 0, 0), "after_create": (uploads, 1, 0), "during_convert": (uploads, 1, 20)}
    assert (stats.files_uploaded, stats.batches_created, stats.paid_batch) == expected[point]
    assert not scores(ws, "coherence")
    (record,) = batch_rows(ws)
    assert bool(record["remote_id"]) == (point == "during_convert")

    result = run_score(job(ws, "coherence"))
    assert result.failed == 0
    assert_scored_once(ws, "coherence", 20, server)
    stats = server.stats
    assert (stats.files_uploaded, stats.batches_created, stats.paid_total) == (uploads, 1, 20)
    (record,) = batch_rows(ws)
    assert record["state"] == "downloaded"


def test_a_sync_rerun_finishes_the_recorded_batch_instead_of_asking_again(
    server: FakeAPIServer, tmp_path: Path
) -> None:
    ws = batch_ws(tmp_path / "ws")
    proc = run_score_process(ws, "coherence", {**server.env(), "STEERTUI_TEST_CRASH_AT": "after_create"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_score(job(ws, "coherence", **{"judge.mode": "sync"}))
    assert_scored_once(ws, "coherence", 20, server)
    assert (server.stats.batches_created, server.stats.paid_batch, server.stats.paid_sync) == (1, 20, 0)


def test_identical_requests_of_two_cells_are_paid_once(server: FakeAPIServer, tmp_path: Path) -> None:
    """Two layers with identical replies (e.g. unsteered ones) share request keys: the second cell waits for
    the first cell's batch rather than asking again, then fills its rows from the ledger."""
    import shutil
    from dataclasses import replace

    ws = batch_ws(tmp_path / "ws")
    other = ws.generations_path("tiny-random", 3, 2)
    other.parent.mkdir(parents=True)
    shutil.copy(ws.generations_path("tiny-random", 1, 2), other)
    proc = run_score_process(ws, "coherence", {**server.env(), "STEERTUI_TEST_CRASH_AT": "after_create"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    layer3 = replace(job(ws, "coherence", **{"judge.mode": "sync"}), layer=3)
    with pytest.raises(JudgeError, match="another job's running batch"):
        run_score(layer3)
    assert server.stats.paid_total == 0
    run_score(job(ws, "coherence"))  # layer 1 collects its batch
    assert run_score(layer3).written == 20
    assert server.stats.paid_total == 20 and not server.stats.duplicates()
    assert len(read_jsonl(ws.scores_path("tiny-random", 3, 2, "coherence"))) == 20
