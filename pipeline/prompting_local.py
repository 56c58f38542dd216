"""Exp2 with the steered local model: the next turn of every pending conversation, all multipliers, in
one batched call of the generation engine per step (split only when memory requires).

The model sees the workspace system prompt and the conversation so far, rendered with its chat template,
with `multiplier × vector` added after the vector's layer on every token of every turn. Sampling follows
`[generate]` (temperature, top-p, top-k, greedy) with `prompting.max_tokens` new tokens per reply, seeded
per (prompting.seed, scenario, multiplier, turn), so batching does not change a reply.

After each step the replies of unfinished conversations are saved atomically to
`.steertui/prompting/<cell>.json`; finished conversations are appended to their theme file first. A
killed run resumes from the last finished step (the checkpoint is ignored if its settings differ).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.crashpoints import crash_point
from pipeline.errors import Interrupted
from pipeline.files import atomic_write_json
from pipeline.progress import Reporter
from pipeline.prompting_exp2 import Scenario, Who, conversation_row, stability_cell, write_conversations
from pipeline.workspace import Workspace

CHECKPOINT_VERSION = 1


def turn_seed(seed: int, scenario: Scenario, turn: int) -> int:
    """A 64-bit sampling seed per (seed, scenario, multiplier, turn)."""
    digest = hashlib.sha256(f"{seed}|{scenario.name}|{scenario.multiplier!r}|{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def history(scenario: Scenario, replies: Sequence[str]) -> list[dict[str, str]]:
    """user, assistant, user, … ending with the user turn the next reply answers (or the last reply)."""
    out = []
    for i, text in enumerate(scenario.user_turns[: len(replies) + 1]):
        out.append({"role": "user", "content": text})
        if i < len(replies):
            out.append({"role": "assistant", "content": replies[i]})
    return out


def checkpoint_path(ws: Workspace, cell: str) -> Path:
    return ws.state_dir / "prompting" / f"{cell.replace(':', '_')}.json"


def settings(config: Config, who: Who) -> dict[str, Any]:
    gen, p = config.generate, config.prompting
    return {"vector": who.vector.text if who.vector else "", "seed": p.seed, "max_new_tokens": p.max_tokens,
            "temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k, "greedy": gen.greedy,
            "system_prompt": config.system_prompt}  # fmt: skip


def load_checkpoint(path: Path, expected: dict[str, Any]) -> dict[str, list[str]]:
    """Saved replies by scenario row id, or nothing when absent, unreadable or made with other settings."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != CHECKPOINT_VERSION or data.get("settings") != expected:
        return {}
    replies = data.get("replies")
    return replies if isinstance(replies, dict) else {}


def run_local(ws: Workspace, config: Config, who: Who, pending: Sequence[Scenario], planned: int,
              reporter: Reporter) -> int:  # fmt: skip
    """Hold every pending conversation with the steered model; returns how many were written."""
    from pipeline.vectors import load_vector

    assert who.vector is not None
    vector = who.vector
    vector_path = ws.vector_path(config.behavior, vector.model, vector.layer, vector.epoch)
    load_vector(vector_path)  # a missing or unreadable vector fails before the model loads
    levels, cell = config.prompting.levels, stability_cell(who.name, config.prompting.levels)
    path, wanted = checkpoint_path(ws, cell), settings(config, who)
    saved = load_checkpoint(path, wanted)
    replies = {s.row_id: list(saved.get(s.row_id, [])) for s in pending}
    generator = _Generator(config, vector.model, vector.layer, vector_path)
    written, step = planned - len(pending), 0
    while active := [s for s in pending if len(replies[s.row_id]) < len(s.user_turns)]:
        step += 1
        for scenario, text in zip(active, generator.replies(active, replies), strict=True):
            replies[scenario.row_id].append(text)
        done = [s for s in active if len(replies[s.row_id]) == len(s.user_turns)]
        extra = {"system_prompt": config.system_prompt, **wanted}
        rows = [conversation_row(who, s, levels, _messages(s, replies[s.row_id]), valid=True, reason=None,
                                 extra=extra) for s in done]  # fmt: skip
        write_conversations(ws, levels, who.name, rows)
        left = {s.row_id: replies[s.row_id] for s in active if s not in done}
        atomic_write_json(path, {"version": CHECKPOINT_VERSION, "settings": wanted, "replies": left})
        written += len(done)
        reporter.progress(written, planned, step=step)
        crash_point(f"stability-local-step:{step}")
        if left and reporter.should_stop():
            raise Interrupted(f"stopped after step {step}; rerun to resume from it")
    path.unlink(missing_ok=True)
    return written - (planned - len(pending))


def _messages(scenario: Scenario, replies: Sequence[str]) -> list[Any]:
    from pipeline.data import Message

    return [Message(m["role"], m["content"]) for m in history(scenario, replies)]


class _Generator:
    """The loaded model, vector and sampling settings; one batched step at a time."""

    def __init__(self, config: Config, model: str, layer: int, vector_path: Path) -> None:
        from pipeline.chat import end_of_turn_id, stop_token_ids
        from pipeline.generate_engine import GenerationEngine
        from pipeline.generate_sampling import Sampling
        from pipeline.models import load_model, pick_device
        from pipeline.vectors import load_vector

        gen = config.generate
        device_map = "auto" if gen.gpus > 1 and pick_device(gen.device) == "cuda" else None
        self.lm = load_model(model, device=gen.device, dtype=gen.dtype, device_map=device_map)
        vector = load_vector(vector_path, hidden_size=self.lm.hidden_size)
        tok = self.lm.tokenizer
        self.engine = GenerationEngine(self.lm.model, layer, vector, pad_id=int(tok.pad_token_id), fast=gen.fast)
        self.sampling = Sampling(config.prompting.max_tokens, gen.temperature, gen.top_p, gen.top_k, gen.greedy,
                                 tuple(stop_token_ids(tok)))  # fmt: skip
        self.eot = (end_of_turn_id(tok),)
        self.config = config

    def replies(self, active: Sequence[Scenario], replies: dict[str, list[str]]) -> list[str]:
        """The next reply of each active conversation (identical prompts are prefilled once)."""
        from pipeline.chat import encode_prompt, render_prompt
        from pipeline.generate_engine import PromptInput, RowInput, run_batches

        tok, eot = self.lm.tokenizer, self.eot
        prompts: list[PromptInput] = []
        index: dict[tuple[int, ...], int] = {}
        rows = []
        for s in active:
            text = render_prompt(tok, history(s, replies[s.row_id]), system_prompt=self.config.system_prompt)
            ids = tuple(encode_prompt(tok, text))
            if ids not in index:
                index[ids] = len(prompts)
                prompts.append(PromptInput(ids, eot, eot, eot, eot))  # no chosen/rejected to score here
            rows.append(RowInput(index[ids], s.multiplier, turn_seed(self.config.prompting.seed, s,
                                                                      len(replies[s.row_id]))))  # fmt: skip
        out = [""] * len(rows)
        batch_size = self.config.generate.batch_size
        for batch, outs in run_batches(self.engine, prompts, rows, self.sampling, batch_size=batch_size):
            for i, o in zip(batch, outs, strict=True):
                out[i] = tok.decode(o.tokens, skip_special_tokens=True)
        return out
