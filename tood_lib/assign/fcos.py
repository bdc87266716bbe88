"""FCOS's assignment with centre sampling (MMDetection's ``FCOSHead.get_targets``, ``center_sampling=True``):
the "Center sampling" row of the paper's Table 2, a fixed, geometry-only baseline.

A prior's anchor point p on level l (stride s) is a positive of object g when

1. p lies inside g's *centre region*: the square of half-side ``radius``·s around g's centre,
   clipped to g's box;
2. the largest of p's four distances to g's sides lies in level l's regression range (FCOS's
   (-1, 64), (64, 128), (128, 256), (256, 512), (512, ∞) on COCO), so each object size has its level;
3. among the objects passing 1 and 2, g has the smallest area.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from tood_lib.assign.assignment import Assignment
from tood_lib.assign.tal import check_gt_inputs, check_priors, empty_assignment
from tood_lib.boxes import box_iou
from tood_lib.model.priors import prior_points

INF = 1e8
FCOS_REGRESS_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))


def fcos_assign(priors: Tensor, num_level_priors: Sequence[int], strides: Sequence[int], gt_boxes: Tensor,
                gt_labels: Tensor, gt_mask: Tensor, prior_valid: Optional[Tensor] = None, radius: float = 1.5,
                regress_ranges: Sequence[tuple[float, float]] = FCOS_REGRESS_RANGES) -> Assignment:
    """FCOS centre-sampling assignment of a padded batch.

    Args:
        priors: (A, 4) anchor boxes in pixels, levels concatenated; their centres are the points.
        num_level_priors, strides: priors and stride of each level (L each).
        gt_boxes (B, G, 4) pixels, gt_labels (B, G), gt_mask (B, G) bool; prior_valid (B, A) or None.
        radius: half-side of the centre region, in strides. regress_ranges: L (low, high) in pixels.

    Returns:
        An :class:`Assignment`; ``iou`` and ``metric`` hold the anchor box's IoU with the assigned
        object (for inspection), ``target`` is 1 on positives; there are no candidates (k = 0).
    """
    check_gt_inputs(gt_boxes, gt_labels, gt_mask)
    B, G = gt_labels.shape
    check_priors(priors, prior_valid, B)
    if not (len(num_level_priors) == len(strides) == len(regress_ranges)) or sum(num_level_priors) != len(priors):
        raise ValueError(f"fcos_assign: {len(num_level_priors)} levels of {list(num_level_priors)} priors "
                         f"(for {len(priors)}), {len(strides)} strides and {len(regress_ranges)} regress ranges")
    A = priors.shape[0]
    out = empty_assignment(B, A, G, 0, priors.device)
    if G == 0 or not gt_mask.any():
        return out
    device = priors.device
    level_of = torch.repeat_interleave(torch.arange(len(strides), device=device),
                                       torch.tensor(list(num_level_priors), device=device))
    stride = torch.tensor(strides, dtype=torch.float32, device=device)[level_of]              # (A,)
    ranges = torch.tensor(regress_ranges, dtype=torch.float32, device=device)[level_of]      # (A, 2)

    points = prior_points(priors.float())[None, :, None, :]                                   # (1, A, 1, 2)
    boxes = gt_boxes.float()[:, None, :, :]                                                   # (B, 1, G, 4)
    dist = torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), dim=-1)            # l, t, r, b
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (radius * stride)[None, :, None, None]
    region = torch.cat((torch.maximum(centre - half, boxes[..., :2]), torch.minimum(centre + half, boxes[..., 2:])), -1)
    in_centre = torch.cat((points - region[..., :2], region[..., 2:] - points), dim=-1).min(dim=-1).values > 0
    reach = dist.max(dim=-1).values
    in_range = (reach >= ranges[None, :, None, 0]) & (reach <= ranges[None, :, None, 1])
    ok = in_centre & in_range & gt_mask[:, None, :]
    if prior_valid is not None:
        ok &= prior_valid[:, :, None]
    return assign_smallest_area(out, ok, priors, gt_boxes, gt_labels)


def assign_smallest_area(out: Assignment, ok: Tensor, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Assignment:
    """Fill ``out``: each prior goes to the smallest-area object it qualifies for (``ok`` (B, A, G) bool;
    ties: the lowest index), the rule FCOS and FoveaBox share; ``iou``/``metric`` hold the anchor box's
    IoU with it and ``target`` is 1 on positives."""
    B = gt_boxes.shape[0]
    area = ((gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])).float()[:, None, :]
    area = torch.where(ok, area.expand_as(ok), torch.full_like(ok, INF, dtype=torch.float32))
    smallest, owner = area.min(dim=2)
    pos = smallest < INF
    out.positive = pos
    out.gt_index = torch.where(pos, owner, torch.full_like(owner, -1))
    out.labels = torch.where(pos, gt_labels.gather(1, owner), torch.full_like(owner, -1))
    iou = box_iou(priors.float().expand(B, -1, -1), gt_boxes.float()).gather(2, owner[..., None])[..., 0]
    out.metric = out.iou = torch.where(pos, iou, torch.zeros_like(iou))
    out.target = pos.float()
    return out
