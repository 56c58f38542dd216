"""Fused norm, rotary and activation kernels for the generation engine on CUDA.

HF's Llama-family layers run RMSNorm as seven elementwise kernels (fp32 round trips of the whole
activation), rotary embedding as about ten, and SiLU-times-up as two. While `fused_layers` is active
those modules and the rotary function use `torch.compile`d versions of the same arithmetic, one
kernel each. Only the classes listed here are touched (their forwards are known to be exactly this
arithmetic); anything else keeps HF's code, and a compile failure falls back to HF's code too.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FAMILIES = ("Llama", "Mistral", "Qwen2", "Qwen3")
NORMS = {f"{f}RMSNorm" for f in FAMILIES}
MLPS = {f"{f}MLP" for f in FAMILIES}
ATTENTIONS = {f"{f}Attention" for f in FAMILIES}


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (_rotate_half(q) * sin), (k * cos) + (_rotate_half(k) * sin)


class _Fused:
    """A compiled function that falls back to its eager self for good if compiling it fails."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.eager = fn
        self.compiled: Callable[..., Any] | None = torch.compile(fn, dynamic=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:
                log.warning("torch.compile of %s failed, using the eager version: %s", self.eager.__name__, exc)
                self.compiled = None
        return self.eager(*args, **kwargs)


@functools.cache
def fused_logprobs() -> _Fused:
    """`target_logprobs` in one pass over the model-dtype logits (no fp32 copy of the whole block)."""
    from pipeline.generate_model import target_logprobs

    return _Fused(target_logprobs)


@functools.cache
def _kernels() -> tuple[_Fused, _Fused, _Fused]:
    return _Fused(_rms), _Fused(_silu_mul), _Fused(_rope)


@contextmanager
def fused_layers(model: Any, enabled: bool = True) -> Iterator[None]:
    """Swap in the fused kernels for the listed module classes of `model` for the duration of a block."""
    if not enabled:
        yield
        return
    rms, silu_mul, rope = _kernels()
    patched: list[Any] = []
    modules: list[Any] = []
    for module in model.modules():
        name = type(module).__name__
        if name in NORMS:
            eps = float(module.variance_epsilon)
            module.forward = lambda x, m=module, e=eps: rms(x, m.weight, e)
            patched.append(module)
        elif name in MLPS and type(module.act_fn).__name__ == "SiLUActivation":
            module.forward = lambda x, m=module: m.down_proj(silu_mul(m.gate_proj(x), m.up_proj(x)))
            patched.append(module)
        elif name in ATTENTIONS:
            mod = sys.modules[type(module).__module__]
            if getattr(mod, "apply_rotary_pos_emb", None) is not None and mod not in modules:
                modules.append(mod)
    originals = [(mod, mod.apply_rotary_pos_emb) for mod in modules]
    for mod, _ in originals:
        mod.apply_rotary_pos_emb = rope
    try:
        yield
    finally:
        for mod, fn in originals:
            mod.apply_rotary_pos_emb = fn
        for module in patched:
            del module.forward
