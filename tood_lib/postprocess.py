"""From head outputs to detections (spec §3, Test): per-level top-k, threshold, class-wise NMS, rescale."""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from tood_lib.model.head_output import HeadOutput


def postprocess(out: HeadOutput, image_sizes: Tensor, original_sizes: Tensor, nms_pre: int = 1000,
                score_thr: float = 0.05, iou_thr: float = 0.6, max_per_img: int = 100) -> list[dict[str, Tensor]]:
    """Detections of every image of a batch.

    image_sizes, original_sizes (B, 2) as (h, w). Returns B dicts with ``boxes`` (N, 4) in pixels
    of the original image, ``scores`` (N,), ``labels`` (N,) and ``levels`` (N,), the pyramid level
    (0 = P3) each detection came from, sorted by score, N ≤ max_per_img.

    As in the official test config: on each level keep the ``nms_pre`` locations with the highest
    class score (before any threshold), gather all levels, then keep every (box, class) pair with
    score > ``score_thr`` and run class-wise NMS at IoU ``iou_thr``. Boxes are clipped to the
    resized image and divided by the resize factor.
    """
    results = []
    centerness = out.centerness
    for i in range(len(image_sizes)):
        level_scores, level_boxes, level_index = [], [], []
        for level, (scores, boxes, stride) in enumerate(zip(out.scores, out.boxes, out.strides)):
            scores = scores[i].flatten(1).t().float()  # (H·W, K)
            if centerness is not None:  # ATSS ranks by class score × centerness
                scores = scores * centerness[level][i].flatten().sigmoid()[:, None]
            boxes = boxes[i].flatten(1).t().float() * stride  # (H·W, 4) pixels
            if 0 < nms_pre < scores.shape[0]:
                top = scores.max(dim=1).values.topk(nms_pre).indices
                scores, boxes = scores[top], boxes[top]
            level_scores.append(scores)
            level_boxes.append(boxes)
            level_index.append(torch.full((len(scores),), level, dtype=torch.long, device=scores.device))
        scores, boxes, levels = torch.cat(level_scores), torch.cat(level_boxes), torch.cat(level_index)
        h, w = image_sizes[i].tolist()
        boxes = torch.stack((boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)), dim=1)
        scale = (image_sizes[i].float() / original_sizes[i].float()).flip(0).repeat(2).to(boxes)  # (sx, sy, sx, sy)
        boxes = boxes / scale
        box_idx, labels = (scores > score_thr).nonzero(as_tuple=True)
        det_scores, det_boxes = scores[box_idx, labels], boxes[box_idx]
        keep = batched_nms(det_boxes, det_scores, labels, iou_thr)[:max_per_img]
        results.append(dict(boxes=det_boxes[keep], scores=det_scores[keep], labels=labels[keep], levels=levels[box_idx][keep]))
    return results
