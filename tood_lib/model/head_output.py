"""What a dense head hands on: per-level scores and boxes, and, on request, its internals."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class HeadOutput:
    """Per-level outputs of a head, L levels.

    scores:     L tensors (B, K, H_l, W_l), probabilities (the T-Head's P_align; σ(logits) for
                the parallel head).
    boxes:      L tensors (B, 4, H_l, W_l), x1y1x2y2 in units of the level's stride.
    strides:    L ints.
    anchor_scale: anchor side in strides (``model.anchor_scale``), so that every consumer builds
                the same anchors (``priors``).
    centerness: L tensors (B, 1, H_l, W_l) of logits, parallel head with centerness only.
    internals:  L dicts of intermediate tensors (``return_internals=True``), for inspection.
    """

    scores: list[Tensor]
    boxes: list[Tensor]
    strides: tuple[int, ...]
    centerness: list[Tensor] | None = None
    internals: list[dict] | None = None
    anchor_scale: float = 8.0

    @property
    def feature_sizes(self) -> list[tuple[int, int]]:
        return [tuple(s.shape[-2:]) for s in self.scores]

    def priors(self, device=None) -> list[Tensor]:
        """One (H_l·W_l, 4) tensor of anchor boxes (pixels) per level, with this head's anchor scale."""
        from tood_lib.model.priors import multilevel_priors

        device = self.scores[0].device if device is None else device
        return multilevel_priors(self.feature_sizes, self.strides, device=device, anchor_scale=self.anchor_scale)

    def flat_scores(self) -> Tensor:
        """(B, A, K), levels concatenated in order, locations row-major."""
        return torch.cat([s.flatten(2).transpose(1, 2) for s in self.scores], dim=1)

    def flat_boxes(self, pixels: bool = True) -> Tensor:
        """(B, A, 4); multiplied by each level's stride when ``pixels``."""
        return torch.cat([b.flatten(2).transpose(1, 2) * (s if pixels else 1)
                          for b, s in zip(self.boxes, self.strides)], dim=1)

    def flat_strides(self) -> Tensor:
        """(A,) the stride of every prior."""
        return torch.cat([torch.full((s.shape[-2] * s.shape[-1],), float(st), device=s.device)
                          for s, st in zip(self.scores, self.strides)])

    def flat_centerness(self) -> Tensor | None:
        """(B, A) centerness logits, or None."""
        if self.centerness is None:
            return None
        return torch.cat([c.flatten(1) for c in self.centerness], dim=1)
