"""Command line of the training stage, shared by `python -m pipeline.train` and `steertui train`.

With more than one GPU the run is re-launched under `accelerate launch` (FSDP, one process per GPU)
with the shipped config `pipeline/accelerate_fsdp.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FLAGS = {
    "epochs": "train.epochs",
    "max_pairs": "train.max_pairs",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "lr": "train.lr",
    "device": "train.device",
    "dtype": "train.dtype",
    "sign_mode": "train.sign_mode",
    "prompt_format": "train.prompt_format",
    "max_length": "train.max_length",
    "gpus": "train.gpus",
}
ACCELERATE_CONFIG = Path(__file__).with_name("accelerate_fsdp.yaml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="hub id, local directory, .gguf, or alias (smollm2-135m, tiny-random)"
    )
    p.add_argument("--layer", type=int, required=True, help="decoder layer (0-based) whose output is steered")
    p.add_argument("--epochs", type=int, help="training epochs (train.epochs)")
    p.add_argument("--max-pairs", type=int, help="use the first N training pairs (train.max_pairs)")
    p.add_argument("--batch-size", type=int, help="pairs per micro-batch per device (train.batch_size)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (train.grad_accum)")
    p.add_argument("--lr", type=float, help="learning rate (train.lr)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="train.device")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), help="train.dtype")
    p.add_argument("--sign-mode", choices=("batch", "row"), help="random sign per micro-batch or per row")
    p.add_argument("--prompt-format", choices=("chat", "seed"), help='"seed" = the study header-less prompts')
    p.add_argument("--max-length", type=int, help="max prompt + answer tokens (train.max_length)")
    p.add_argument("--gpus", type=int, help="GPUs (> 1 runs FSDP under accelerate launch)")
    p.add_argument("--restart", action="store_true", help="discard this layer's checkpoint and train from scratch")
    p.add_argument("--init-vector", type=Path, help="start from this vector instead of zeros")


def to_argv(args: argparse.Namespace) -> list[str]:
    """The stage's own flags rebuilt from parsed arguments (for re-launching under accelerate)."""
    out = ["--model", args.model, "--layer", str(args.layer)]
    if getattr(args, "workspace", None):
        out += ["--workspace", str(args.workspace)]
    for attr in FLAGS:
        value = getattr(args, attr, None)
        if value is not None and attr != "gpus":
            out += ["--" + attr.replace("_", "-"), str(value)]
    if args.restart:
        out.append("--restart")
    if args.init_vector is not None:
        out += ["--init-vector", str(args.init_vector)]
    if getattr(args, "job_id", None) is not None:
        out += ["--job-id", str(args.job_id)]
    return out


def launch_command(argv: list[str], gpus: int) -> list[str]:
    """The argument list that runs this training under accelerate with `gpus` processes."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
        "--num_processes", str(gpus), "-m", "pipeline.train", *argv,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from pipeline.worker import base_parser, run_worker

    parser = base_parser("python -m pipeline.train", "Train a BiPO steering vector for one (model, layer).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_worker(lambda: run(args), args)


def run(args: argparse.Namespace) -> None:
    import os
    import subprocess

    from pipeline.train import TrainJob, run_train
    from pipeline.worker import reporter_for, resolve_config

    ws, config = resolve_config(args, FLAGS)
    if config.train.gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        code = subprocess.call(launch_command(to_argv(args), config.train.gpus))
        if code:
            raise SystemExit(code)
        return
    job = TrainJob.from_config(ws, config, args.model, args.layer, init_vector=args.init_vector, restart=args.restart)
    with reporter_for(ws, args.job_id) as reporter:
        result = run_train(job, reporter)
        last = {r["eval_multiplier"]: r for r in result.last_metrics}
        if 1.0 in last:
            add = last[1.0]
            reporter.message(
                f"done: {result.epochs_done} epochs in {result.seconds:.0f}s; eval add: loss "
                f"{add['eval_test_dataset_add_loss']:.4f}, accuracy {add['eval_rewards/accuracies']:.3f}, "
                f"margin {add['eval_rewards/margins']:.3f}"
            )
