"""Model-level pieces of the batched generation engine (`pipeline.generate_engine`).

- `Stack`: runs a Llama-family causal LM layer by layer, so the layers up to the steering layer can run
  once per prompt and the layers above it once per (prompt, multiplier) row. It calls the model's own
  decoder-layer modules with explicit 4-D masks and position ids; `check_stack` proves on a
  tiny input that this reproduces the model's own forward (a model family that differs, e.g. Gemma's
  scaled embeddings, is refused rather than silently mis-generated).
- `SlotCache`: a preallocated K/V cache written at explicit slots (prefill chunks into their rows,
  one decode slot per step), so nothing is concatenated or copied per step.
- `gqa_decode_attention`: the model's attention function while the engine runs; decode steps go to
  `pipeline.generate_kernels.decode_attention`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from pipeline.errors import ModelLoadError
from pipeline.generate_kernels import decode_attention
from pipeline.models import cache_kwarg, decoder_layers

ATTN_NAME = "steertui_gqa"
LOGIT_CHUNK = 2048  # positions per lm_head call when scoring: bounds the (chunk, vocab) fp32 buffer


def gqa_decode_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Decode steps (`steertui_decode` = (start, end) slots) go to `decode_attention`; the rest to HF's SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.pop("steertui_decode", None)
    if bounds is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    start, end = bounds[0].to(query.device), bounds[1].to(query.device)  # no-ops on one device
    return decode_attention(query, key, value, start, end, scale), None


_registered = False


@contextmanager
def engine_attention(model: Any) -> Iterator[None]:
    """Route the model's attention through `gqa_decode_attention` for the duration of a block.

    SDPA may not pick cuDNN there: it builds a plan for each new shape (55 ms each on an H200, 1.3 s
    for the first), and every prefill/score chunk has a new shape; the memory-efficient kernel needs
    no plan and ran as fast once warm.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_NAME, gqa_decode_attention)
        _registered = True
    before = model.config._attn_implementation
    model.config._attn_implementation = ATTN_NAME
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    try:
        with sdpa_kernel(backends):
            yield
    finally:
        model.config._attn_implementation = before


