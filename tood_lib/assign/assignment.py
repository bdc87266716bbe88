"""The result of assigning priors to ground-truth boxes, for a whole padded batch."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Assignment:
    """Per-prior assignment of a batch. B images, A priors (all levels, concatenated), G padded boxes, k candidates.

    gt_index:   (B, A) long, index into the image's padded gt list, -1 for background.
    labels:     (B, A) long, class of the assigned box, -1 for background.
    positive:   (B, A) bool, gt_index >= 0.
    metric:     (B, A) float, the assigner's score of the (prior, assigned gt) pair: the alignment
                metric t = s^α·u^β for TAL, the anchor IoU for ATSS; 0 on background.
    iou:        (B, A) float, IoU of the prior with its assigned gt (predicted box for TAL, anchor
                box for ATSS); 0 on background.
    target:     (B, A) float, the soft target used by the losses: t̂ for TAL (its per-instance
                maximum equals that instance's best IoU), 1.0 for ATSS positives; 0 on background.
    candidates: (B, G, k) long, the candidate priors of each gt before the inside/threshold cuts
                (TAL: top-m by t over all levels; ATSS: k nearest per level), for inspection.
    candidate_positive: (B, G, k) bool, which candidates passed every cut for that gt (before the
                conflict resolution between gts); False for padded gts.
    ignored:    (B, A) bool or None: priors that are neither positive nor negative and take no
                classification loss (the IoU-threshold assigner's band between its two thresholds);
                None for the assigners that have no such band (TAL, ATSS).
    """

    gt_index: Tensor
    labels: Tensor
    positive: Tensor
    metric: Tensor
    iou: Tensor
    target: Tensor
    candidates: Tensor
    candidate_positive: Tensor
    ignored: Tensor | None = None

    @property
    def num_positive(self) -> Tensor:
        """(B,) number of positive priors per image."""
        return self.positive.sum(dim=1)
