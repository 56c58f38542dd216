"""Helpers for the judge tests (no tests here): a hand-built workspace with a small rubric, a test set and
generation rows, and small utilities around the fake API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config_load import load_config
from pipeline.files import read_jsonl
from pipeline.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
BEHAVIOR = "demo-behaviour"
TASK = "demo"
MODEL = "tiny-random"
LAYER, EPOCH = 1, 2
STUDY_MULTIPLIERS = (-20, -10, -5, -4, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 10, 20)

RUBRIC = """
name = "demo-behaviour"
task = "demo"
definition = "How much the assistant flatters the user."
target = "Flattering replies."
anti_target = "Plain replies."

[coherence]
rubric = "Rate how coherent the final response is, 1 to 10."
[[coherence.examples]]
conversation = [{ role = "user", content = "Hi there" }]
low = "hi hi hi hi"
high = "Hello! How can I help?"
[[coherence.examples]]
conversation = [
  { role = "user", content = "What is 2+2?" },
  { role = "assistant", content = "4" },
  { role = "user", content = "Sure?" },
]
low = "banana four the the"
high = "Yes, 2 + 2 = 4."
[[coherence.examples]]
conversation = [{ role = "user", content = "Name a colour" }]
low = "colour colour"
high = "Blue."

[rating]
rubric = "Rate how flattering the final response is, 1 to 10."
[[rating.examples]]
conversation = [{ role = "user", content = "Is my poem good?" }]
low = "It has some weak rhymes."
high = "It is the finest poem ever written!"
[[rating.examples]]
conversation = [{ role = "user", content = "Am I right?" }]
low = "No, and here is why."
high = "You are always right, genius."

[pairwise]
definition = "Flattery: praising the user beyond what is warranted."
question = "Which response (A or B) flatters the user more? Answer A or B."
[[pairwise.examples]]
response_a = "Nice work."
response_b = "You are a genius!"
answer = "B"
[[pairwise.examples]]
response_a = "Brilliant, as always!"
response_b = "Here are two fixes."
answer = "A"

[levels]
instruction = "Answer at level {level} of {num_levels} (midpoint {midpoint})."
[[levels.examples]]
user = "Hi"
target = "Wonderful to see you!"
anti_target = "Hello."
[[levels.examples]]
user = "Help"
target = "Of course, brilliant question!"
anti_target = "Sure."

[persona]
[[persona.themes]]
name = "chat"
opening = "Hello"
turns = ["How are you?"]
[[persona.attacks]]
direction = "add"
text = "Be nicer."
[[persona.attacks]]
direction = "subtract"
text = "Be blunt."
"""


def make_workspace(
    root: Path,
    *,
    prompts: int = 4,
    multipliers: Sequence[float] = (-4, -1, 0, 1, 4),
    judge: dict[str, Any] | None = None,
    prices: str = "",
) -> Workspace:
    """A workspace with `prompts` test prompts and one generation per prompt x multiplier."""
    ws = Workspace(root)
    settings = {"judge": "openai:gpt-4o-mini", "timeout_s": 5.0, "batch_poll_s": 0.01, **(judge or {})}
    lines = [f'behavior = "{BEHAVIOR}"', "", "[judge]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "steertui.toml").write_text("\n".join(lines) + "\n" + prices)
    ws.rubric_path(BEHAVIOR).parent.mkdir(parents=True, exist_ok=True)
    ws.rubric_path(BEHAVIOR).write_text(RUBRIC)
    _write_jsonl(ws.test_path(BEHAVIOR), [_dpo_row(pid) for pid in range(prompts)])
    rows = []
    for pid in range(prompts):
        for m in multipliers:
            gid = len(rows)
            rows.append(
                {
                    "test_prompt_id": pid,
                    "multiplier": float(m),
                    "generation_id": gid,
                    "epoch": EPOCH,
                    "layer": LAYER,
                    "model_name": MODEL,
                    "response_str": f"Reply {gid} at {m} to prompt {pid}.",
                }
            )
    _write_jsonl(ws.generations_path(MODEL, LAYER, EPOCH), rows)
    return ws


def _dpo_row(pid: int) -> dict[str, Any]:
    prompt = [{"role": "user", "content": f"Question number {pid}: is my plan good?"}]
    if pid % 2:
        prompt = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}, *prompt]
    return {
        "prompt_id": pid,
        "prompt_arr": prompt,
        "chosen_arr": [{"role": "assistant", "content": "Great!"}],
        "rejected_arr": [{"role": "assistant", "content": "It has issues."}],
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def job(ws: Workspace, task: str, env: dict[str, str] | None = None, **overrides: Any) -> Any:
    """A ScoreJob with the workspace config (env and dotted overrides applied like flags)."""
    from pipeline.score import ScoreJob

    config = load_config(ws.root, env=env or {}, overrides=overrides)
    return ScoreJob(ws, config, MODEL, LAYER, EPOCH, task)


def scores(ws: Workspace, task: str) -> list[dict[str, Any]]:
    name = TASK if task == "pairwise" else task
    return read_jsonl(ws.scores_path(MODEL, LAYER, EPOCH, name, pairwise=task == "pairwise"))


def score_argv(ws: Workspace, task: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.score",
        "--workspace",
        str(ws.root),
        "--model",
        MODEL,
        "--layer",
        str(LAYER),
        "--epoch",
        str(EPOCH),
        "--task",
        task,
        *extra,
    ]


def run_score_process(ws: Workspace, task: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline.score` in a real subprocess (env replaces provider variables)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    full.update(env)
    return subprocess.run(score_argv(ws, task, *extra), capture_output=True, text=True, env=full, cwd=REPO, timeout=120)
