"""FoveaBox's assignment (MMDetection's ``FoveaHead.get_targets``): the "FoveaBox" rows of the
paper's Table 1, a fixed, geometry-only scheme that gives each object a level by its size.

A prior's anchor point p on level l is a positive of object g when

1. g's scale √(w·h) lies in level l's scale range (FoveaBox's (1, 64), (32, 128), (64, 256),
   (128, 512), (256, 2048) on COCO; they overlap, so an object may train two levels);
2. p lies inside g's *fovea*: the box shrunk about its centre by σ = 0.4 (|p_x - c_x| ≤ σ·w/2 and
   |p_y - c_y| ≤ σ·h/2);
3. among the objects passing 1 and 2, g has the smallest area (FoveaBox writes its targets from
   the largest object to the smallest, so the smallest wins).

Where we differ on purpose: FoveaBox's own grid puts the point of cell (x, y) at ((x+½)·s, (y+½)·s);
TOOD's priors (and ours) put it at (x·s, y·s), and the rule above is applied to those points.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from tood_lib.assign.assignment import Assignment
from tood_lib.assign.fcos import assign_smallest_area
from tood_lib.assign.tal import check_gt_inputs, check_priors, empty_assignment
from tood_lib.model.priors import prior_points

FOVEA_SCALE_RANGES = ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))
FOVEA_SIGMA = 0.4


def fovea_assign(priors: Tensor, num_level_priors: Sequence[int], gt_boxes: Tensor, gt_labels: Tensor,
                 gt_mask: Tensor, prior_valid: Optional[Tensor] = None, sigma: float = FOVEA_SIGMA,
                 scale_ranges: Sequence[tuple[float, float]] = FOVEA_SCALE_RANGES) -> Assignment:
    """FoveaBox assignment of a padded batch.

    Args:
        priors: (A, 4) anchor boxes in pixels, levels concatenated; their centres are the points.
        num_level_priors: priors of each level (L). gt_boxes (B, G, 4) pixels, gt_labels (B, G),
            gt_mask (B, G) bool; prior_valid (B, A) or None.
        sigma: the fovea's share of the box side. scale_ranges: L (low, high) bounds of √area in pixels.

    Returns:
        An :class:`Assignment`; ``iou`` and ``metric`` hold the anchor box's IoU with the assigned
        object (for inspection), ``target`` is 1 on positives; there are no candidates (k = 0).
    """
    check_gt_inputs(gt_boxes, gt_labels, gt_mask)
    B, G = gt_labels.shape
    check_priors(priors, prior_valid, B)
    if len(num_level_priors) != len(scale_ranges) or sum(num_level_priors) != len(priors):
        raise ValueError(f"fovea_assign: {len(num_level_priors)} levels of {list(num_level_priors)} priors "
                         f"(for {len(priors)}) and {len(scale_ranges)} scale ranges")
    out = empty_assignment(B, priors.shape[0], G, 0, priors.device)
    if G == 0 or not gt_mask.any():
        return out
    device = priors.device
    level_of = torch.repeat_interleave(torch.arange(len(scale_ranges), device=device),
                                       torch.tensor(list(num_level_priors), device=device))
    ranges = torch.tensor(scale_ranges, dtype=torch.float32, device=device)[level_of]       # (A, 2)

    boxes = gt_boxes.float()
    wh = boxes[..., 2:] - boxes[..., :2]                                                    # (B, G, 2)
    scale = wh.prod(dim=-1).clamp(min=0).sqrt()[:, None, :]                                 # (B, 1, G)
    in_range = (scale >= ranges[None, :, None, 0]) & (scale <= ranges[None, :, None, 1])   # (B, A, G)
    points = prior_points(priors.float())[None, :, None, :]                                 # (1, A, 1, 2)
    centre = ((boxes[..., :2] + boxes[..., 2:]) / 2)[:, None]                               # (B, 1, G, 2)
    in_fovea = ((points - centre).abs() <= sigma * wh[:, None] / 2).all(dim=-1)
    ok = in_range & in_fovea & gt_mask[:, None, :]
    if prior_valid is not None:
        ok &= prior_valid[:, :, None]
    return assign_smallest_area(out, ok, priors, gt_boxes, gt_labels)