class SlotCache:
    """K/V buffers (rows, kv_heads, slots, head_dim) per layer, written where `prefill`/`decode` point.

    During a prefill the attention sees only the chunk's own K/V (there is nothing before it), so only
    its first `keep` positions (the prompt) are stored; the layers run on unique prompts store each
    prompt's K/V into every row that shares it (`expand`).
    """

    def __init__(self, rows: int, slots: int) -> None:
        self.rows, self.slots = rows, slots
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self._rows = slice(0)
        self._start = 0
        self._expand: torch.Tensor | None = None
        self._keep = 0
        self._decode = False
        self._slot: torch.Tensor | None = None

    def prefill(self, rows: slice, start: int, keep: int, expand: torch.Tensor | None) -> None:
        self._rows, self._start, self._keep, self._expand, self._decode = rows, start, keep, expand, False

    def decode(self, slot: torch.Tensor) -> None:
        """Decode mode: write each layer's new K/V at `slot` (a 1-element device tensor, so graphs replay)."""
        self._slot, self._decode = slot, True

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *_: Any, **__: Any) -> tuple[Any, Any]:
        kbuf, vbuf = self._buffers(layer_idx, key)
        if self._decode:
            assert self._slot is not None
            slot = self._slot.to(kbuf.device)  # a no-op unless the layers are spread over devices
            kbuf.index_copy_(2, slot, key)
            vbuf.index_copy_(2, slot, value)
            return kbuf, vbuf  # the attention reads each row's valid slots only (`decode_attention`)
        end = self._start + self._keep
        n_rows = self._rows.stop - self._rows.start
        key_keep, value_keep = key[:, :, : self._keep], value[:, :, : self._keep]
        if key.shape[0] != n_rows:
            if self._expand is None:
                raise RuntimeError(f"cache got {key.shape[0]} rows for a chunk of {n_rows}")
            idx = self._expand.to(key.device)
            key_keep, value_keep = key_keep.index_select(0, idx), value_keep.index_select(0, idx)
        kbuf[self._rows, :, self._start : end] = key_keep
        vbuf[self._rows, :, self._start : end] = value_keep
        return key, value

    def _buffers(self, layer_idx: int, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx not in self.keys:
            # zeros, not empty: masked slots are multiplied by an exact 0 weight, and 0 * NaN would be NaN
            shape = (self.rows, key.shape[1], self.slots, key.shape[3])
            self.keys[layer_idx] = torch.zeros(shape, dtype=key.dtype, device=key.device)
            self.values[layer_idx] = torch.zeros(shape, dtype=key.dtype, device=key.device)
        return self.keys[layer_idx], self.values[layer_idx]


class Stack:
    """Embedding, decoder layers, final norm and head of a Llama-family CausalLM, driven explicitly."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers = decoder_layers(model)
        try:
            base = model.model
            self.embed, self.norm, self.rotary = base.embed_tokens, base.norm, base.rotary_emb
        except AttributeError:
            raise ModelLoadError(
                f"{model.config.model_type}: steered generation needs a Llama-style model (embed_tokens, layers, "
                "norm, rotary_emb)"
            ) from None
        self.head = model.get_output_embeddings()
        self.num_layers = len(self.layers)
        self._cache_kw = cache_kwarg(self.layers[0]) if self.num_layers else "past_key_values"
        self.logprob_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = target_logprobs

    @property
    def device(self) -> torch.device:
        return torch.device(self.embed.weight.device)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.embed(ids.to(self.device)))

    def rope(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.rotary(hidden, positions.to(hidden.device))
        return cos, sin

    def run(
        self,
        hidden: torch.Tensor,
        lo: int,
        hi: int,
        *,
        mask: torch.Tensor | None,
        positions: torch.Tensor,
        cache: SlotCache | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        decode: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Decoder layers [lo, hi) on `hidden` (rows, T, H) with a (rows, 1, T, K) boolean mask.

        A decode step passes `decode` = (first valid slot per row, end slot) instead of a mask.
        """
        rope = rope if rope is not None else self.rope(hidden, positions)
        extra: dict[str, Any] = {"steertui_decode": decode} if decode is not None else {}
        extra[self._cache_kw] = cache
        for layer in self.layers[lo:hi]:
            out = layer(
                hidden,
                attention_mask=mask,
                position_ids=positions,
                use_cache=cache is not None,
                position_embeddings=rope,
                **extra,
            )
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 next-token logits for final-layer hidden states (N, H)."""
        return self.raw_logits(hidden).float()

    def raw_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits in the head's dtype."""
        return torch.as_tensor(self.head(self.norm(hidden)))

    def token_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(targets[i] | position i) for hidden (N, H), in fp32, without a (N, vocab) buffer."""
        out = []
        for s in range(0, hidden.shape[0], LOGIT_CHUNK):
            raw = self.raw_logits(hidden[s : s + LOGIT_CHUNK])
            out.append(self.logprob_fn(raw, targets[s : s + LOGIT_CHUNK].to(raw.device)))
        if not out:
            return torch.zeros(0)
        return torch.cat(out)


def target_logprobs(raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 log-softmax of model-dtype logits (N, vocab), at one target per row."""
    logits = raw.float()
    return logits.gather(-1, targets[:, None])[:, 0] - logits.logsumexp(-1)


def doc_mask(valid: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 1, T, T) mask: causal, valid keys only, and a segment s > 0 sees only segment 0 and itself.

    Every query also sees itself, so padding queries never have an all-masked row (SDPA would give NaN).
    """
    n, t = valid.shape
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    mask = causal[None] & valid[:, None, :]
    if seg is not None:
        mask &= (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
    mask |= torch.eye(t, dtype=torch.bool, device=valid.device)[None]
    return mask[:, None]


def check_stack(stack: Stack, pad_id: int) -> None:
    """Refuse a model whose own forward the explicit layer loop does not reproduce."""
    model = stack.model
    vocab = int(stack.head.weight.shape[0])
    ids = (torch.arange(14).reshape(2, 7) * 37 + 11) % max(vocab - 1, 1)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, :2] = False
    ids[1, :2] = pad_id
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0).to(stack.device)
    ids = ids.to(stack.device)
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=valid.long().to(stack.device), position_ids=positions).logits.float()
        with engine_attention(model):
            hidden = stack.embed_ids(ids)
            mask = doc_mask(valid).to(stack.device)
            hidden = stack.run(hidden, 0, stack.num_layers, mask=mask, positions=positions, cache=None)
            mine = stack.logits(hidden)
    keep = valid.to(ref.device)
    ref, mine = ref.log_softmax(-1)[keep], mine.to(ref.device).log_softmax(-1)[keep]
    tol = 1e-3 if stack.embed.weight.dtype == torch.float32 else 0.25
    err = float((ref - mine).abs().max())
    if not err <= tol:
        raise ModelLoadError(
            f"{model.config.model_type}: the batched generation engine does not reproduce this model's forward "
            f"(max log-prob error {err:.3g}); steered generation supports Llama-style models (llama, mistral, "
            "qwen2, qwen3, olmo2)"
        )
