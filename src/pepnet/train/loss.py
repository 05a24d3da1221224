"""Multi-task loss: weighted sum over tasks of binary cross-entropy, each masked to rows that carry that label."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits, labels float [B, T] (labels NaN where missing); weights float [T] or None.

    Returns (total scalar, per_task float [T]); per_task[t] is the mean BCE over rows having task t's
    label (0 if none in the batch), total = sum_t weights[t] * per_task[t].
    """
    mask = ~torch.isnan(labels)
    target = torch.where(mask, labels, torch.zeros_like(labels))
    losses = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    losses = torch.where(mask, losses, torch.zeros_like(losses))
    per_task = losses.sum(0) / mask.sum(0).clamp(min=1)
    total = (per_task * weights).sum() if weights is not None else per_task.sum()
    return total, per_task
