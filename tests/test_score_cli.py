"""`steertui score` and `python -m pipeline.score`: flags, exit codes and messages (real subprocesses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steertui.cli import build_parser, main
from tests.conftest import run_cli
from tests.fakeapi import FakeAPIServer
from tests.test_judge_support import EPOCH, LAYER, MODEL, make_workspace, run_score_process


@pytest.fixture
def server() -> Iterator[FakeAPIServer]:
    with FakeAPIServer() as srv:
        yield srv


def test_help_lists_the_flags() -> None:
    parser = build_parser()
    actions = {a.dest: a for a in parser._subparsers._group_actions[0].choices["score"]._actions}  # type: ignore[union-attr]
    assert {"model", "layer", "epoch", "task", "judge", "mode", "budget_usd"} <= set(actions)
    assert actions["mode"].choices == ("sync", "batch")


@pytest.mark.parametrize(
    ("env_var", "judge"), [("OPENAI_API_KEY", "openai:gpt-4o"), ("ANTHROPIC_API_KEY", "anthropic:claude-haiku-4-5")]
)
def test_missing_key_exits_2_naming_the_variable(tmp_path: Path, env_var: str, judge: str) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=1)
    proc = run_score_process(ws, "coherence", {}, "--judge", judge)
    assert proc.returncode == 2 and env_var in proc.stderr, proc.stderr
    assert not ws.db_path.exists()


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=1)
    env = {"OPENAI_API_KEY": "k"}
    unknown = run_score_process(ws, "relationship", env)
    assert unknown.returncode == 2 and "unknown task 'relationship'" in unknown.stderr
    ws.generations_path(MODEL, LAYER, EPOCH).write_text("")
    empty = run_score_process(ws, "coherence", env)
    assert empty.returncode == 2 and "no generations to score" in empty.stderr


def test_cli_budget_exit_1_then_continue(
    server: FakeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(tmp_path / "ws", prompts=3, judge={"judge": "openai:gpt-4o"})
    args = [
        "score",
        "--workspace",
        str(ws.root),
        "--model",
        MODEL,
        "--layer",
        str(LAYER),
        "--epoch",
        str(EPOCH),
        "--task",
        "coherence",
    ]
    code, _, err = run_cli(*args, "--budget-usd", "0.004", env=server.env())
    assert code == 1 and "budget reached" in err and "more is needed" in err, err
    assert "estimated at most" in err
    paid = server.stats.paid_total
    assert 0 < paid < 15
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    assert main([*args, "--budget-usd", "1"]) == 0
    assert server.stats.paid_total == 15 and not server.stats.duplicates()


def test_judge_stage_imports_no_torch_and_no_sdk_until_needed() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    code = "import pipeline.score, pipeline.judges, steertui.cli.commands_score, sys; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    mods = set(out.stdout.split())
    assert not mods & {"torch", "transformers", "openai", "anthropic", "textual"}
