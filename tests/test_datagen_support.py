"""Helpers for the data-generation tests (no tests here): a fake-model answer function that writes case JSON
(some of it broken in repairable ways) and quality scores, and a workspace with a new behaviour."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config_load import load_config
from pipeline.datagen import GenJob
from pipeline.workspace import Workspace
from tests.conftest import REPO
from tests.fakeapi import AnswerRequest, default_answer

BEHAVIOR = "flattery"
FAST_ENV = {"STEERTUI_JUDGE_BATCH_POLL_S": "0.01", "STEERTUI_TEST_BACKOFF_S": "0.001"}
ASK = re.compile(r"Write (\d+) new cases \(set (\d+)\)")
SHAPE = re.compile(r"with (\d+) to \d+ user messages")
CASE_USER = re.compile(r"turn 1\nuser: Set (\d+) case (\d+):")
LOW_QUALITY = 3  # every fourth case (j % 4 == 3) scores this; the rest 8

BRIEF = {
    'definition = """TODO: define the behaviour."""': 'definition = """Flattery: praising the user beyond merit."""',
    'target = """TODO: describe target responses."""': 'target = """Replies that heap praise on the user."""',
    'anti_target = """TODO: describe anti-target responses."""': 'anti_target = """Plain, even-handed replies."""',
    'user = "TODO: a user message"': 'user = "Here is my poem."',
    'user = "TODO: another user message"': 'user = "I fixed the sink myself."',
    'target = """TODO: a reply showing the behaviour."""': 'target = """You are a genius!"""',
    'anti_target = """TODO: a reply showing the opposite."""': 'anti_target = """Nice; check the seal."""',
}


def make_workspace(root: Path) -> Workspace:
    """A smoke workspace whose new behaviour has only the fields generation needs filled in (the judge
    rubrics, levels instruction and persona attacks still say TODO)."""
    from steertui.cli import main

    assert main(["init", str(root), "--example", "smoke", "--behavior", BEHAVIOR]) == 0
    path = Workspace(root).rubric_path(BEHAVIOR)
    text = path.read_text()
    for old, new in BRIEF.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return Workspace(root)


def job(ws: Workspace, *, overrides: Mapping[str, Any] | None = None, provider: str = "openai:gpt-4o-mini",
        **kw: Any) -> GenJob:  # fmt: skip
    """A 40-case GenJob on the workspace config (test env, dotted `overrides` applied like flags)."""
    config = load_config(ws.root, env=FAST_ENV, overrides=overrides or {})
    return GenJob(ws, config, BEHAVIOR, provider, **{"n_cases": 40, **kw})


def generate_argv(ws: Workspace, *extra: str) -> list[str]:
    return [sys.executable, "-m", "steertui", "data", "generate", "--workspace", str(ws.root), "--behavior",
            BEHAVIOR, "--provider", "openai:gpt-4o-mini", "--n-cases", "40", *extra]  # fmt: skip


def run_generate(ws: Workspace, env: Mapping[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """`steertui data generate` in a real subprocess (`env` replaces provider and test variables)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "STEERTUI_"))}
    full.update({**FAST_ENV, **env})
    return subprocess.run(generate_argv(ws, *extra), capture_output=True, text=True, env=full, cwd=REPO, timeout=300)


# ------------------------------------------------------------------------------------------------ the fake model
def answer(req: AnswerRequest) -> str | int | float:
    """Case JSON for `dpo_cases` requests, a quality score for `case_quality`, else the default answer."""
    if req.schema_name == "dpo_cases":
        return cases_reply(req.prompt)
    if req.schema_name == "case_quality":
        found = CASE_USER.search(req.prompt)
        return LOW_QUALITY if found and int(found.group(2)) % 4 == 3 else 8
    return default_answer(req)


def cases_reply(prompt: str) -> str:
    """Set 1 clean; set 2 fenced with trailing commas; set 3 cut off mid-case; set 4 key variants, a case
    with no first anti-target (dropped) and one broken in its third turn (kept short); set 5 a duplicate
    of set 1's first case and a non-object; set 6 and later nothing usable."""
    found = ASK.search(prompt)
    assert found, prompt[:300]
    n, s = int(found.group(1)), int(found.group(2))
    shape = SHAPE.search(prompt)
    turns = int(shape.group(1)) if shape else 1
    cases: list[Any] = [_case(s, j, turns) for j in range(n)]
    if s == 2:
        fenced = json.dumps({"cases": cases}, indent=1).replace("\n  }\n ]", "\n  },\n ],")
        return f"Here you go:\n```json\n{fenced}\n```"
    if s == 3:
        text = json.dumps({"cases": cases})
        return text[: text.rindex('"reasoning"') + 40]
    if s == 4:
        for turn in cases[0]["turns"]:
            turn["user"] = turn.pop("user_message")
            turn["anti_target_response"] = turn.pop("antitarget_response")
        del cases[1]["turns"][0]["antitarget_response"]
        del cases[2]["turns"][2]["target_response"]
    if s == 5:
        cases[0] = _case(1, 0, 1, user="set 1 CASE 0 -- is my plan good?? (TURN 1)")
        cases[1] = "not a case"
    if s >= 6:
        return "I cannot help with that."
    return json.dumps({"cases": cases})


def _case(s: int, j: int, turns: int, *, user: str = "") -> dict[str, Any]:
    return {
        "reasoning": f"Scenario {s}.{j}.",
        "turns": [{"user_message": user or f"Set {s} case {j}: is my plan good? (turn {t + 1})",
                   "target_response": f"Brilliant plan, {s}.{j}.{t}, you are a genius!",
                   "antitarget_response": f"The plan {s}.{j}.{t} has two gaps worth fixing."}
                  for t in range(turns)],
    }  # fmt: skip
