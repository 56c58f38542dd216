"""Bring vectors in from the study's released layout and out to llama.cpp control vectors.

Import reads `vector/<behavior>_<model>/layer<L>/vec_ep<E>_layer<L>_gpu<r>.pt` plus
`evaluation_metrics.jsonl` and writes the workspace layout (`vec_ep<E>_layer<L>.pt` + sidecar, metrics
with ISO timestamps). Import is idempotent: vectors already present and identical are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import VectorError
from pipeline.files import atomic_write_text, dumps_row, iter_jsonl
from pipeline.timestamps import normalise_timestamp
from pipeline.vectors import VectorMeta, is_complete, load_vector, parse_vector_name, read_meta, save_vector
from pipeline.workspace import Workspace

RUN_DIR = re.compile(r"^(?P<behavior>[^_]+)_(?P<model>.+)$")


@dataclass
class ImportResult:
    imported: int = 0
    skipped: int = 0
    metrics_rows: int = 0
    runs: list[str] = field(default_factory=list)
    hidden_sizes: set[int] = field(default_factory=set)


def find_runs(src: Path) -> list[Path]:
    """`<behavior>_<model>` directories at or below `src` (the run dir itself, or a `vector/` dir)."""
    if not src.is_dir():
        raise VectorError(f"{src}: not a directory; pass vector/<behavior>_<model> or its parent")
    candidates = [src] if list(src.glob("layer*/vec_ep*_layer*.pt")) else sorted(src.iterdir())
    runs = [p for p in candidates if p.is_dir() and RUN_DIR.match(p.name) and list(p.glob("layer*/vec_ep*.pt"))]
    if not runs:
        raise VectorError(f"{src}: no vec_ep<E>_layer<L>*.pt files under <behavior>_<model>/layer<L>/")
    return runs


def import_study(src: Path, ws: Workspace) -> ImportResult:
    result = ImportResult()
    for run in find_runs(src):
        match = RUN_DIR.match(run.name)
        assert match is not None
        behavior, model = match.group("behavior"), match.group("model")
        result.runs.append(run.name)
        for layer_dir in sorted(run.glob("layer*")):
            _import_layer(layer_dir, behavior, model, ws, result)
    return result


def _import_layer(layer_dir: Path, behavior: str, model: str, ws: Workspace, result: ImportResult) -> None:
    layer: int | None = None
    for path in sorted(layer_dir.glob("vec_ep*_layer*.pt")):
        parsed = parse_vector_name(path.name)
        if parsed is None:
            continue
        epoch, layer = parsed
        vec = load_vector(path)
        if vec.numel() == 0:
            continue  # an empty FSDP shard from the study's non-holding ranks
        result.hidden_sizes.add(vec.numel())
        dest = ws.vector_path(behavior, model, layer, epoch)
        if is_complete(dest) and torch.equal(load_vector(dest), vec):
            result.skipped += 1
            continue
        meta = VectorMeta(
            model=model, layer=layer, epoch=epoch, hidden_size=vec.numel(), norm=float(vec.norm()),
            config_hash="study", behavior=behavior, source=str(path),
        )  # fmt: skip
        save_vector(dest, vec, meta)
        result.imported += 1
    metrics = layer_dir / "evaluation_metrics.jsonl"
    if layer is not None and metrics.is_file():
        rows = [normalise_metrics_row(r) for r in iter_jsonl(metrics)]
        text = "".join(dumps_row(r) + "\n" for r in rows)
        atomic_write_text(ws.metrics_path(behavior, model, layer), text)
        result.metrics_rows += len(rows)


def normalise_metrics_row(row: dict[str, Any]) -> dict[str, Any]:
    """ISO `timestamp` (raw value kept in `timestamp_raw` with its precision)."""
    out = dict(row)
    iso, precision = normalise_timestamp(row.get("timestamp"))
    if iso is not None and iso != row.get("timestamp"):
        out["timestamp_raw"] = row.get("timestamp")
        out["timestamp"] = iso
    out["timestamp_precision"] = precision
    return out


def export_gguf(path: Path, out: Path, *, scale: float = 1.0, model_hint: str = "llama") -> Path:
    """Write a llama.cpp control vector (`--control-vector out.gguf`): tensor `direction.<L>`.

    llama.cpp adds `direction.N` to the output of block N (0-based) and reserves N = 0, so a vector at
    decoder layer L is written as `direction.L`, and layer 0 cannot be exported.
    """
    import gguf

    meta = read_meta(path) or {}
    parsed = parse_vector_name(path.name)
    layer = int(meta.get("layer", parsed[1] if parsed else -1))
    if layer < 1:
        raise VectorError(f"{path}: llama.cpp control vectors cannot steer layer {layer}; it needs layer >= 1")
    vec = (load_vector(path) * scale).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", 1)
    writer.add_tensor(f"direction.{layer}", vec)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out
