"""The IoU-threshold assigner of RetinaNet (MMDetection's ``MaxIoUAssigner``): the "IoU-based" row of
the paper's Table 2, a fixed, geometry-only baseline for the assignment ablation.

Per image, with the IoU of every anchor box with every object:

1. an anchor whose best IoU is below ``neg_iou_thr`` (0.4) is a negative;
2. an anchor whose best IoU is at least ``pos_iou_thr`` (0.5) is a positive of that object;
3. anchors in between are ignored (no classification loss);
4. low-quality matches (``match_low_quality``, on in RetinaNet): every object also takes every anchor
   that ties for its own best IoU, if that IoU is at least ``min_pos_iou`` (0), later objects
   overwriting earlier ones, so that no object is left without a positive.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from tood_lib.assign.assignment import Assignment
from tood_lib.assign.tal import check_gt_inputs, check_priors, empty_assignment
from tood_lib.boxes import box_iou

IGNORE = -2  # internal marker for the band between the two thresholds


def max_iou_assign(priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor,
                   prior_valid: Optional[Tensor] = None, pos_iou_thr: float = 0.5, neg_iou_thr: float = 0.4,
                   min_pos_iou: float = 0.0, match_low_quality: bool = True) -> Assignment:
    """IoU-threshold assignment of a padded batch.

    Args:
        priors: (A, 4) anchor boxes in pixels.
        gt_boxes: (B, G, 4) ground-truth boxes in pixels, padded; gt_labels (B, G); gt_mask (B, G) bool.
        prior_valid: (B, A) bool, False for priors on the batch padding (ignored). None: all valid.

    Returns:
        An :class:`Assignment`: ``metric`` and ``iou`` are the anchor IoU with the assigned object,
        ``target`` is 1 on positives, ``ignored`` marks the band between the thresholds (and invalid
        priors); there are no candidates (k = 0).
    """
    check_gt_inputs(gt_boxes, gt_labels, gt_mask)
    B, G = gt_labels.shape
    check_priors(priors, prior_valid, B)
    A = priors.shape[0]
    out = empty_assignment(B, A, G, 0, priors.device)
    out.ignored = torch.zeros(B, A, dtype=torch.bool, device=priors.device)
    if prior_valid is not None:
        out.ignored |= ~prior_valid
    if G == 0 or not gt_mask.any():
        return out

    ious = box_iou(priors.float().expand(B, -1, -1), gt_boxes.float())      # (B, A, G)
    ious = ious.masked_fill(~gt_mask[:, None, :], -1.0)                     # padding rows never match
    if prior_valid is not None:
        ious = ious.masked_fill(~prior_valid[:, :, None], -1.0)             # nor do invalid priors
    best_iou, best_gt = ious.max(dim=2)                                     # (B, A)
    assigned = torch.full((B, A), IGNORE, dtype=torch.long, device=priors.device)
    assigned[(best_iou >= 0) & (best_iou < neg_iou_thr)] = -1
    positive = best_iou >= pos_iou_thr
    assigned[positive] = best_gt[positive]
    if match_low_quality:
        gt_best = ious.max(dim=1).values                                    # (B, G)
        for g in range(G):  # in gt order: a later object overwrites an earlier one on a shared anchor
            takes = (ious[:, :, g] == gt_best[:, g:g + 1]) & (gt_best[:, g:g + 1] >= min_pos_iou) & gt_mask[:, g:g + 1]
            assigned[takes] = g

    pos = assigned >= 0
    out.ignored |= assigned == IGNORE
    out.gt_index = torch.where(pos, assigned, torch.full_like(assigned, -1))
    out.positive = pos
    out.labels = torch.where(pos, gt_labels.gather(1, assigned.clamp(min=0)), torch.full_like(assigned, -1))
    iou = ious.gather(2, assigned.clamp(min=0)[..., None])[..., 0]
    out.metric = out.iou = torch.where(pos, iou, torch.zeros_like(iou))
    out.target = pos.float()
    return out
