"""Prompting exp1 (steerability) against the local fake provider server, the config section, the plan's
prompting cells and the CLI."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.progress import CollectingReporter
from pipeline.prompting_exp1 import generate_cell, run_generate, run_rank, run_rate
from pipeline.prompting_spec import (
    generations_path,
    level_multipliers,
    level_of,
    parse_provider,
    parse_vector,
    ranking_path,
    ratings_path,
)
from steertui.plan import STAGES, build_plan
from tests.conftest import run_cli
from tests.fakeapi import FakeAPIServer
from tests.test_prompting_support import CLAUDE, VECTOR, Recorder, config, configure, ledger_cost, rows
from tests.test_prompting_support import write_vector_generations as vector_generations


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> Iterator[FakeAPIServer]:
    with FakeAPIServer(answer=recorder) as srv:
        for name, value in srv.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STEERTUI_TEST_BACKOFF_S", "0.001")
        yield srv


def test_levels_providers_and_vectors_parse_as_the_study_names_them() -> None:
    assert level_multipliers(7) == (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
    assert level_multipliers(9) == tuple(x / 2 for x in range(-4, 5))
    assert level_of(-1.5, 7) == 1 and level_of(0.0, 7) == 4 and level_of(2.0, 7) is None and level_of(-2.0, 9) == 1
    assert parse_provider(CLAUDE).label == "claude" and parse_provider("openai:gpt-4o").label == "gpt"
    assert parse_provider("g4=openai:gpt-4o").entry == "g4=openai:gpt-4o"
    assert parse_vector("meta-llama/Llama-3.1-70B-Instruct:31:10").who == "Llama-3.1-70B-Instruct-layer31-ep10"
    for bad in ("mistral:x", "vector=openai:x", "a b=openai:x"):
        with pytest.raises(ValueError):
            parse_provider(bad)
    for bad in ("m:1", "m:x:2", "m:1:0"):
        with pytest.raises(ValueError):
            parse_vector(bad)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"levels": 8}, "prompting.levels: must be 7 or 9"),
        ({"providers": ["anthropic:a", "anthropic:b"]}, "prompting.providers: two providers share a label"),
        ({"providers": ["cohere:x"]}, "prompting.providers[0]: expected"),
        ({"vector": "tiny-random:1"}, "prompting.vector: expected MODEL:LAYER:EPOCH"),
        ({"stability_multipliers": [3.0]}, "prompting.stability_multipliers: 3 is no level's multiplier"),
        ({"stability_with": ["nobody"]}, "prompting.stability_with: 'nobody' is not one of"),
    ],
)
def test_bad_prompting_config_names_the_key(workspace: Path, section: dict[str, object], message: str) -> None:
    ws = configure(workspace, prompting=section)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config(ws)


def test_no_providers_means_no_prompting_cells_and_defaults_keep_configs_valid(workspace: Path) -> None:
    from pipeline.config_load import load_config
    from pipeline.workspace import Workspace

    ws = Workspace(workspace)
    cfg = load_config(ws.root)  # the smoke config: no [prompting]
    assert "prompting" in STAGES and cfg.prompting.providers == () and cfg.prompting.levels == 7
    assert not [c for c in build_plan(ws, cfg).cells if c.kind.startswith(("prompting", "stability"))]


def test_plan_cells_dependencies_slots_and_worker_argv(workspace: Path) -> None:
    ws = configure(workspace, prompting={"stability_with": ["claude", "vector"]})
    plan = build_plan(ws, config(ws), ("prompting",), gpu_machine=False)
    cells = plan.by_key()
    assert sorted(cells) == sorted([
        "prompting-generate:claude:levels7", "prompting-rate:claude:levels7:coherence",
        "prompting-rate:claude:levels7:relationship", "prompting-rank:claude:levels7:tiny-random:L1:E2",
        "prompting-generate:gpt:levels7", "prompting-rate:gpt:levels7:coherence",
        "prompting-rate:gpt:levels7:relationship", "prompting-rank:gpt:levels7:tiny-random:L1:E2",
        "stability:claude:levels7", "stability-rate:claude:levels7",
        "stability:tiny-random-layer1-ep2:levels7", "stability-rate:tiny-random-layer1-ep2:levels7",
    ])  # fmt: skip
    rank = cells["prompting-rank:claude:levels7:tiny-random:L1:E2"]
    assert rank.needs == ("prompting-generate:claude:levels7",) and not rank.uses_model
    assert cells["stability:tiny-random-layer1-ep2:levels7"].uses_model  # a model slot (GPU or CPU)
    assert not cells["stability:claude:levels7"].uses_model  # a judge slot
    argv = cells["prompting-generate:claude:levels7"].argv(ws, 7)
    assert argv[1:] == ["-m", "pipeline.prompting", "generate", "--provider", CLAUDE, "--levels", "7",
                        "--workspace", str(ws.root), "--job-id", "7"]  # fmt: skip
    assert plan.ready(cells["prompting-generate:claude:levels7"]) and not plan.ready(rank)
    assert not plan.ready(cells["stability:tiny-random-layer1-ep2:levels7"])  # no vector yet
    assert plan.progress(cells["stability:claude:levels7"]).expected == 5 * 8 * 3
    assert plan.progress(cells["stability-rate:claude:levels7"]).expected == 5 * 8 * 3 * 4


def test_exp1_generate_rate_rank_with_costs_per_row_and_a_free_rerun(
    server: FakeAPIServer, recorder: Recorder, workspace: Path
) -> None:
    ws = configure(workspace)
    cfg = config(ws)
    claude = cfg.prompting.provider_specs()[0]
    writer = run_generate(ws, cfg, claude, CollectingReporter())
    gens = rows(generations_path(ws, "claude", 7))
    assert writer.written == len(gens) == 3 * 7 and server.stats.paid_total == 21
    assert sorted((r["test_prompt_id"], r["level"]) for r in gens) == sorted(
        {(r["test_prompt_id"], k) for r in gens for k in range(1, 8)})  # fmt: skip
    assert {r["generation_id"] for r in gens} == set(range(21))
    for row in gens:
        assert row["multiplier"] == level_multipliers(7)[row["level"] - 1] and row["valid"]
        assert len(row["example_ids"]) == 3 and row["model_name"] == "claude"
    levels = [re.search(r"at Level (\d) of 7\.", system) for _, _, system in recorder.requests]
    assert sorted(int(m.group(1)) for m in levels if m) == sorted(list(range(1, 8)) * 3)
    assert all(messages[-1]["role"] == "user" for _, messages, _ in recorder.requests)
    # costs are each request's own: they add up to the ledger's total for the cell, and follow the list price
    total = sum(r["cost"]["total_cost"] for r in gens)
    assert math.isclose(total, ledger_cost(ws, generate_cell("claude", 7)), rel_tol=1e-4)
    for row in gens:
        usage = row["token_usage"]
        expected = (usage["prompt_tokens"] * 3.0 + usage["completion_tokens"] * 15.0) / 1e6
        assert math.isclose(row["cost"]["total_cost"], expected, abs_tol=2e-6)

    run_rate(ws, cfg, claude, None, CollectingReporter())
    for task in ("coherence", "relationship"):
        scores = rows(ratings_path(ws, "claude", 7, task))
        assert sorted(r["generation_id"] for r in scores) == list(range(21))
        assert all(r["valid"] and 1 <= r["score"] <= 10 and r["level"] in range(1, 8) for r in scores)

    vector_generations(ws, cfg)
    run_rank(ws, cfg, claude, CollectingReporter())
    ranking = rows(ranking_path(ws, "claude", 7, cfg.prompting.vector_spec()))  # type: ignore[arg-type]
    assert len(ranking) == 21 and len({r["pair_id"] for r in ranking}) == 21
    for r in ranking:
        assert r["steering_multiplier"] == level_multipliers(7)[r["baseline_level"] - 1]
        baseline_won = (r["model_response"] == "A") == r["is_baseline_A"]
        assert r["winner"] == ("claude" if baseline_won else "steering_vector")
    assert 0 < sum(r["is_baseline_A"] for r in ranking) < 21  # a seeded coin, not a fixed side

    paid = server.stats.paid_total
    assert run_generate(ws, cfg, claude, CollectingReporter()).written == 0
    assert all(w.written == 0 for w in run_rate(ws, cfg, claude, None, CollectingReporter()))
    assert run_rank(ws, cfg, claude, CollectingReporter()).written == 0
    assert server.stats.paid_total == paid and not server.stats.duplicates()


def test_rank_names_the_multipliers_the_vector_lacks(server: FakeAPIServer, workspace: Path) -> None:
    ws = configure(workspace, prompting={"providers": [CLAUDE]})
    cfg = config(ws)
    claude = cfg.prompting.provider_specs()[0]
    run_generate(ws, cfg, claude, CollectingReporter())
    vector_generations(ws, cfg, multipliers=(-1.0, 0.0, 1.0))
    with pytest.raises(DataError, match=r"no replies at multipliers -1\.5, -0\.5, 0\.5, 1\.5 .*--multipliers="):
        run_rank(ws, cfg, claude, CollectingReporter())


def test_cli_help_missing_key_and_bad_levels(workspace: Path) -> None:
    code, out, _ = run_cli("prompting", "--help")
    assert code == 0 and all(s in out for s in ("generate", "rate", "rank", "stability", "stability-rate"))
    ws = configure(workspace)
    code, _, err = run_cli("prompting", "generate", "-w", str(ws.root), "--provider", "claude")
    assert code == 2 and "ANTHROPIC_API_KEY" in err, err
    code, _, err = run_cli("prompting", "generate", "-w", str(ws.root), "--provider", "claude", "--levels", "8")
    assert code == 2 and "invalid choice" in err
    code, _, err = run_cli("prompting", "rank", "-w", str(ws.root), "--provider", "claude", "--vector", "x:1")
    assert code == 2 and "prompting.vector" in err, err
    assert VECTOR in (ws.root / "steertui.toml").read_text()
