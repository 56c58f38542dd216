"""Run a real plan on a multi-GPU machine and record its timeline.

Builds a Llama-shaped model (Llama-3.2-1B dimensions, untied head) with random bf16 weights (no
downloads) as a local model directory,
writes a workspace whose plan trains one layer with FSDP on 2 GPUs and then generates from two epochs,
runs `steertui run --headless --stages train,generate`, and writes the job timeline (from the store's
events and attempts) to `benchmarks/results/gpu_plan.json`.

    python -m benchmarks.gpu_plan --out benchmarks/results/gpu_plan.json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = """behavior = "relationship-seeking"

[[models]]
name = "{model}"
layers = [8]
eval_epochs = [1, 2]
train_gpus = 2

[train]
epochs = 2
batch_size = 4
max_pairs = 64
eval_pairs = 32
max_length = 512
warmup_steps = 2
lr = 0.01

[generate]
max_prompts = 24
max_new_tokens = 64
"""


def build_model(path: Path) -> None:
    import transformers

    from pipeline.tiny_tokenizer import build_tiny_tokenizer

    if (path / "config.json").exists():
        return
    tok = build_tiny_tokenizer()
    config = transformers.LlamaConfig(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    del model
    torch.cuda.empty_cache()


def timeline(ws: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(ws / ".steertui/state.db")
    conn.row_factory = sqlite3.Row
    rows = conn.execute(
        "SELECT j.cell, j.state, j.gpus, a.attempt, a.started_at, a.ended_at, a.exit_code FROM job_attempts a "
        "JOIN jobs j ON j.id = a.job_id ORDER BY a.started_at"
    )
    t0 = None
    out = []
    for r in rows:
        t0 = t0 or r["started_at"]
        out.append({
            "cell": r["cell"], "state": r["state"], "gpus": json.loads(r["gpus"] or "[]"), "attempt": r["attempt"],
            "start_s": round(r["started_at"] - t0, 1),
            "end_s": round(r["ended_at"] - t0, 1) if r["ended_at"] else None, "exit_code": r["exit_code"],
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llama8b-random"))
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/gpu-plan"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/gpu_plan.json")
    parser.add_argument("--timeout", type=float, default=280.0, help="seconds before the plan run is abandoned")
    args = parser.parse_args()
    start = time.monotonic()
    # Build in a child process: a CUDA context left in this process would show in NVML as a foreign
    # process on GPU 0, and the scheduler (rightly) does not lease such a GPU.
    subprocess.run([sys.executable, "-c", f"from benchmarks.gpu_plan import build_model; from pathlib import Path; "
                    f"build_model(Path({str(args.model_dir)!r}))"], check=True)  # fmt: skip
    built = time.monotonic() - start
    ws = args.workspace
    subprocess.run([sys.executable, "-m", "steertui", "init", str(ws), "--example", "smoke", "--force"], check=True)
    (ws / "steertui.toml").write_text(CONFIG.format(model=args.model_dir))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "steertui", "run", "--headless", "--stages", "train,generate", "--workspace", str(ws)]
    try:
        code = subprocess.run(cmd, env=env, text=True, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        code = -1  # recorded; the timeline below shows where it stood
    result = {
        "card": subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], text=True, capture_output=True
        ).stdout.split("\n")[0],
        "gpus": len(subprocess.run(["nvidia-smi", "-L"], text=True, capture_output=True).stdout.splitlines()),
        "model": "Llama-shaped (Llama-3.2-1B dimensions, untied head), random bf16 weights",
        "build_model_s": round(built, 1),
        "plan_wall_s": round(time.monotonic() - t0, 1),
        "exit_code": code,
        "timeline": timeline(ws),
        "logs_tail": {p.name: p.read_text()[-1500:] for p in sorted((ws / "logs").glob("*.log"))},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "logs_tail"}, indent=2), flush=True)


if __name__ == "__main__":
    main()
