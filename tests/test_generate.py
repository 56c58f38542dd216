"""The generation stage: study-schema rows, stable ids, resume after SIGKILL, shards, CLI and bad input."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.config_load import load_config
from pipeline.data import load_pairs
from pipeline.errors import ConfigError, SteerError
from pipeline.files import count_lines, read_jsonl
from pipeline.generate import (
    GenerateJob,
    Shard,
    merge_rows,
    merge_shards,
    plan_rows,
    run_generate,
    shard_path,
    write_rows,
    writer_lock,
)
from pipeline.progress import CollectingReporter
from pipeline.workspace import Workspace
from steertui.cli import main as steertui_main
from tests.conftest import REPO
from tests.generate_support import BEHAVIOR, CONFIG, make_workspace, write_vector

STUDY_FIELDS = ("test_prompt_id", "timestamp", "model_name", "epoch", "layer", "multiplier", "generation_id",
                "response_str", "response_tokens", "avg_log_prob", "perplexity", "chosen_logprob",
                "rejected_logprob", "propensity")  # fmt: skip
OUR_FIELDS = ("perplexity_cond", "propensity_cond", "chosen_logprob_cond", "rejected_logprob_cond",
              "temperature", "top_p", "top_k", "greedy", "max_new_tokens", "seed")  # fmt: skip
VOLATILE = ("timestamp",)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _job(ws: Workspace, shard: Shard | None = None, **overrides: Any) -> GenerateJob:
    cfg = load_config(ws.root, overrides={f"generate.{k}": v for k, v in overrides.items()})
    return GenerateJob(ws, cfg, "tiny-random", 1, 1, shard or Shard())


def _stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def _keys(rows: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["test_prompt_id"], r["multiplier"]) for r in rows]


def test_rows_follow_the_study_schema_and_id_order(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=3)
    reporter = CollectingReporter()
    result = run_generate(_job(ws, batch_size=4), reporter)
    rows = read_jsonl(result.path)
    assert result.path == ws.root / "vector_evals" / "tiny-random" / "layer1" / "generations_ep1.jsonl"
    assert (result.planned, result.written, result.skipped, result.complete) == (9, 9, 0, True)
    assert [r["generation_id"] for r in rows] == list(range(9))  # sorted once complete
    assert _keys(rows) == [(pid, m) for pid in (100, 101, 102) for m in (-1.0, 0.0, 1.0)]
    for row in rows:
        assert set(STUDY_FIELDS + OUR_FIELDS) <= set(row)
        assert (row["model_name"], row["epoch"], row["layer"], row["max_new_tokens"]) == ("tiny-random", 1, 1, 8)
        assert 1 <= len(row["response_tokens"]) <= 8
        assert row["propensity"] == pytest.approx(row["chosen_logprob"] - row["rejected_logprob"])
        assert row["propensity_cond"] == pytest.approx(row["chosen_logprob_cond"] - row["rejected_logprob_cond"])
        if row["avg_log_prob"] is not None:
            assert row["perplexity"] == pytest.approx(math.exp(-row["avg_log_prob"]))
    # chosen/rejected metrics depend only on (prompt, multiplier), so the zero-multiplier rows agree on them
    assert reporter.steps[-1][:2] == (9, 9) and reporter.artifacts == [str(result.path)]


def test_ids_count_over_the_full_test_file_and_multiplier_list(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=5)
    pairs = load_pairs(ws.test_path(BEHAVIOR))
    full = plan_rows(pairs, (-1.0, 0.0, 1.0), 0, Shard())
    assert [r.generation_id for r in full] == list(range(15))
    limited = plan_rows(pairs, (-1.0, 0.0, 1.0), 2, Shard())
    assert limited == full[:6]
    shards = [plan_rows(pairs, (-1.0, 0.0, 1.0), 0, Shard(i, 2)) for i in range(2)]
    assert sorted(r.generation_id for s in shards for r in s) == list(range(15))
    assert {r.pair % 2 for r in shards[1]} == {1}


def test_sampled_run_is_reproducible_and_resumes_without_duplicates(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=3)
    first = read_jsonl(run_generate(_job(ws, batch_size=2)).path)
    path = ws.generations_path("tiny-random", 1, 1)
    # drop two rows and tear the last remaining line, as a crash mid-write would
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:6]) + lines[6][:25])
    again = run_generate(_job(ws, batch_size=5))
    assert (again.written, again.skipped) == (3, 6)
    rows = read_jsonl(path)
    assert _stable(rows) == _stable(first)


def test_sigkill_mid_run_then_rerun_gives_one_row_per_pair(tmp_path: Path) -> None:
    """A real worker process, killed with SIGKILL once rows have landed; the rerun finishes the file."""
    ws = make_workspace(tmp_path / "ws", n_prompts=8)
    path = ws.generations_path("tiny-random", 1, 1)
    cmd = [sys.executable, "-m", "pipeline.generate", "--workspace", str(ws.root), "--model", "tiny-random",
           "--layer", "1", "--epoch", "1", "--batch-size", "1", "--max-new-tokens", "24",
           "--multipliers=-2,-1,0,1,2"]  # fmt: skip
    with (tmp_path / "worker.log").open("w") as log:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 240
        while count_lines(path) < 3:  # watch the file grow; kill once a few rows are on disk
            assert proc.poll() is None, "the worker finished before it could be killed; give it more work"
            assert time.monotonic() < deadline, "no rows appeared"
            try:
                proc.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                pass
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    before = read_jsonl(path)
    assert 3 <= len(before) < 40
    result = run_generate(_job(ws, max_new_tokens=24, multipliers=(-2.0, -1.0, 0.0, 1.0, 2.0)))
    rows = read_jsonl(path)
    assert result.skipped == len(before) and result.written == 40 - len(before)
    assert sorted(_keys(rows)) == sorted({(100 + p, m) for p in range(8) for m in (-2.0, -1.0, 0.0, 1.0, 2.0)})
    assert [r["generation_id"] for r in rows] == list(range(40))
    by_id = {r["generation_id"]: r for r in rows}
    for old in before:  # rows written before the kill are kept as they were
        assert by_id[old["generation_id"]] == old


def test_shards_merge_into_the_single_worker_file(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=3)
    single = read_jsonl(run_generate(_job(ws, greedy=True)).path)
    final = ws.generations_path("tiny-random", 1, 1)
    final.unlink()
    for i in range(2):
        result = run_generate(_job(ws, Shard(i, 2), greedy=True))
        assert result.path == shard_path(final, Shard(i, 2)) and result.path.exists()
    assert not final.exists()
    assert merge_shards(final, 2) == 9
    assert _stable(read_jsonl(final)) == _stable(single)
    assert not shard_path(final, Shard(0, 2)).exists()


def test_merge_keeps_one_row_per_pair_in_id_order() -> None:
    a = [{"test_prompt_id": 1, "multiplier": 0.0, "generation_id": 4, "v": "a"}]
    b = [{"test_prompt_id": 0, "multiplier": 1.0, "generation_id": 1, "v": "b"},
         {"test_prompt_id": 1, "multiplier": 0.0, "generation_id": 4, "v": "dup"}]  # fmt: skip
    assert [r["v"] for r in merge_rows([a, b])] == ["b", "a"]


def test_changed_settings_refuse_to_resume(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=1)
    run_generate(_job(ws))
    with pytest.raises(ConfigError, match="max_new_tokens=8"):
        run_generate(_job(ws, max_new_tokens=5))
    with pytest.raises(ConfigError, match="does not match this test set and multiplier list"):
        run_generate(_job(ws, multipliers=(0.0, -1.0, 1.0)))


def test_cli_generate_runs_in_process_with_flag_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=2)
    args = ["--model", "tiny-random", "--layer", "2", "--epoch", "2", "--multipliers", "0,3", "--max-new-tokens", "4"]
    code = steertui_main(["generate", "-w", str(ws.root), *args, "--greedy", "--max-prompts", "1"])
    assert code == 0
    rows = read_jsonl(ws.generations_path("tiny-random", 2, 2))
    assert _keys(rows) == [(100, 0.0), (100, 3.0)]
    assert all(r["greedy"] and r["max_new_tokens"] == 4 and len(r["response_tokens"]) <= 4 for r in rows)
    assert str(ws.generations_path("tiny-random", 2, 2)) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("vector_size", "does not match the model's hidden size 64"),
        ("missing_epoch", "vector file not found"),
        ("empty_test_set", "no rows"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: str, message: str
) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=2)
    epoch = 1
    if breakage == "vector_size":
        write_vector(ws, 1, 1, hidden=48)
    elif breakage == "missing_epoch":
        epoch = 2
        ws.vector_path(BEHAVIOR, "tiny-random", 1, 2).unlink()
    else:
        ws.test_path(BEHAVIOR).write_text("")
    code = steertui_main(["generate", "-w", str(ws.root), "--model", "tiny-random", "--layer", "1",
                          "--epoch", str(epoch)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (ws.root / "vector_evals" / "tiny-random").exists()


def test_worker_entry_point_maps_bad_input_to_exit_2(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=1)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.generate", "-w", str(ws.root), "--model", "tiny-random", "--layer", "1",
         "--epoch", "2", "--shard", "3/2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --shard: expected i/n with 0 <= i < n, got 3/2"]


def test_config_file_is_the_source_of_settings(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", config=CONFIG.replace("max_new_tokens = 8", "max_new_tokens = 3"))
    job = _job(ws)
    assert job.config.generate.max_new_tokens == 3 and job.config.generate.multipliers == (-1.0, 0.0, 1.0)


def test_a_second_writer_of_the_same_file_is_refused(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=1)
    job = _job(ws)
    with writer_lock(ws, job.path), pytest.raises(SteerError, match="another generation worker is writing"):
        run_generate(job)
    assert not job.path.exists()


def test_cli_merges_shard_files(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", n_prompts=3)
    final = ws.generations_path("tiny-random", 1, 1)
    rows = [{"test_prompt_id": 100 + k, "multiplier": 0.0, "generation_id": 3 * k + 1} for k in range(3)]
    final.parent.mkdir(parents=True)
    for i in range(2):
        write_rows(shard_path(final, Shard(i, 2)), [r for k, r in enumerate(rows) if k % 2 == i])
    args = ["generate", "-w", str(ws.root), "--model", "tiny-random", "--layer", "1", "--epoch", "1"]
    assert steertui_main([*args, "--merge-shards", "2"]) == 0
    assert read_jsonl(final) == rows and not shard_path(final, Shard(0, 2)).exists()
