"""Box arithmetic: IoU / GIoU with the reference's exact semantics, and the two box coders.

All boxes are ``(x1, y1, x2, y2)``. The IoU functions reproduce MMDetection's ``bbox_overlaps``
(the function both reference TOOD implementations call) *including its eps clamps*, so that
degenerate boxes (x2 < x1), which the task-aligned predictor can produce, give the same numbers
as the reference: overlap is clamped at 0 and the union at ``eps`` (spec §6.9).
torchvision's ``box_iou`` divides by an unclamped union and would give a different answer there.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """(..., 4) -> (...). Negative for degenerate boxes, as in the reference."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise IoU. boxes1 (..., N, 4), boxes2 (..., M, 4) -> (..., N, M).

    Leading dimensions broadcast, so a whole padded batch (B, N, 4) x (B, M, 4) works at once.
    Computed one coordinate at a time so that no (..., N, M, 2) temporary is made.
    """
    b1 = boxes1.unsqueeze(-2)  # (..., N, 1, 4)
    b2 = boxes2.unsqueeze(-3)  # (..., 1, M, 4)
    inter_w = (torch.minimum(b1[..., 2], b2[..., 2]) - torch.maximum(b1[..., 0], b2[..., 0])).clamp_(min=0)
    inter_h = (torch.minimum(b1[..., 3], b2[..., 3]) - torch.maximum(b1[..., 1], b2[..., 1])).clamp_(min=0)
    overlap = inter_w.mul_(inter_h)
    union = box_area(boxes1).unsqueeze(-1) + box_area(boxes2).unsqueeze(-2) - overlap
    return overlap / union.clamp_(min=eps)


def aligned_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of matching rows. boxes1, boxes2 (..., 4) -> (...); the union is clamped at eps as in ``box_iou``."""
    inter_w = (torch.minimum(boxes1[..., 2], boxes2[..., 2]) - torch.maximum(boxes1[..., 0], boxes2[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(boxes1[..., 3], boxes2[..., 3]) - torch.maximum(boxes1[..., 1], boxes2[..., 1])).clamp(min=0)
    overlap = inter_w * inter_h
    return overlap / (box_area(boxes1) + box_area(boxes2) - overlap).clamp(min=eps)


def aligned_giou(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of matching rows. pred, target (..., 4) -> (...).

    MMDetection's ``bbox_overlaps(mode='giou', is_aligned=True)`` with ``GIoULoss``'s eps=1e-6:
    union and enclosing area are both clamped at eps.
    """
    inter_w = (torch.minimum(pred[..., 2], target[..., 2]) - torch.maximum(pred[..., 0], target[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(pred[..., 3], target[..., 3]) - torch.maximum(pred[..., 1], target[..., 1])).clamp(min=0)
    overlap = inter_w * inter_h
    union = (box_area(pred) + box_area(target) - overlap).clamp(min=eps)
    iou = overlap / union
    enclose_w = (torch.maximum(pred[..., 2], target[..., 2]) - torch.minimum(pred[..., 0], target[..., 0])).clamp(min=0)
    enclose_h = (torch.maximum(pred[..., 3], target[..., 3]) - torch.minimum(pred[..., 1], target[..., 1])).clamp(min=0)
    enclose = (enclose_w * enclose_h).clamp(min=eps)
    return iou - (enclose - union) / enclose


def box_centers(boxes: Tensor) -> Tensor:
    """(..., 4) -> (..., 2) centre points (cx, cy)."""
    return torch.stack(((boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2), dim=-1)


def distance_to_box(points: Tensor, distances: Tensor) -> Tensor:
    """Anchor-free decoding. points (..., 2) as (x, y), distances (..., 4) as (left, top, right, bottom)
    -> boxes (..., 4). Units are whatever the inputs share (the head works in stride units)."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack((x - distances[..., 0], y - distances[..., 1],
                        x + distances[..., 2], y + distances[..., 3]), dim=-1)


def box_to_distance(points: Tensor, boxes: Tensor) -> Tensor:
    """Inverse of :func:`distance_to_box`: (..., 2), (..., 4) -> (l, t, r, b) distances (..., 4)."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack((x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y), dim=-1)


DELTA_MEANS = (0.0, 0.0, 0.0, 0.0)
DELTA_STDS = (0.1, 0.1, 0.2, 0.2)
WH_RATIO_CLIP = 16 / 1000


def delta_xywh_decode(anchors: Tensor, deltas: Tensor, means=DELTA_MEANS, stds=DELTA_STDS,
                      wh_ratio_clip: float = WH_RATIO_CLIP) -> Tensor:
    """Anchor-based decoding, MMDetection's ``DeltaXYWHBBoxCoder.decode`` (no clipping to an image).

    anchors (..., 4) and deltas (..., 4) as (dx, dy, dw, dh) -> boxes (..., 4).
    dw, dh are clamped to +-|log(wh_ratio_clip)| before exp, as in the reference.
    """
    means = deltas.new_tensor(means)
    stds = deltas.new_tensor(stds)
    d = deltas * stds + means
    max_ratio = abs(math.log(wh_ratio_clip))
    dw = d[..., 2].clamp(min=-max_ratio, max=max_ratio)
    dh = d[..., 3].clamp(min=-max_ratio, max=max_ratio)
    px = (anchors[..., 0] + anchors[..., 2]) * 0.5
    py = (anchors[..., 1] + anchors[..., 3]) * 0.5
    pw = anchors[..., 2] - anchors[..., 0]
    ph = anchors[..., 3] - anchors[..., 1]
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + pw * d[..., 0]
    gy = py + ph * d[..., 1]
    return torch.stack((gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5), dim=-1)


def delta_xywh_encode(anchors: Tensor, boxes: Tensor, means=DELTA_MEANS, stds=DELTA_STDS) -> Tensor:
    """Inverse of :func:`delta_xywh_decode` (without the clamp): (..., 4), (..., 4) -> deltas (..., 4)."""
    px = (anchors[..., 0] + anchors[..., 2]) * 0.5
    py = (anchors[..., 1] + anchors[..., 3]) * 0.5
    pw = anchors[..., 2] - anchors[..., 0]
    ph = anchors[..., 3] - anchors[..., 1]
    gx = (boxes[..., 0] + boxes[..., 2]) * 0.5
    gy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    gw = boxes[..., 2] - boxes[..., 0]
    gh = boxes[..., 3] - boxes[..., 1]
    d = torch.stack(((gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)), dim=-1)
    return (d - d.new_tensor(means)) / d.new_tensor(stds)


def check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """Raise a clear ValueError for boxes that are not (..., 4), not finite, or have x2<x1 / y2<y1."""
    if boxes.shape[-1] != 4:
        raise ValueError(f"{name}: expected shape (..., 4) in (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if not torch.isfinite(boxes).all():
        bad = (~torch.isfinite(boxes)).any(-1).nonzero()[:5].tolist()
        raise ValueError(f"{name}: expected finite coordinates, got NaN/inf at index {bad}")
    inverted = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    if inverted.any():
        idx = inverted.nonzero()[0].tolist()
        raise ValueError(f"{name}: expected x2>=x1 and y2>=y1, got {boxes[tuple(idx)].tolist()} at index {idx}")
