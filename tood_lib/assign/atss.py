"""ATSS assignment (Zhang et al., CVPR 2020), TOOD's warm-up assigner for the first epochs (spec §2.7).

Per gt: on every pyramid level take the k = 9 priors whose centres are nearest the gt centre, so
up to 9·L candidates; their anchor-box IoUs with the gt give an adaptive threshold mean + std; a
candidate is positive when its IoU reaches the threshold and its centre lies strictly inside the gt
(by more than 0.01 px). A prior claimed by several gts goes to the one with the highest IoU.

This reproduces MMDetection 2.x ``ATSSAssigner.assign`` (``reference.py`` transcribes it) for a
whole padded batch. Unlike TAL, nothing here depends on the predictions, so the IoU is only needed
for the candidates: the dense work is just the centre distances, one level at a time.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from tood_lib.assign.assignment import Assignment
from tood_lib.assign.tal import (check_gt_inputs, check_priors, empty_assignment, fill_assignment, inside_gt,
                                 resolve_conflicts, topk_low_index_ties)
from tood_lib.boxes import box_centers, box_iou
from tood_lib.model.priors import prior_points

# Elements per (B, g, A_l) distance matrix; bounds the memory when B·G is large.
DISTANCE_CHUNK_ELEMENTS = 1 << 22


def _check_atss_inputs(priors, num_level_priors, gt_boxes, gt_labels, gt_mask, prior_valid, topk):
    check_gt_inputs(gt_boxes, gt_labels, gt_mask)
    check_priors(priors, prior_valid, gt_boxes.shape[0])
    counts = list(num_level_priors)
    if any(not isinstance(n, int) or n < 0 for n in counts) or sum(counts) != priors.shape[0]:
        raise ValueError(f"num_level_priors: expected non-negative ints summing to A = {priors.shape[0]}, "
                         f"got {counts}")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk: expected a positive int, got {topk!r}")


def _nearest_per_level(points: Tensor, gt_centers: Tensor, num_level_priors: Sequence[int],
                       prior_valid: Optional[Tensor], topk: int):
    """The k = min(topk, A_l) priors nearest each gt centre on every level, concatenated over levels.

    points (A, 2), gt_centers (B, G, 2) -> prior indices (B, G, Σk_l), nearest first within a level,
    and a (B, G, Σk_l) bool telling which slots hold a real candidate (an image with fewer than k
    valid priors on a level fills the rest with invalid priors at distance inf; those are not
    candidates). The (B, g, A_l) distance matrices are built a few gts at a time to bound memory.
    """
    B, G = gt_centers.shape[:2]
    step = max(1, DISTANCE_CHUNK_ELEMENTS // max(1, B * max(num_level_priors)))
    idx_per_level, ok_per_level = [], []
    start = 0
    for n in num_level_priors:
        k = min(topk, n)
        if k > 0:
            level = points[start:start + n]
            invalid = None if prior_valid is None else ~prior_valid[:, None, start:start + n]
            idx_parts, ok_parts = [], []
            for g0 in range(0, G, step):
                centers = gt_centers[:, g0:g0 + step]
                # Exactly the reference's arithmetic, (p - g)^2 summed then sqrt, so ties match too.
                dx = level[:, 0] - centers[..., 0, None]               # (B, g, n)
                dy = level[:, 1] - centers[..., 1, None]
                dist = dx.mul_(dx).add_(dy.mul_(dy)).sqrt_()
                if invalid is not None:
                    dist.masked_fill_(invalid, float("inf"))
                # Equidistant priors are routine on a grid: ties at the k-th place go to the lowest index.
                vals, idx = topk_low_index_ties(dist, k, largest=False, tie_matters=torch.isfinite)
                idx_parts.append(idx + start)
                ok_parts.append(torch.isfinite(vals))
            idx_per_level.append(torch.cat(idx_parts, dim=1))
            ok_per_level.append(torch.cat(ok_parts, dim=1))
        start += n
    return torch.cat(idx_per_level, dim=-1), torch.cat(ok_per_level, dim=-1)


@torch.no_grad()
def atss_assign(priors: Tensor, num_level_priors: Sequence[int], gt_boxes: Tensor, gt_labels: Tensor,
                gt_mask: Tensor, prior_valid: Optional[Tensor] = None, topk: int = 9,
                eps_inside: float = 0.01) -> Assignment:
    """ATSS assignment of a padded batch.

    Args:
        priors: (A, 4) anchor boxes (the 8·stride squares), levels concatenated in order.
        num_level_priors: number of priors on each level, summing to A.
        gt_boxes: (B, G, 4) ground-truth boxes in pixels, padded to a common G.
        gt_labels: (B, G) long class indices.
        gt_mask: (B, G) bool, False marks padding rows.
        prior_valid: (B, A) bool, False for priors on the batch padding (never candidates; a level's
            k is then min(topk, valid priors on that level)). None means all valid.
        topk: nearest priors per level.
        eps_inside: the anchor point must be inside the gt by more than this (pixels).

    Returns:
        An :class:`Assignment` with Σ_l min(topk, A_l) candidate slots (level by level, nearest
        first). ``metric`` and ``iou`` are the anchor IoU of the assigned pair; ``target`` is 1 on
        positives.

    Ties: among equidistant priors at the k-th place the lowest index wins (what the original's
    ``topk`` did on CUDA); among gts claiming a prior with equal IoU, the lowest gt index wins.
    """
    _check_atss_inputs(priors, num_level_priors, gt_boxes, gt_labels, gt_mask, prior_valid, topk)
    B, G = gt_boxes.shape[:2]
    A = priors.shape[0]
    k_total = sum(min(topk, n) for n in num_level_priors)
    out = empty_assignment(B, A, G, k_total, gt_boxes.device)
    if G == 0 or k_total == 0 or not gt_mask.any():
        return out

    priors = priors.detach().float()
    gt_boxes = torch.where(gt_mask[..., None], gt_boxes.detach().float(), 0.0)  # padding rows -> inert zeros
    gt_labels = torch.where(gt_mask, gt_labels.long(), 0)
    points = prior_points(priors)

    cand_idx, is_cand = _nearest_per_level(points, box_centers(gt_boxes), num_level_priors, prior_valid, topk)
    is_cand &= gt_mask[..., None]
    # Anchor-box IoU of each candidate with its gt, through box_iou itself (1 x 1 per pair) so the
    # values are bit-identical to the reference's (A, G) matrix.
    gt_rows = gt_boxes[:, :, None, None, :]                          # (B, G, 1, 1, 4)
    cand_iou = box_iou(priors[cand_idx][..., None, :], gt_rows)[..., 0, 0]  # (B, G, k)

    # Threshold mean + std over each gt's candidates; std is unbiased, like torch.std, so with a
    # single candidate it is 0/0 = NaN and nothing passes, as in the reference. Both are taken around
    # the largest candidate IoU: when every candidate has the same IoU (a small gt inside same-sized
    # anchors) the threshold is then exactly that IoU and they all pass, instead of depending on
    # how the sum happened to round (see reference.py).
    n = is_cand.sum(dim=-1, keepdim=True)
    shift = cand_iou.where(is_cand, -float("inf")).amax(dim=-1, keepdim=True)
    dev = (cand_iou - shift).where(is_cand, 0.0)
    mean_dev = dev.sum(dim=-1, keepdim=True) / n
    var = (dev - mean_dev).where(is_cand, 0.0).square().sum(dim=-1, keepdim=True) / (n - 1)
    threshold = shift + mean_dev + var.sqrt()

    cand_pos = (is_cand & (cand_iou >= threshold)
                & inside_gt(points[cand_idx], gt_boxes[:, :, None, :], eps_inside))

    batch, gt, prior, slot = resolve_conflicts(cand_idx, cand_pos, cand_iou, A)
    u = cand_iou.reshape(-1)[slot]
    fill_assignment(out, batch, gt, prior, gt_labels, u, u)
    out.target.view(-1)[batch * A + prior] = 1.0

    out.candidates = cand_idx.masked_fill_(~is_cand, -1)
    out.candidate_positive = cand_pos
    return out
