"""The study's BiPO training step, kept as the baseline for equivalence tests and the benchmark.

As the study ran it (research notes §3): the steering hook on the policy, a second full model copy as
the reference recomputed every step, chosen and rejected as two separate full sequences
(prompt + answer, right-padded, one concatenated forward), full-vocabulary logits at every position,
log-probs summed over the answer tokens, one random sign per micro-batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pipeline.bipo import BiPOOutput, bipo_loss
from pipeline.steering import Steering
from pipeline.train_data import Example


def concatenated_inputs(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, attention mask, labels (-100 outside answers) for [all chosen rows; all rejected rows]."""
    seqs = [(e.prompt, e.chosen) for e in examples] + [(e.prompt, e.rejected) for e in examples]
    width = max(len(p) + len(a) for p, a in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (prompt, answer) in enumerate(seqs):
        n = len(prompt) + len(answer)
        ids[i, :n] = torch.tensor(prompt + answer)
        attn[i, :n] = 1
        labels[i, len(prompt) : n] = torch.tensor(answer)
    return ids, attn, labels


def summed_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    mask = labels != -100
    labels[~mask] = 0
    token_logps = torch.gather(logits.float().log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (token_logps * mask).sum(-1)


class StudyRecipe:
    """Policy (with hook) + reference copy; `loss(examples, sign)` is one micro-batch of the study."""

    def __init__(self, policy: Any, reference: Any, layer: int, vector: torch.Tensor, beta: float) -> None:
        self.policy = policy
        self.reference = reference
        self.steering = Steering(policy, layer, vector)
        self.steering.install()
        self.beta = beta

    def loss(self, examples: Sequence[Example], sign: float, pad_id: int) -> BiPOOutput:
        device = next(self.policy.parameters()).device
        ids, attn, labels = (t.to(device) for t in concatenated_inputs(examples, pad_id))
        self.steering.set_multipliers(sign)
        policy = summed_logps(self.policy(input_ids=ids, attention_mask=attn).logits, labels)
        with torch.no_grad():
            ref = summed_logps(self.reference(input_ids=ids, attention_mask=attn).logits, labels)
        b = len(examples)
        signs = torch.full((b,), float(sign), device=device)
        return bipo_loss(policy[:b], policy[b:], ref[:b], ref[b:], signs, self.beta)
