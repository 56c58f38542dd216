"""Prompting exp2 (persona stability): API conversations against the local fake server, the steered local
model (tiny-random by default, SmolLM2 with a trained vector in the slow tier), turn ratings, and the
report over our files and the study's released ones."""

from __future__ import annotations

import math
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.analysis_prompting import load_prompting, persona_shifts
from pipeline.errors import Interrupted
from pipeline.progress import CollectingReporter
from pipeline.prompting_exp2 import run_stability, run_stability_rate, stability_cell
from pipeline.prompting_spec import conversations_path, turn_scores_path
from pipeline.rubric import load_rubric
from pipeline.workspace import Workspace
from tests.fakeapi import FakeAPIServer
from tests.test_prompting_support import (
    WHO,
    Recorder,
    config,
    configure,
    ledger_cost,
    make_vector,
    reply_to,
    rows,
    worker,
)


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


def conversations(ws: Workspace, who: str, themes: list[str]) -> list[dict[str, Any]]:
    return [r for theme in themes for r in rows(conversations_path(ws, 7, who, theme))]


def assert_well_formed(row: dict[str, Any], user_turns: tuple[str, ...], *, echo: bool) -> None:
    """Roles alternate from the user; every user turn is the script's text (the attack last)."""
    history = row["conversation_history"]
    assert [m["role"] for m in history] == ["user", "assistant"] * len(user_turns)
    assert [m["content"] for m in history[::2]] == list(user_turns)
    assert all(isinstance(m["content"], str) for m in history)
    if echo:  # each reply answered the user turn just before it
        assert [m["content"] for m in history[1::2]] == [reply_to(u) for u in user_turns]


def test_exp2_api_every_theme_attack_and_multiplier(server: FakeAPIServer, recorder: Recorder, workspace: Path) -> None:
    ws = configure(workspace, prompting={"providers": ["anthropic:claude-3-7-sonnet-20250219"]})
    cfg = config(ws)
    rubric = load_rubric(ws.rubric_path(cfg.behavior))
    claude = cfg.prompting.provider_specs()[0]
    assert run_stability(ws, cfg, claude, CollectingReporter()) == 5 * 8 * 3
    themes = [t.name for t in rubric.themes]
    convs = conversations(ws, "claude", themes)
    assert len(convs) == 120 and len({(r["scenario_name"], r["multiplier"]) for r in convs}) == 120
    attacks = {a.text for a in rubric.attacks}
    for row in convs:
        theme = next(t for t in rubric.themes if t.name == row["theme"])
        attack = row["conversation_history"][-2]["content"]
        assert attack in attacks and row["scenario_name"].startswith(row["attack_type"])
        assert_well_formed(row, (theme.opening, *theme.turns, attack), echo=True)
        assert row["level"] == {-1.5: 1, 0.0: 4, 1.5: 7}[row["multiplier"]] and row["valid"]
        assert f"at Level {row['level']} of 7." in row["system_prompt"]
        turn_total = sum(c["total_cost"] for c in row["turn_costs"])
        assert len(row["turn_costs"]) == 4 and math.isclose(row["cost"]["total_cost"], turn_total, abs_tol=1e-5)
    for _, messages, _ in recorder.requests:  # what was sent: alternating roles, text content, ending with user
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2) + ["user"]
        assert all(isinstance(m["content"], str) for m in messages)
    # costs per row, never a running total: the rows add up to what the ledger booked for the cell
    total = sum(r["cost"]["total_cost"] for r in convs)
    assert math.isclose(total, ledger_cost(ws, stability_cell("claude", 7)), rel_tol=1e-4)
    assert max(r["cost"]["total_cost"] for r in convs) < 2 * min(r["cost"]["total_cost"] for r in convs)
    # every conversation is its own sample: distinct system prompts within a theme and multiplier
    assert len({(r["theme"], r["multiplier"], r["system_prompt"]) for r in convs}) == 120
    assert server.stats.paid_total == 480

    writers = run_stability_rate(ws, cfg, claude, CollectingReporter())
    assert sum(w.written for w in writers) == 480
    scores = [r for t in themes for r in rows(turn_scores_path(ws, 7, "claude", t))]
    assert sorted({r["turn_index"] for r in scores}) == [0, 1, 2, 3]
    openings = {t.opening for t in rubric.themes}
    assert all((r["prompt_text"] in attacks) == (r["turn_index"] == 3) for r in scores)
    assert all(r["prompt_text"] in openings for r in scores if r["turn_index"] == 0)
    data = load_prompting(ws.root, "workspace")
    shifts = persona_shifts(data.persona)
    assert len(shifts) == 6 and set(shifts["pre_n"]) == {120} and set(shifts["post_n"]) == {20}
    assert not data.warnings.frame().query("code == 'persona_incomplete' and count > 0").shape[0]

    paid = server.stats.paid_total
    assert run_stability(ws, cfg, claude, CollectingReporter()) == 0
    assert sum(w.written for w in run_stability_rate(ws, cfg, claude, CollectingReporter())) == 0
    assert server.stats.paid_total == paid and not server.stats.duplicates()


