"""The steering primitive: add `m[i] * v` to the residual stream after one decoder layer.

`m` holds one multiplier per batch row, so a single batch can mix multipliers (generation, chat
side-by-side) or signs (BiPO training). The hook adds at every position of every forward pass, which is
what BiPO trains and what the study generated with, and stays correct under HF `generate` with a KV cache
and left padding (padding positions are masked out of attention, so what is added there is never read).
Hook site: the output hidden states of `model.layers[L]` (0-based), recorded in vector sidecars.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from pipeline.errors import VectorError
from pipeline.models import decoder_layers, hidden_size

HOOK_SITE = "decoder_layer_output"


class Steering:
    """A vector hooked onto one layer; set multipliers per forward with `set_multipliers`."""

    def __init__(self, model: Any, layer: int, vector: torch.Tensor) -> None:
        layers = decoder_layers(model)
        if not 0 <= layer < len(layers):
            raise VectorError(f"layer {layer} does not exist; the model has layers 0..{len(layers) - 1}")
        expected = hidden_size(model)
        if vector.ndim != 1 or vector.numel() != expected:
            raise VectorError(
                f"vector has shape {tuple(vector.shape)} but the model's hidden size is {expected}; "
                "use a vector trained for this model"
            )
        self.model = model
        self.layer = layer
        self.module = layers[layer]
        self.vector = vector
        self._multipliers: torch.Tensor | float = 0.0
        self._handle: Any = None

    def set_multipliers(self, multipliers: float | Sequence[float] | torch.Tensor) -> None:
        """One float for every row, or one per batch row."""
        if isinstance(multipliers, int | float):
            self._multipliers = float(multipliers)
        else:
            self._multipliers = torch.as_tensor(multipliers, dtype=torch.float32)

    def install(self) -> None:
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def delta(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """What is added to `hidden` (B, T, H); None when every multiplier is zero."""
        mult = self._multipliers
        vec = self.vector.to(hidden.device)
        if isinstance(mult, float):
            if mult == 0.0:
                return None
            return (mult * vec).to(hidden.dtype)
        if mult.shape[0] != hidden.shape[0]:
            raise VectorError(f"{mult.shape[0]} multipliers for a batch of {hidden.shape[0]} rows")
        if not torch.any(mult != 0):
            return None
        m = mult.to(device=hidden.device, dtype=vec.dtype)
        return (m[:, None, None] * vec[None, None, :]).to(hidden.dtype)

    def _hook(self, module: Any, inputs: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        add = self.delta(hidden)
        if add is None:
            return output
        steered = hidden + add
        if isinstance(output, tuple):
            return (steered, *output[1:])
        return steered


@contextmanager
def steer(
    model: Any, layer: int, vector: torch.Tensor, multipliers: float | Sequence[float] | torch.Tensor = 1.0
) -> Iterator[Steering]:
    """Install a steering hook for the duration of a `with` block."""
    steering = Steering(model, layer, vector)
    steering.set_multipliers(multipliers)
    steering.install()
    try:
        yield steering
    finally:
        steering.remove()
