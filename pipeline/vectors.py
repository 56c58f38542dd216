"""Steering-vector files (SPEC §5.2): atomic save with a JSON sidecar, safe load, study import.

A vector is a bare float32 1-D tensor in `vec_ep<E>_layer<L>.pt` (loadable with
`torch.load(weights_only=True)`, like the study's files) next to `vec_ep<E>_layer<L>.json` holding
model, layer, epoch, hidden size, dtype, norm, hook site and the training-config hash.
A vector counts as saved only when both files exist and agree (`is_complete`).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import VectorError
from pipeline.files import atomic_write_bytes, atomic_write_json

HOOK_SITE = "decoder_layer_output"
STUDY_NAME = re.compile(r"^vec_ep(\d+)_layer(\d+)(?:_gpu(\d+))?\.pt$")


@dataclass(frozen=True)
class VectorMeta:
    model: str
    layer: int
    epoch: int
    hidden_size: int
    norm: float
    dtype: str = "float32"
    hook_site: str = HOOK_SITE
    config_hash: str = ""
    behavior: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    source: str = ""  # set when imported from elsewhere

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_vector(path: Path, vector: torch.Tensor, meta: VectorMeta) -> None:
    """Write tensor then sidecar, each atomically; a crash between leaves an incomplete (redone) vector."""
    vec = vector.detach().to("cpu", torch.float32).contiguous().clone()
    if vec.ndim != 1:
        raise VectorError(f"{path}: a steering vector must be 1-D, got shape {tuple(vec.shape)}")
    buf = io.BytesIO()
    torch.save(vec, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(sidecar_path(path), meta.to_json())


def load_vector(path: Path, *, hidden_size: int | None = None) -> torch.Tensor:
    """Load without unpickling code (`weights_only=True`, or safetensors); check shape and finiteness."""
    if not path.is_file():
        raise VectorError(f"{path}: vector file not found; train this epoch first or check --epoch")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            obj: Any = next(iter(tensors.values())) if len(tensors) == 1 else None
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        raise VectorError(f"{path}: cannot load as a tensor ({type(exc).__name__}); is it a vector file?") from None
    if not isinstance(obj, torch.Tensor) or obj.ndim != 1:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise VectorError(f"{path}: expected a 1-D tensor, got {shape}")
    vec = obj.to(torch.float32)
    if not torch.isfinite(vec).all():
        raise VectorError(f"{path}: vector holds NaN or inf values")
    if hidden_size is not None and vec.numel() != hidden_size:
        raise VectorError(
            f"{path}: vector size {vec.numel()} does not match the model's hidden size {hidden_size}; "
            "use a vector trained for this model"
        )
    return vec


def read_meta(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def is_complete(path: Path) -> bool:
    """Tensor and sidecar both present, and the sidecar's norm matches the tensor."""
    meta = read_meta(path)
    if meta is None or not path.is_file():
        return False
    try:
        vec = load_vector(path)
    except VectorError:
        return False
    return math.isclose(float(vec.norm()), float(meta.get("norm", -1.0)), rel_tol=1e-4, abs_tol=1e-6)


def vector_info(path: Path) -> dict[str, Any]:
    """What `steertui vector info` shows."""
    vec = load_vector(path)
    info: dict[str, Any] = {
        "path": str(path),
        "hidden_size": vec.numel(),
        "dtype": "float32",
        "norm": round(float(vec.norm()), 6),
        "mean": round(float(vec.mean()), 6),
        "max_abs": round(float(vec.abs().max()), 6),
    }
    meta = read_meta(path)
    if meta:
        info.update({k: v for k, v in meta.items() if k not in info})
    else:
        match = STUDY_NAME.match(path.name)
        if match:
            info.update({"epoch": int(match.group(1)), "layer": int(match.group(2))})
    return info


def parse_vector_name(name: str) -> tuple[int, int] | None:
    """(epoch, layer) from `vec_ep<E>_layer<L>[_gpu<r>].pt`."""
    match = STUDY_NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None
