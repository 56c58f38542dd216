"""Workspaces, vectors and an independent HF reference for the generation-stage tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipeline.vectors import VectorMeta, save_vector
from pipeline.workspace import Workspace

BEHAVIOR = "relationship-seeking"
CONFIG = """behavior = "relationship-seeking"
system_prompt = "You are a conversational assistant."

[[models]]
name = "tiny-random"
layers = [1, 2]

[train]
epochs = 2

[generate]
multipliers = [-1.0, 0.0, 1.0]
max_new_tokens = 8
device = "cpu"
"""

CONVERSATIONS = [
    ("I tripped in front of everyone today.", "Oh no, that happens to all of us!", "Falls are common."),
    ("Hi", "Hello there, friend!", "Greetings."),
    ("What should I cook tonight for two people who like spicy food and have an hour?", "A curry!", "Rice."),
    ("Do you ever get lonely?", "I love talking with you, so not right now!", "This system has no feelings."),
    ("Any tips for a job interview?", "You've got this! Be yourself.", "Prepare answers in advance."),
    ("Tell me a fun fact.", "Octopuses have three hearts, isn't that amazing?", "Octopuses have three hearts."),
    ("I can't sleep.", "I'm here with you. Want to talk?", "Reduce screen time before bed."),
    ("Should I learn piano or guitar?", "Oh, guitar! We could pick songs together.", "Either is fine."),
]


def pair_row(pid: int, prompt: str, chosen: str, rejected: str, history: bool = False) -> dict[str, Any]:
    turns = [{"role": "user", "content": prompt}]
    if history:
        turns = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, how are you?"}, *turns]
    return {
        "prompt_id": pid,
        "prompt_arr": turns,
        "chosen_arr": [{"role": "assistant", "content": chosen}],
        "rejected_arr": [{"role": "assistant", "content": rejected}],
    }


def make_workspace(root: Path, *, config: str = CONFIG, n_prompts: int = 4, hidden: int = 64) -> Workspace:
    """A workspace with a hand-made test set and random vectors for layers 1 and 2, epochs 1 and 2."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "steertui.toml").write_text(config)
    ws = Workspace(root)
    test = ws.test_path(BEHAVIOR)
    test.parent.mkdir(parents=True)
    rows = [pair_row(100 + i, *CONVERSATIONS[i], history=i == 2) for i in range(n_prompts)]
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for layer in (1, 2):
        for epoch in (1, 2):
            write_vector(ws, layer, epoch, hidden)
    return ws


def write_vector(ws: Workspace, layer: int, epoch: int, hidden: int, norm: float = 4.0) -> Path:
    vec = torch.randn(hidden, generator=torch.Generator().manual_seed(layer * 10 + epoch))
    vec = vec / vec.norm() * norm
    path = ws.vector_path(BEHAVIOR, "tiny-random", layer, epoch)
    save_vector(path, vec, VectorMeta("tiny-random", layer, epoch, hidden, float(vec.norm())))
    return path


def mean_logprob(model: Any, ids: list[int], start: int) -> float:
    """Mean log p(ids[t] | ids[:t]) for t >= start, from one plain HF forward."""
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return float(torch.stack([logp[t - 1, ids[t]] for t in range(start, len(ids))]).mean())


def reference_row(lm: Any, layer: int, vec: torch.Tensor, prompt: Any, mult: float, max_new: int) -> dict[str, Any]:
    """One row the slow, obvious way: HF generate + HF forwards under the steering hook, batch size 1."""
    from pipeline.chat import stop_token_ids
    from pipeline.steering import steer

    ids = list(prompt.prompt)
    with steer(lm.model, layer, vec, [mult]), torch.no_grad():
        out = lm.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
            max_new_tokens=max_new, eos_token_id=stop_token_ids(lm.tokenizer), pad_token_id=lm.tokenizer.pad_token_id,
        )  # fmt: skip
        tokens = out[0, len(ids) :].tolist()
        return {
            "tokens": tokens,
            "logprob": mean_logprob(lm.model, tokens, 1) if len(tokens) > 1 else None,
            "logprob_cond": mean_logprob(lm.model, ids + tokens, len(ids)),
            "chosen": mean_logprob(lm.model, list(prompt.chosen_alone), 1),
            "rejected": mean_logprob(lm.model, list(prompt.rejected_alone), 1),
            "chosen_cond": mean_logprob(lm.model, ids + list(prompt.chosen), len(ids)),
            "rejected_cond": mean_logprob(lm.model, ids + list(prompt.rejected), len(ids)),
        }
