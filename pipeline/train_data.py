"""Tokenise DPO pairs for BiPO and pack each pair as one sequence: [prompt | chosen | rejected].

Packing runs the shared prompt once for both answers: a custom attention mask stops rejected tokens
from seeing chosen ones and restarts their positions after the prompt, so each answer's log-prob
equals what a separate `prompt + answer` sequence would give (causal attention makes the prompt's
states identical for both). Log-probs sum over response tokens, end-of-turn included (SPEC §4.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pipeline.chat import encode_prompt, encode_response, render_prompt
from pipeline.data import DPOPair
from pipeline.errors import DataError

PAD_SEGMENT = 3


@dataclass(frozen=True)
class Example:
    """One tokenised pair."""

    prompt_id: int
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]

    @property
    def packed_len(self) -> int:
        return len(self.prompt) + len(self.chosen) + len(self.rejected)


@dataclass
class TokenizeReport:
    truncated: int = 0
    longest: int = 0


def tokenize_pairs(
    tokenizer: Any,
    pairs: Sequence[DPOPair],
    *,
    system_prompt: str,
    prompt_format: Literal["chat", "seed"],
    max_length: int,
    truncation: Literal["warn", "reject"],
) -> tuple[list[Example], TokenizeReport]:
    """Examples with prompt + each answer <= max_length tokens (prompt cut from its start, as TRL's keep_end)."""
    out: list[Example] = []
    report = TokenizeReport()
    for pair in pairs:
        text = render_prompt(tokenizer, pair.messages(), system_prompt=system_prompt, prompt_format=prompt_format)
        prompt = encode_prompt(tokenizer, text)
        chosen = encode_response(tokenizer, pair.chosen)
        rejected = encode_response(tokenizer, pair.rejected)
        longest = len(prompt) + max(len(chosen), len(rejected))
        report.longest = max(report.longest, longest)
        if longest > max_length:
            if truncation == "reject":
                raise DataError(
                    f"prompt_id {pair.prompt_id}: {longest} tokens is over train.max_length = {max_length}; "
                    'raise max_length or set train.truncation = "warn" to cut long prompts'
                )
            prompt, chosen, rejected = _truncate(prompt, chosen, rejected, max_length)
            report.truncated += 1
        out.append(Example(pair.prompt_id, tuple(prompt), tuple(chosen), tuple(rejected)))
    return out, report


def _truncate(prompt: list[int], chosen: list[int], rejected: list[int], limit: int) -> tuple[list[int], ...]:
    answer = max(len(chosen), len(rejected))
    keep_prompt = max(1, limit - answer)
    prompt = prompt[-keep_prompt:]
    room = max(1, limit - len(prompt))
    return prompt, chosen[:room], rejected[:room]


@dataclass
class PackedBatch:
    """Tensors for a micro-batch of packed pairs; shapes use B rows and T packed positions."""

    input_ids: torch.Tensor  # (B, T) right-padded
    position_ids: torch.Tensor  # (B, T) rejected restarts after the prompt
    segment: torch.Tensor  # (B, T) 0 prompt, 1 chosen, 2 rejected, 3 padding
    # Response tokens and the positions whose next-token logits predict them.
    chosen_pos: torch.Tensor  # (B, Rc) index into T of the predicting position
    chosen_tok: torch.Tensor  # (B, Rc)
    chosen_mask: torch.Tensor  # (B, Rc) bool
    rejected_pos: torch.Tensor  # (B, Rr)
    rejected_tok: torch.Tensor
    rejected_mask: torch.Tensor
    row_index: torch.Tensor  # (B,) index of each example in its dataset (for cached reference values)

    def to(self, device: torch.device | str) -> PackedBatch:
        """Copy to `device`; pinned first for CUDA so the copy never waits for queued kernels."""
        pin = str(device).startswith("cuda")
        moved = {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in vars(self).items()}
        return PackedBatch(**moved)

    def mask(self) -> torch.Tensor:
        """(B, 1, T, T) bool, True = may attend: causal in packed order, rejected never sees chosen,
        nothing sees padding, and padded queries see themselves (so no softmax row is empty)."""
        seg = self.segment
        t = seg.shape[1]
        ar = torch.arange(t, device=seg.device)
        allowed = (ar[None, :] <= ar[:, None])[None] & (seg != PAD_SEGMENT)[:, None, :]
        allowed &= ~((seg == 2)[:, :, None] & (seg == 1)[:, None, :])
        allowed |= torch.eye(t, dtype=torch.bool, device=seg.device)[None]
        return allowed[:, None]


def collate(examples: Sequence[Example], indices: Sequence[int], pad_id: int) -> PackedBatch:
    """Pack examples into right-padded tensors with block-causal masks."""
    seq_len = max(e.packed_len for e in examples)
    max_c = max(len(e.chosen) for e in examples)
    max_r = max(len(e.rejected) for e in examples)
    b = len(examples)
    ids = torch.full((b, seq_len), pad_id, dtype=torch.long)
    pos = torch.zeros((b, seq_len), dtype=torch.long)
    seg = torch.full((b, seq_len), PAD_SEGMENT, dtype=torch.uint8)
    cpos, ctok, cmask = (torch.zeros((b, max_c), dtype=torch.long) for _ in range(3))
    rpos, rtok, rmask = (torch.zeros((b, max_r), dtype=torch.long) for _ in range(3))
    for i, ex in enumerate(examples):
        p, c, r = len(ex.prompt), len(ex.chosen), len(ex.rejected)
        ids[i, : p + c + r] = torch.tensor(ex.prompt + ex.chosen + ex.rejected)
        pos[i, : p + c] = torch.arange(p + c)
        pos[i, p + c : p + c + r] = torch.arange(p, p + r)
        seg[i, :p], seg[i, p : p + c], seg[i, p + c : p + c + r] = 0, 1, 2
        cpos[i, :c] = torch.arange(p - 1, p + c - 1)
        ctok[i, :c] = torch.tensor(ex.chosen)
        cmask[i, :c] = 1
        rpos[i, 0] = p - 1  # the first rejected token is predicted by the last prompt position
        rpos[i, 1:r] = torch.arange(p + c, p + c + r - 1)
        rtok[i, :r] = torch.tensor(ex.rejected)
        rmask[i, :r] = 1
    return PackedBatch(ids, pos, seg, cpos, ctok, cmask.bool(), rpos, rtok, rmask.bool(), torch.tensor(indices))


def sequence_logps(
    logits_at: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *, with_mean: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token log-probs per row, and the mean logit (the study's `logits/*` metric, skipped when
    `with_mean` is False: it costs a full pass over the vocabulary and training steps do not log it)."""
    logits = logits_at.float()
    tok_logp = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    tok_logp = tok_logp.masked_fill(~mask, 0.0)
    if not with_mean:
        return tok_logp.sum(-1), torch.zeros((), device=logits.device)
    mean_logit = (logits.mean(-1) * mask).sum() / mask.sum().clamp(min=1)
    return tok_logp.sum(-1), mean_logit


def length_buckets(
    examples: Sequence[Example], order: Sequence[int], batch_size: int, generator: torch.Generator, window: int = 32
) -> list[list[int]]:
    """Micro-batches from the shuffled `order`, grouped by length inside windows of `window` batches.

    Rows of similar length share a batch (less padding); the batches of a window are then shuffled, so
    no short-to-long curriculum appears. Deterministic given `order` and `generator`.
    """
    batches: list[list[int]] = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: examples[i].packed_len)
        group = [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        batches.extend(group[k] for k in torch.randperm(len(group), generator=generator).tolist())
    return batches