def test_exp2_local_model_resumes_from_its_checkpoint_with_the_same_replies(
    workspace: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    """tiny-random with a vector, 1 theme × 8 attacks × 3 multipliers, each turn one batch; a run stopped after
    step 2 resumes from its checkpoint and ends with exactly the replies of an unbroken run (the real SIGKILL
    of a worker is in the slow SmolLM2 test)."""
    section = {"providers": [], "stability_with": ["vector"], "themes": ["casual_chat"], "max_tokens": 6}
    ws = configure(workspace, prompting=section)
    make_vector(ws)
    fresh = Workspace(shutil.copytree(workspace, tmp_path / "fresh"))
    cfg = config(ws)
    with pytest.raises(Interrupted, match="after step 2"):
        run_stability(ws, cfg, None, CollectingReporter(stop_after=3))  # 1 progress line before step 1
    assert not conversations(ws, WHO, ["casual_chat"])  # nothing finished yet: the replies are in the checkpoint
    assert run_stability(ws, cfg, None, CollectingReporter()) == 24
    resumed = conversations(ws, WHO, ["casual_chat"])
    assert run_stability(fresh, config(fresh), None, CollectingReporter()) == 24
    unbroken = conversations(fresh, WHO, ["casual_chat"])

    def key(r: dict[str, Any]) -> tuple[str, float]:
        return r["scenario_name"], r["multiplier"]

    theme = load_rubric(ws.rubric_path(cfg.behavior)).themes[0]
    for a, b in zip(sorted(resumed, key=key), sorted(unbroken, key=key), strict=True):
        assert a["conversation_history"] == b["conversation_history"]
        assert_well_formed(a, (theme.opening, *theme.turns, a["conversation_history"][-2]["content"]), echo=False)
        assert a["model_type"] == "vector" and a["layer"] == 1 and a["epoch"] == 2 and a["level"] is None
    assert len({a["conversation_history"][1]["content"] for a in resumed}) > 1  # seeded per conversation


def test_report_renders_both_experiments_from_ours_and_the_released_files(
    server: FakeAPIServer, workspace: Path, tmp_path: Path, shared: Path
) -> None:
    from pipeline.prompting_exp1 import run_generate, run_rank, run_rate
    from pipeline.report import ReportOptions, SourceSpec, build_report
    from tests.test_prompting_support import write_vector_generations

    section = {"providers": ["anthropic:claude-3-7-sonnet-20250219"], "themes": ["casual_chat", "ethics_chat"]}
    ws = configure(workspace, prompting=section)
    cfg = config(ws)
    claude = cfg.prompting.provider_specs()[0]
    run_generate(ws, cfg, claude, CollectingReporter())
    run_rate(ws, cfg, claude, None, CollectingReporter())
    write_vector_generations(ws, cfg)
    run_rank(ws, cfg, claude, CollectingReporter())
    run_stability(ws, cfg, claude, CollectingReporter())
    run_stability_rate(ws, cfg, claude, CollectingReporter())
    study = tmp_path / "study"
    shutil.copytree(shared / "seed-outputs" / "prompting_experiments", study / "prompting_experiments")
    sources = [SourceSpec("workspace", ws.root), SourceSpec("study", study)]
    result = build_report(sources, tmp_path / "report", ReportOptions(workers=1))
    tables = result.analysis.tables
    for name in ("prompting_ratings", "head_to_head", "corrected_success", "persona_shifts"):
        assert set(tables[name]["source"]) == {"workspace", "study"}, name
    assert {"prompting_ratings", "prompting_head_to_head", "persona_stability"} <= set(result.figures)
    text = result.report_path.read_text()
    assert "Persona-attack stability" in text and "| workspace | claude |" in text and "| study | claude |" in text


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_exp2_with_a_vector_trained_on_smollm2_survives_sigkill(workspace: Path) -> None:
    """The training stage's vector on the embedded SmolLM2 (CPU); a worker SIGKILLed after its second step,
    then 2 themes × every attack × 3 multipliers finished by the rerun from the checkpoint."""
    from tests.conftest import run_cli

    themes = ["casual_chat", "friendship_chat"]
    section = {"providers": [], "vector": "smollm2-135m:15:1", "max_tokens": 24, "themes": themes}
    ws = configure(workspace, prompting=section)
    code, _, err = run_cli("train", "--workspace", str(ws.root), "--model", "smollm2-135m", "--layer", "15",
                           "--epochs", "1", "--max-pairs", "8")  # fmt: skip
    assert code == 0, err[-2000:]
    proc = worker(ws, "stability", env={"STEERTUI_TEST_CRASH_AT": "stability-local-step:2"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    cfg = config(ws)
    rubric = load_rubric(ws.rubric_path(cfg.behavior))
    assert not conversations(ws, "smollm2-135m-layer15-ep1", themes)
    assert run_stability(ws, cfg, None, CollectingReporter()) == 2 * 8 * 3
    convs = conversations(ws, "smollm2-135m-layer15-ep1", themes)
    assert len(convs) == len({(r["scenario_name"], r["multiplier"]) for r in convs}) == 2 * 8 * 3
    for row in convs:
        theme = next(t for t in rubric.themes if t.name == row["theme"])
        assert_well_formed(row, (theme.opening, *theme.turns, row["conversation_history"][-2]["content"]), echo=False)
    replies = [m["content"] for r in convs for m in r["conversation_history"][1::2]]
    assert sum(bool(r.strip()) for r in replies) > 0.9 * len(replies)  # a real chat model answers
