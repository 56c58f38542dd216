"""Training state that survives crashes: the per-epoch checkpoint, metric rows, and the reference cache.

Order after each epoch: vector (atomic) -> metric rows (append) -> checkpoint (atomic). On resume, metric
rows newer than the checkpoint are dropped first, so a crash between the last two steps never leaves a
duplicate row. The reference log-probs depend only on the model, dtype and tokens, so they are cached
on disk under a content hash and shared by every layer of a model.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import VectorError
from pipeline.files import append_jsonl, atomic_write_bytes, atomic_write_text, dumps_row, iter_jsonl
from pipeline.train_data import Example

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class Checkpoint:
    epoch: int
    global_step: int
    vector: torch.Tensor
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    config_hash: str


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    buf = io.BytesIO()
    torch.save(
        {
            "epoch": ckpt.epoch,
            "global_step": ckpt.global_step,
            "vector": ckpt.vector.detach().cpu().float(),
            "optimizer": ckpt.optimizer,
            "scheduler": ckpt.scheduler,
            "config_hash": ckpt.config_hash,
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, hidden_size: int) -> Checkpoint | None:
    """The last finished epoch's state, or None; a vector of the wrong size is refused."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file
        raise VectorError(
            f"{path}: unreadable training checkpoint ({type(exc).__name__}); delete it to restart"
        ) from None
    vec = data.get("vector")
    if not isinstance(vec, torch.Tensor) or vec.ndim != 1 or vec.numel() != hidden_size:
        shape = tuple(vec.shape) if isinstance(vec, torch.Tensor) else type(vec).__name__
        raise VectorError(
            f"{path}: checkpoint vector has shape {shape}, the model's hidden size is {hidden_size}; "
            "it belongs to another model: delete it or use --restart"
        )
    return Checkpoint(
        epoch=int(data["epoch"]),
        global_step=int(data["global_step"]),
        vector=vec,
        optimizer=data["optimizer"],
        scheduler=data["scheduler"],
        config_hash=str(data["config_hash"]),
    )


def truncate_metrics(path: Path, last_epoch: int) -> int:
    """Keep metric rows of epochs <= last_epoch (atomic rewrite); returns rows dropped."""
    if not path.exists():
        return 0
    rows = list(iter_jsonl(path))
    keep = [r for r in rows if int(r.get("epoch", 0)) <= last_epoch]
    if len(keep) != len(rows) or path.read_bytes().count(b"\n") != len(rows):
        atomic_write_text(path, "".join(dumps_row(r) + "\n" for r in keep))
    return len(rows) - len(keep)


def append_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    append_jsonl(path, rows)


def examples_digest(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.prompt, e.chosen, e.rejected]).encode())
    return h.hexdigest()[:16]


def reference_cache_path(cache_dir: Path, model: str, dtype: torch.dtype, digest: str) -> Path:
    key = hashlib.sha256(f"{model}|{dtype}|{digest}".encode()).hexdigest()[:20]
    return cache_dir / "reference" / f"{key}.pt"


def load_reference(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    chosen, rejected = data.get("chosen"), data.get("rejected")
    if not isinstance(chosen, torch.Tensor) or not isinstance(rejected, torch.Tensor) or chosen.numel() != n:
        return None
    return chosen, rejected


def save_reference(path: Path, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
    buf = io.BytesIO()
    torch.save({"chosen": chosen.cpu(), "rejected": rejected.cpu()}, buf)
    atomic_write_bytes(path, buf.getvalue())
