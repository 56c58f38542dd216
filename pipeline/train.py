"""BiPO steering-vector training (SPEC §4.1): `run_train(job, reporter)` and `python -m pipeline.train`.

One trainable vector `v` (hidden size, zero-initialised, float32) is added to the output of decoder layer
L at every position; base weights stay frozen. Each micro-batch draws a sign d (per batch like the study,
or per row); the reference is the same model with `v` off, computed once before epoch 1 and cached. After
every epoch: add/sub evaluation on the whole test set (study metric keys), the vector saved atomically
with its sidecar, and a checkpoint; an interrupted run resumes from its last finished epoch.

    python -m pipeline.train --workspace . --model tiny-random --layer 1 --epochs 2 --max-pairs 16
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config, TrainConfig
from pipeline.data import load_pairs
from pipeline.errors import Interrupted, VectorError
from pipeline.models import LoadedModel, check_layer, load_model
from pipeline.progress import NullReporter, Reporter
from pipeline.train_dist import init_dist, load_sharded
from pipeline.train_engine import Engine
from pipeline.train_state import (
    CHECKPOINT_NAME,
    Checkpoint,
    append_metrics,
    load_checkpoint,
    save_checkpoint,
    truncate_metrics,
)
from pipeline.vectors import VectorMeta, load_vector, save_vector
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class TrainJob:
    """Everything one (model, layer) training run needs, resolved from the workspace config."""

    root: Path
    behavior: str
    model: str
    layer: int
    system_prompt: str
    train: TrainConfig
    init_vector: Path | None = None
    restart: bool = False

    @classmethod
    def from_config(cls, ws: Workspace, config: Config, model: str, layer: int, **extra: Any) -> TrainJob:
        return cls(ws.root, config.behavior, model, layer, config.system_prompt, config.train, **extra)

    @property
    def ws(self) -> Workspace:
        return Workspace(self.root)

    @property
    def vector_dir(self) -> Path:
        return self.ws.vector_dir(self.behavior, self.model, self.layer)

    def config_hash(self) -> str:
        """What makes two runs the same run (epochs excluded, so a run can be extended)."""
        train = {
            k: v
            for k, v in asdict(self.train).items()
            if k not in ("epochs", "eval_pairs", "device", "gpus", "compile")
        }
        data = [self.ws.train_path(self.behavior), self.ws.test_path(self.behavior)]
        digests = [hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.exists() else "" for p in data]
        blob = json.dumps([self.model, self.layer, self.behavior, self.system_prompt, train, digests], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    epochs_done: int
    vectors: list[Path] = field(default_factory=list)
    last_metrics: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def run_train(job: TrainJob, reporter: Reporter | None = None) -> TrainResult:
    """Train (or resume) the vector for one (model, layer); returns what was written."""
    rep = reporter or NullReporter()
    start = time.monotonic()
    d = init_dist(_device(job))
    device = d.device(_device(job))
    lm = (
        load_sharded(job.model, job.train.dtype, device, d)
        if d.enabled
        else load_model(job.model, device=device, dtype=job.train.dtype)
    )
    check_layer(lm.model, job.layer, job.model)
    train_pairs = load_pairs(job.ws.train_path(job.behavior), limit=job.train.max_pairs)
    test_pairs = load_pairs(job.ws.test_path(job.behavior), limit=job.train.eval_pairs)
    ckpt = _resume_point(job, lm, rep)
    init = load_vector(job.init_vector, hidden_size=lm.hidden_size) if job.init_vector and not ckpt else None
    engine = Engine(lm, job, d, rep)
    engine.prepare(train_pairs, test_pairs)
    vector = torch.nn.Parameter(torch.zeros(lm.hidden_size, dtype=torch.float32, device=lm.device))
    optimizer, scheduler = engine.optimizer(vector)
    first_epoch = 1
    if ckpt is not None:
        vector.data.copy_(ckpt.vector.to(vector.device))
        optimizer.load_state_dict(ckpt.optimizer)
        scheduler.load_state_dict(ckpt.scheduler)
        first_epoch = ckpt.epoch + 1
        engine.global_step = ckpt.global_step
    elif init is not None:
        vector.data.copy_(init.to(vector.device))
    result = TrainResult(epochs_done=first_epoch - 1, resumed_from=first_epoch - 1)
    for epoch in range(first_epoch, job.train.epochs + 1):
        engine.train_epoch(epoch, vector, optimizer, scheduler)
        rows = engine.evaluate(epoch, vector)
        if d.main:
            path = _save_epoch(job, lm, vector, epoch, rows)
            save_checkpoint(
                job.vector_dir / CHECKPOINT_NAME,
                Checkpoint(epoch, engine.global_step, vector.data, optimizer.state_dict(), scheduler.state_dict(),
                           job.config_hash()),
            )  # fmt: skip
            rep.artifact(str(path))
            result.vectors.append(path)
        d.barrier()
        result.epochs_done, result.last_metrics = epoch, rows
        if rep.should_stop() and epoch < job.train.epochs:
            raise Interrupted(f"stopped after epoch {epoch}; rerun to continue")
    result.seconds = time.monotonic() - start
    return result


def _auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _device(job: TrainJob) -> str:
    return _auto_device() if job.train.device == "auto" else job.train.device


def _resume_point(job: TrainJob, lm: LoadedModel, rep: Reporter) -> Checkpoint | None:
    path = job.vector_dir / CHECKPOINT_NAME
    if job.restart:
        path.unlink(missing_ok=True)
        truncate_metrics(job.ws.metrics_path(job.behavior, job.model, job.layer), 0)
        return None
    ckpt = load_checkpoint(path, lm.hidden_size)
    if ckpt is None:
        truncate_metrics(job.ws.metrics_path(job.behavior, job.model, job.layer), 0)
        return None
    if ckpt.config_hash != job.config_hash():
        raise VectorError(
            f"{path}: this layer was trained with different settings or data; "
            "pass --restart to train it again from scratch"
        )
    dropped = truncate_metrics(job.ws.metrics_path(job.behavior, job.model, job.layer), ckpt.epoch)
    rep.message(
        f"resuming after epoch {ckpt.epoch}" + (f" (dropped {dropped} unfinished metric rows)" if dropped else "")
    )
    return ckpt


def _save_epoch(job: TrainJob, lm: LoadedModel, vector: torch.Tensor, epoch: int, rows: list[dict[str, Any]]) -> Path:
    vec = vector.detach().float().cpu()
    path = job.ws.vector_path(job.behavior, job.model, job.layer, epoch)
    meta = VectorMeta(
        model=job.model, layer=job.layer, epoch=epoch, hidden_size=vec.numel(), norm=float(vec.norm()),
        config_hash=job.config_hash(), behavior=job.behavior,
    )  # fmt: skip
    save_vector(path, vec, meta)
    append_metrics(job.ws.metrics_path(job.behavior, job.model, job.layer), rows)
    return path


def metric_row(epoch: int, sign: float, sums: dict[str, float], n: int) -> dict[str, Any]:
    """One `evaluation_metrics.jsonl` row with the study's keys."""
    mean = {k: v / max(n, 1) for k, v in sums.items()}
    loss_key, null_key = (
        ("eval_test_dataset_add_loss", "eval_test_dataset_sub_loss")
        if sign > 0
        else ("eval_test_dataset_sub_loss", "eval_test_dataset_add_loss")
    )
    return {
        loss_key: mean["loss"],
        "eval_rewards/chosen": mean["rewards_chosen"],
        "eval_rewards/rejected": mean["rewards_rejected"],
        "eval_rewards/accuracies": mean["accuracies"],
        "eval_rewards/margins": mean["margins"],
        "eval_logps/rejected": mean["logps_rejected"],
        "eval_logps/chosen": mean["logps_chosen"],
        "eval_logits/rejected": mean["logits_rejected"],
        "eval_logits/chosen": mean["logits_chosen"],
        "eval_multiplier": sign,
        "epoch": epoch,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        null_key: None,
        "eval_rows": n,
    }


def shuffle_signs(seed: int, epoch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + epoch)


def main(argv: list[str] | None = None) -> int:
    from pipeline.train_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
