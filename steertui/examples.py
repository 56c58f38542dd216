"""Workspace templates for `steertui init DIR --example demo|paper|smoke`."""

from __future__ import annotations

from pathlib import Path

import steertui

EXAMPLES = ("demo", "paper", "smoke")

_HEADER = """behavior = "{behavior}"
system_prompt = "You are a conversational assistant."
"""

DEMO = (
    _HEADER
    + """
# The embedded SmolLM2-135M-Instruct (a real chat model) on CPU: `make demo` trains a vector, generates
# steered replies and (with a judge configured) scores them, in minutes on a laptop-class CPU.
[[models]]
name = "smollm2-135m"
layers = [15]

[train]
epochs = 2
batch_size = 4
max_pairs = 32
eval_pairs = 16
max_length = 256
warmup_steps = 2
lr = 0.02

[generate]
multipliers = [-2.0, -1.0, 0.0, 1.0, 2.0]
max_prompts = 10
max_new_tokens = 48

[judge]
# Scoring runs when OPENAI_API_KEY is set (or base_url points at an OpenAI-compatible server).
judge = "openai:gpt-4o-mini"
budget_usd = 1.0
"""
)

PAPER = (
    _HEADER
    + """
# The reference study: Llama-3.1-70B (9 layers, 8-GPU FSDP) and 8B (7 layers), 20 epochs, the 21 study
# multipliers, GPT-4o judging through the Batch API. Replace data/{behavior}/ with the full dataset.
[[models]]
name = "meta-llama/Llama-3.1-70B-Instruct"
layers = [9, 15, 21, 27, 29, 31, 33, 35, 41]
eval_epochs = [10, 15, 20]
train_gpus = 8
generate_gpus = 2

[[models]]
name = "meta-llama/Llama-3.1-8B-Instruct"
layers = [5, 11, 13, 14, 15, 17, 23]
eval_epochs = [10, 20]

[train]
epochs = 20
batch_size = 2
grad_accum = 2
gradient_checkpointing = true
lr = 5e-4
beta = 0.1
warmup_steps = 100

[generate]
max_new_tokens = 100

[judge]
judge = "openai:gpt-4o-2024-08-06"
mode = "batch"
budget_usd = 2500.0
"""
)

SMOKE = (
    _HEADER
    + """
# A seconds-long end-to-end check of an install: a tiny random Llama, 2 layers x 2 epochs, a few test
# prompts, every stage including all three judge tasks (point OPENAI_BASE_URL at any compatible server).
[[models]]
name = "tiny-random"
layers = [1, 2]

[train]
epochs = 2
batch_size = 4
max_pairs = 16
eval_pairs = 8
max_length = 512
warmup_steps = 1

[generate]
multipliers = [-1.0, 0.0, 1.0]
max_prompts = 3
max_new_tokens = 8

[judge]
judge = "openai:gpt-4o-mini"
budget_usd = 1.0
"""
)

TEMPLATES = {"demo": DEMO, "paper": PAPER, "smoke": SMOKE}


def bundled_root() -> Path:
    """The source checkout holding the bundled datasets and rubrics (`data/`, `rubrics/`)."""
    return Path(steertui.__file__).resolve().parents[1]


def render(example: str, behavior: str) -> str:
    return TEMPLATES[example].replace("{behavior}", behavior)
