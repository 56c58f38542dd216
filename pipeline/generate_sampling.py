"""Seeded next-token choice that does not depend on which batch a row is in.

Each row owns a stream of uniforms drawn from its own seed (config seed, test prompt id, multiplier);
step t uses the t-th. Sampling is inverse-CDF over the temperature-scaled distribution, cut to the
top-k tokens and the smallest top-p nucleus: the same distribution as HF's sampling warpers, but a
row's draw is a function of its own logits and seed only, whatever else shares the batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Sampling:
    """Decoding settings for a batch (SPEC §4.2 defaults)."""

    max_new_tokens: int = 100
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0  # 0 = off
    greedy: bool = False
    stop_ids: tuple[int, ...] = ()  # a row ends after emitting one of these (kept in its tokens)


def row_seed(seed: int, prompt_id: int, multiplier: float) -> int:
    """A 64-bit seed per (config seed, test prompt, multiplier)."""
    digest = hashlib.sha256(f"{seed}|{prompt_id}|{float(multiplier)!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def row_uniforms(seeds: list[int], steps: int, device: torch.device) -> torch.Tensor:
    """(rows, steps) uniforms in [0, 1); row i's values depend on seeds[i] alone."""
    table = np.stack([np.random.default_rng(s).random(steps) for s in seeds]) if seeds else np.zeros((0, steps))
    return torch.from_numpy(table).to(device=device, dtype=torch.float32)


def choose_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor, sampling: Sampling, keys: torch.Tensor | None = None
) -> torch.Tensor:
    """Next token per row from fp32 logits (rows, vocab) and one uniform per row.

    `keys` are the logits in the model's own dtype: they order tokens exactly as the fp32 probabilities
    do (temperature does not change the order), and a bf16 sort moves half the bits of an fp32 one.
    """
    if sampling.greedy:
        return logits.argmax(-1)
    probs = (logits / sampling.temperature).softmax(-1)
    # stable: equal logits keep vocabulary order, so ties resolve the same in any batch
    _, order = torch.sort(logits if keys is None else keys, dim=-1, descending=True, stable=True)
    sorted_p = probs.gather(-1, order)
    cdf = sorted_p.cumsum(-1)
    # the kept tokens are a prefix of the sorted order: the top k, and those with less than top_p of
    # the mass strictly ahead of them; sampling within it needs no second, masked cumulative sum
    kept = torch.full_like(order[:, 0], cdf.shape[-1])
    if sampling.top_p < 1.0:
        kept = ((cdf - sorted_p) < sampling.top_p).sum(-1)
    if sampling.top_k > 0:
        kept = kept.clamp(max=sampling.top_k)
    last = (kept - 1)[:, None]
    pick = torch.minimum(torch.searchsorted(cdf, uniforms[:, None] * cdf.gather(-1, last)), last)
    return order.gather(-1, pick)[:, 0]
