"""The BiPO objective (SPEC §4.1), as pure tensor functions.

With sign d in {-1, +1} per row, policy log-probs under steering +d·v and reference log-probs with the
vector off: loss = -log σ(β·d·[(logπ(y_w) - logπ(y_l)) - (logπ_ref(y_w) - logπ_ref(y_l))]).
Metrics are the standard DPO ones, not flipped for d = -1 (as the study logged them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BiPOOutput:
    loss: torch.Tensor  # scalar, mean over rows
    losses: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,) β(logπ - logπ_ref)(y_w)
    rejected_rewards: torch.Tensor  # (B,)


def bipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    signs: torch.Tensor,
    beta: float,
) -> BiPOOutput:
    """All inputs (B,); `signs` holds d per row."""
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = -F.logsigmoid(beta * signs * logits)
    return BiPOOutput(
        loss=losses.mean(),
        losses=losses,
        chosen_rewards=beta * (policy_chosen - ref_chosen).detach(),
        rejected_rewards=beta * (policy_rejected - ref_rejected).detach(),
    )
