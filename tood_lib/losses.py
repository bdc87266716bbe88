"""The losses of Task Alignment Learning (paper §3.2.2, spec §2.4-2.7) and of the ATSS warm-up.

All of them take *probabilities* (the head outputs P_align, not logits) and return per-element
losses; the detector sums them and divides by the normalisers. They run in fp32.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from tood_lib.boxes import aligned_giou


def _bce(probs: Tensor, targets: Tensor) -> Tensor:
    """Element-wise ``F.binary_cross_entropy`` — which raises on NaN input; a diverged run should
    see a NaN loss (the trainer then stops with a clear message), not an exception from deep inside."""
    if not torch.isfinite(probs).all():
        return torch.full_like(probs, float("nan"))
    return F.binary_cross_entropy(probs, targets, reduction="none")


def quality_focal_loss(probs: Tensor, targets: Tensor, gamma: float = 2.0) -> Tensor:
    """Task-aligned classification loss, Eq. (10)-(11): BCE(p, y)·|y − p|^γ, no α.

    probs, targets (..., K): y is t̂ in the assigned class of a positive and 0 everywhere else,
    so a negative contributes p^γ·BCE(p, 0). ``F.binary_cross_entropy`` clamps log at −100, as
    the reference does. Returns (..., K).
    """
    probs, targets = probs.float(), targets.float()
    return _bce(probs, targets) * (targets - probs).abs().pow(gamma)


def focal_loss_with_probs(probs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """The warm-up classification loss: focal loss on probabilities with binary targets.

    probs, targets (..., K), targets in {0, 1}. Returns (..., K):
    BCE(p, y)·(α·y + (1−α)·(1−y))·p_t^γ with p_t = 1−p for y=1 and p for y=0.
    """
    probs, targets = probs.float(), targets.float()
    pt = (1 - probs) * targets + probs * (1 - targets)
    weight = (alpha * targets + (1 - alpha) * (1 - targets)) * pt.pow(gamma)
    return _bce(probs, targets) * weight


def weighted_giou_loss(pred: Tensor, target: Tensor, weight: Tensor, loss_weight: float = 2.0) -> Tensor:
    """Σ_i w_i·(1 − GIoU(b_i, b̄_i)) × loss_weight over N matched pairs. pred, target (N, 4), weight (N,) -> scalar.

    Both boxes in stride units (spec §2.5). With no pairs, 0 that still depends on ``pred``.
    """
    if pred.numel() == 0:
        return pred.sum() * 0
    return loss_weight * ((1 - aligned_giou(pred.float(), target.float())) * weight).sum()


def centerness_target(points: Tensor, gt_boxes: Tensor) -> Tensor:
    """ATSS centerness of anchor points inside their boxes: sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b)).

    points (N, 2), gt_boxes (N, 4) -> (N,). A point outside its box (possible only with the
    IoU-threshold assigner's positives) gets 0.
    """
    left, top = points[:, 0] - gt_boxes[:, 0], points[:, 1] - gt_boxes[:, 1]
    right, bottom = gt_boxes[:, 2] - points[:, 0], gt_boxes[:, 3] - points[:, 1]
    lr = torch.minimum(left, right) / torch.maximum(left, right)
    tb = torch.minimum(top, bottom) / torch.maximum(top, bottom)
    inside = torch.minimum(torch.minimum(left, right), torch.minimum(top, bottom)) > 0
    return torch.where(inside, (lr * tb).clamp(min=0).sqrt(), torch.zeros_like(lr))


def reduce_mean(value: Tensor) -> Tensor:
    """Mean of a scalar over all processes (a no-op without torch.distributed).

    The normalisers are averaged across GPUs this way (official ``reduce_mean``); DDP then averages
    the gradients, so the loss is normalised globally.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.detach().clone()
    dist.all_reduce(value.div_(dist.get_world_size()))
    return value


def normalizer(total: Tensor, eps: float = 1e-12) -> float:
    """Cross-process mean of Σt̂ (or of the positive count), replaced by 1 when below eps (official rule)."""
    value = reduce_mean(total.detach().float()).item()
    return 1.0 if value < eps else value
