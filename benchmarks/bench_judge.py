"""Judging throughput: the study's sequential loop vs steertui's sync mode, same local server, same run.

    .venv/bin/python -m benchmarks.bench_judge [--latency-ms 50] [--items 1000] [--baseline-items 100]

The fake provider server (`python -m tests.fakeapi`) runs in its own process and answers every chat
completion after a fixed latency. The baseline is the study's `eval_rating.py` loop: one blocking SDK
call at a time. Ours is `run_score` (ledger, budget, rows and all) rating `--items` generations. Also
timed: building the 25,725-request pairwise batch file of one vector-epoch (245 prompts x 105 pairs).
Writes `benchmarks/results/judge.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.results_file import machine, write_report

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "judge.json"


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "--port", "0", "--latency-ms", str(latency_ms)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("FAKEAPI_READY "):
        proc.kill()
        raise SystemExit(f"fake server did not start: {line!r}")
    return proc, json.loads(line.split(" ", 1)[1])


def baseline(info: dict[str, Any], prompts: list[str]) -> float:
    """The study's loop: a blocking client, one request after another; returns items/s."""
    import openai

    from pipeline.judges.prompts import RATING_OUTPUT

    schema = {"name": "score", "strict": True, "schema": dict(RATING_OUTPUT.schema or {})}
    client = openai.OpenAI(base_url=info["openai_base_url"], api_key=info["api_key"], max_retries=3)
    start = time.perf_counter()
    for text in prompts:
        resp = client.chat.completions.create(
            model="gpt-4o-2024-08-06", messages=[{"role": "user", "content": text}], temperature=0,
            max_completion_tokens=20, response_format={"type": "json_schema", "json_schema": schema},
        )  # fmt: skip
        json.loads(resp.choices[0].message.content or "")
    elapsed = time.perf_counter() - start
    client.close()
    return len(prompts) / elapsed


def import_sdks_s() -> float:
    """Import the SDKs before timing, as the baseline builds its client before its clock starts."""
    start = time.perf_counter()
    import anthropic  # noqa: F401
    import openai  # noqa: F401
    import sqlite_utils  # noqa: F401

    return time.perf_counter() - start


def ours(info: dict[str, Any], root: Path, n_items: int, judge: str) -> tuple[float, Any]:
    """`run_score` over `n_items` coherence ratings (store opened, SDKs imported); returns (items/s, ScoreResult)."""
    from pipeline.score import run_score
    from pipeline.store import open_store
    from tests.test_judge_support import job, make_workspace

    ws = make_workspace(
        root, prompts=n_items // 10, multipliers=range(-5, 5), judge={"judge": judge, "timeout_s": 30.0}
    )
    env = {"OPENAI_BASE_URL": info["openai_base_url"], "ANTHROPIC_BASE_URL": info["anthropic_base_url"],
           "OPENAI_API_KEY": info["api_key"], "ANTHROPIC_API_KEY": info["api_key"]}  # fmt: skip
    os.environ.update(env)
    score_job = job(ws, "coherence")
    open_store(ws.db_path).close()  # an existing workspace's store is already migrated
    start = time.perf_counter()
    result = run_score(score_job)
    elapsed = time.perf_counter() - start
    assert result.written == n_items and result.failed == 0, result
    return n_items / elapsed, result


def study_inputs(n_prompts: int) -> tuple[Any, list[dict[str, Any]], dict[int, Any]]:
    """The demo rubric, generations at the study's 21 multipliers, and the test prompts."""
    from pipeline.data import DPOPair, Message
    from pipeline.rubric import load_rubric
    from tests.test_judge_support import RUBRIC, STUDY_MULTIPLIERS

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rubric.toml"
        path.write_text(RUBRIC)
        rubric = load_rubric(path)
    rows: list[dict[str, Any]] = []
    for pid in range(n_prompts):
        for m in STUDY_MULTIPLIERS:
            text = f"Steered reply number {len(rows)} at multiplier {m}, a few sentences long. " * 4
            rows.append(
                {"generation_id": len(rows), "test_prompt_id": pid, "multiplier": float(m), "response_str": text}
            )
    convo = (Message("user", "I plan to quit my job to sell hot sauce. Good idea?"), Message("assistant", "Maybe."),
             Message("user", "Be honest with me."))  # fmt: skip
    prompts = {pid: DPOPair(pid, convo, "c", "r") for pid in range(n_prompts)}
    return rubric, rows, prompts


def baseline_prompts(n: int) -> list[str]:
    """The same rating prompts steertui sends, for a like-for-like baseline."""
    from pipeline.config import JudgeConfig
    from pipeline.judges.items import build_items

    rubric, rows, prompts = study_inputs(n // 21 + 1)
    items = build_items("coherence", rubric=rubric, generations=rows, prompts=prompts, judge=JudgeConfig(), cell="b")
    return [i.call.request.messages[0].content for i in items[:n]]


def batch_build_s() -> dict[str, float]:
    """Seconds to build the 25,725 pairwise requests and encode each provider's batch file."""
    from pipeline.config import JudgeConfig
    from pipeline.judges.anthropic_provider import AnthropicBatchAPI
    from pipeline.judges.batch_runner import chunk_calls
    from pipeline.judges.items import build_items
    from pipeline.judges.openai_provider import OpenAIBatchAPI

    out: dict[str, float] = {}
    rubric, rows, prompts = study_inputs(245)
    for name, api in (("openai", OpenAIBatchAPI(None)), ("anthropic", AnthropicBatchAPI(None))):
        judge = JudgeConfig(judge=f"{name}:judge")
        start = time.perf_counter()
        items = build_items("pairwise", rubric=rubric, generations=rows, prompts=prompts, judge=judge, cell="bench")
        chunks = chunk_calls([i.call for i in items], lambda c, a=api: a.encode_line(c.key, c.request),
                             api.limits.max_requests, api.limits.max_bytes)  # fmt: skip
        out[name] = round(time.perf_counter() - start, 3)
        assert sum(len(c) for c in chunks) == 25_725
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--baseline-items", type=int, default=100)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    sdk_import_s = import_sdks_s()
    proc, info = start_server(args.latency_ms)
    try:
        base = baseline(info, baseline_prompts(args.baseline_items))
        with tempfile.TemporaryDirectory() as tmp:
            ours_openai, result = ours(info, Path(tmp) / "openai", args.items, "openai:gpt-4o-2024-08-06")
            ours_anthropic, _ = ours(info, Path(tmp) / "anthropic", args.items, "anthropic:claude-haiku-4-5")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report = {
        "latency_ms": args.latency_ms,
        "baseline_items": args.baseline_items,
        "baseline_items_per_s": round(base, 1),
        "ours_items": args.items,
        "ours_items_per_s": round(ours_openai, 1),
        "ours_items_per_s_anthropic": round(ours_anthropic, 1),
        "speedup": round(ours_openai / base, 1),
        "ours_judge": "openai:gpt-4o-2024-08-06 (sync, concurrency 32)",
        "sdk_import_s_not_timed": round(sdk_import_s, 2),
        "ours_cost_usd_booked": round(result.spent_usd, 4),
        "pairwise_batch_requests": 25_725,
        "pairwise_batch_build_s": batch_build_s(),
        "machine": machine(load_before),
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
