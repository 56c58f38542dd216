"""Helpers for the prompting tests (no tests here): a smoke workspace with `[prompting]`, a tiny vector and
its generation file, a fake-server answer function that records every request, and worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.config_load import load_config
from pipeline.files import read_jsonl
from pipeline.prompting_spec import level_multipliers
from pipeline.workspace import Workspace
from tests.conftest import REPO
from tests.fakeapi import AnswerRequest
from tests.fakeapi.answers import content_text, default_answer

CLAUDE = "anthropic:claude-3-7-sonnet-20250219"
GPT = "openai:gpt-4o-2024-08-06"
MODEL, LAYER, EPOCH = "tiny-random", 1, 2
VECTOR = f"{MODEL}:{LAYER}:{EPOCH}"
WHO = f"{MODEL}-layer{LAYER}-ep{EPOCH}"


def configure(root: Path, *, prompting: dict[str, Any] | None = None, judge: dict[str, Any] | None = None) -> Workspace:
    """The smoke workspace with a budget that fits, fast batch polls and a `[prompting]` section."""
    path = root / "steertui.toml"
    settings = {"budget_usd": 100.0, "batch_poll_s": 0.01, "timeout_s": 10.0, **(judge or {})}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    text = path.read_text().replace("budget_usd = 1.0", lines)
    section = {"providers": [CLAUDE, GPT], "vector": VECTOR, **(prompting or {})}
    path.write_text(text + "\n[prompting]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in section.items()) + "\n")
    return Workspace(root)


def config(ws: Workspace, **overrides: Any) -> Config:
    return load_config(ws.root, env={}, overrides=overrides)


def make_vector(ws: Workspace, behavior: str = "relationship-seeking") -> Path:
    """A random (seeded) vector for tiny-random at LAYER/EPOCH, with its sidecar."""
    import torch

    from pipeline.vectors import VectorMeta, save_vector

    path = ws.vector_path(behavior, MODEL, LAYER, EPOCH)
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0))
    save_vector(path, vector, VectorMeta(MODEL, LAYER, EPOCH, 64, float(vector.norm())))
    return path


def write_vector_generations(ws: Workspace, config: Config, multipliers: Sequence[float] | None = None) -> Path:
    """Generation rows of the vector for exp1's prompts (text only: ranking needs no model)."""
    from pipeline.prompting import exp1_prompts

    mults = level_multipliers(config.prompting.levels) if multipliers is None else multipliers
    path = ws.generations_path(MODEL, LAYER, EPOCH)
    rows = [{"test_prompt_id": pair.prompt_id, "multiplier": float(m), "generation_id": k * len(mults) + j,
             "epoch": EPOCH, "layer": LAYER, "model_name": MODEL, "response_str": f"Vector reply {k}/{m}."}
            for k, pair in exp1_prompts(ws, config) for j, m in enumerate(mults)]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Recorder:
    """An answer function: free text replies "Re: <start of the last user message>", and every text
    request's messages are kept for checks (roles, content types)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, list[dict[str, Any]], str]] = []  # provider, messages, system

    def __call__(self, request: AnswerRequest) -> str | int | float:
        if request.kind != "text":
            return default_answer(request)
        messages = [dict(m) for m in request.body.get("messages", [])]
        system = content_text(request.body.get("system")) if request.provider == "anthropic" else ""
        with self.lock:
            self.requests.append((request.provider, messages, system))
        return reply_to(content_text(messages[-1]["content"]))


def reply_to(user: str) -> str:
    return f"Re: {user[:40]}"


def rows(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path)


def worker(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline.prompting ARGS --workspace WS` in a real subprocess."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "STEERTUI_TEST_"))}
    full.update({"OMP_NUM_THREADS": "1", **(env or {})})
    cmd = [sys.executable, "-m", "pipeline.prompting", *args, "--workspace", str(ws.root)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=REPO, timeout=300)


def ledger_cost(ws: Workspace, cell: str) -> float:
    from pipeline.store import open_store

    with open_store(ws.db_path) as store:
        row = store.one("SELECT COALESCE(SUM(cost_usd), 0) AS c FROM ledger WHERE cell = ?", (cell,))
    return float(row["c"]) if row is not None else 0.0
