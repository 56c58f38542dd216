"""Log-probs of packed DPO pairs under steering, split at the steering layer.

The vector is added to the output of layer L, so layers 0..L never see it: `prefix` runs them once per
example with the vector off and caches their output; every training step then runs only layers
L+1..N from `h_L + d·v` (`upper`), and projects to the vocabulary only at response positions. The same
prefix pass yields the reference log-probs (vector off), so no second model copy is needed.

Fast path for Llama-style decoders (llama, mistral, qwen2, qwen3: no embedding scaling or logit
soft-capping); `HookedForward` covers other architectures through the steering hook.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from pipeline.models import decoder_layers
from pipeline.steering import Steering
from pipeline.train_data import PackedBatch, sequence_logps

FAST_TYPES = ("llama", "mistral", "qwen2", "qwen3")

LogpOut = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # chosen, rejected, mean logits c, r


def supports_split(model: Any) -> bool:
    return getattr(model.config, "model_type", "") in FAST_TYPES


def attention_mask_for(model: Any, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool (True = attend) for SDPA/flex; additive float for eager attention."""
    if getattr(model.config, "_attn_implementation", "sdpa") == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


class SplitForward:
    """Runs a Llama-style model in two parts around the steering layer."""

    def __init__(self, model: Any, layer: int, *, gradient_checkpointing: bool = False, compile: bool = False) -> None:
        self.model = model
        self.layer = layer
        self.inner = model.model
        self.layers = decoder_layers(model)
        self.lm_head = model.get_output_embeddings()
        self.checkpointing = gradient_checkpointing
        upper = list(self.layers[layer + 1 :])
        self.upper_blocks = [torch.compile(b, dynamic=True) for b in upper] if compile else upper

    def _run(self, layers: Any, h: torch.Tensor, batch: PackedBatch, mask: torch.Tensor) -> torch.Tensor:
        pe = self.inner.rotary_emb(h, position_ids=batch.position_ids)
        for block in layers:
            if self.checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, mask, batch.position_ids, None, False, pe, use_reentrant=False)
            else:
                h = block(h, attention_mask=mask, position_ids=batch.position_ids, position_embeddings=pe)
        return h

    @torch.no_grad()
    def prefix(self, batch: PackedBatch) -> torch.Tensor:
        """Output of layer L with the vector off: (B, T, H)."""
        h = self.inner.embed_tokens(batch.input_ids)
        mask = attention_mask_for(self.model, batch.mask(), h.dtype)
        return self._run(self.layers[: self.layer + 1], h, batch, mask)

    def upper(self, h_layer: torch.Tensor, batch: PackedBatch, delta: torch.Tensor | None) -> LogpOut:
        """Response log-probs from layer L's output plus `delta` ((B, 1, H) or None for the reference)."""
        h = h_layer if delta is None else h_layer + delta.to(h_layer.dtype)
        mask = attention_mask_for(self.model, batch.mask(), h.dtype)
        h = self._run(self.upper_blocks, h, batch, mask)
        h = self.inner.norm(h)
        return self._logps(h, batch, with_logits=not torch.is_grad_enabled())

    def _logps(self, h: torch.Tensor, batch: PackedBatch, *, with_logits: bool = True) -> LogpOut:
        rows = torch.arange(h.shape[0], device=h.device)[:, None]
        logits_c = self.lm_head(h[rows, batch.chosen_pos])
        logits_r = self.lm_head(h[rows, batch.rejected_pos])
        lc, mc = sequence_logps(logits_c, batch.chosen_tok, batch.chosen_mask, with_mean=with_logits)
        lr, mr = sequence_logps(logits_r, batch.rejected_tok, batch.rejected_mask, with_mean=with_logits)
        return lc, lr, mc, mr

    @torch.no_grad()
    def reference(self, batch: PackedBatch) -> tuple[torch.Tensor, LogpOut]:
        """(layer-L output, reference log-probs) in one pass with the vector off."""
        h = self.prefix(batch)
        return h, self.upper(h, batch, None)


class HookedForward:
    """Any supported architecture: a full forward with the steering hook (no prefix caching)."""

    def __init__(self, model: Any, layer: int, vector: torch.Tensor) -> None:
        self.model = model
        self.steering = Steering(model, layer, vector)
        self.lm_head = model.get_output_embeddings()

    def logps(self, batch: PackedBatch, multipliers: torch.Tensor | float) -> LogpOut:
        self.steering.set_multipliers(multipliers)
        self.steering.install()
        try:
            mask = attention_mask_for(self.model, batch.mask(), self.model.dtype)
            kinds = set(getattr(self.model.config, "layer_types", None) or ["full_attention"])
            # A 4D mask is used as given; models with several attention kinds take one per kind.
            given: Any = mask if kinds == {"full_attention"} else dict.fromkeys(kinds, mask)
            out = self.model.model(input_ids=batch.input_ids, attention_mask=given, position_ids=batch.position_ids)
        finally:
            self.steering.remove()
        h = out.last_hidden_state
        rows = torch.arange(h.shape[0], device=h.device)[:, None]
        lc, mc = sequence_logps(self._logits(h[rows, batch.chosen_pos]), batch.chosen_tok, batch.chosen_mask)
        lr, mr = sequence_logps(self._logits(h[rows, batch.rejected_pos]), batch.rejected_tok, batch.rejected_mask)
        return lc, lr, mc, mr

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.lm_head(h)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits
