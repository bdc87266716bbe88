"""Priors: one per feature-map location, shared by the anchor-free and anchor-based variants.

On level l with stride s, location (row y, column x) has the anchor point (x·s, y·s) — the cell's
top-left corner, MMDetection 2.x's ``center_offset=0`` (spec §1.3) — and the anchor box is the
8·s square centred there (``anchor_scale`` = MMDetection's ``octave_base_scale``, 8 in every
official config; the CPU bench shrinks it with its canvas, see ``ablations/bench.py``). The
anchor-free head uses the point, the anchor-based head decodes against the box, and both assigners
measure "inside the object" with the point.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

OCTAVE_BASE_SCALE = 8  # anchor side = 8 · stride (the official default)


def level_priors(height: int, width: int, stride: int, device=None, dtype=torch.float32,
                 anchor_scale: float = OCTAVE_BASE_SCALE) -> Tensor:
    """Anchor boxes of one level, row-major (y then x): (H·W, 4) in pixels, each anchor_scale·stride wide."""
    xs = torch.arange(width, device=device, dtype=dtype) * stride
    ys = torch.arange(height, device=device, dtype=dtype) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    half = anchor_scale * stride / 2
    cx, cy = xx.reshape(-1), yy.reshape(-1)
    return torch.stack((cx - half, cy - half, cx + half, cy + half), dim=-1)


def multilevel_priors(feature_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                      device=None, dtype=torch.float32, anchor_scale: float = OCTAVE_BASE_SCALE) -> list[Tensor]:
    """One (H_l·W_l, 4) tensor of anchor boxes per level."""
    return [level_priors(h, w, s, device, dtype, anchor_scale) for (h, w), s in zip(feature_sizes, strides)]


def prior_points(priors: Tensor) -> Tensor:
    """Anchor points (centres of the anchor boxes): (..., 4) -> (..., 2)."""
    return torch.stack(((priors[..., 0] + priors[..., 2]) / 2, (priors[..., 1] + priors[..., 3]) / 2), dim=-1)


def valid_prior_mask(feature_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                     pad_shapes: Tensor) -> Tensor:
    """Which priors lie on an image's own padded area rather than on the batch padding.

    pad_shapes (B, 2) holds each image's (height, width) after padding to a multiple of 32,
    before being stacked into the batch. As in MMDetection's ``valid_flags``, level l keeps the
    first ceil(pad / stride) rows and columns. Returns (B, A) bool, A = Σ H_l·W_l.
    (``allowed_border=-1``: priors crossing the image border are never removed.)
    """
    masks = []
    for (h, w), s in zip(feature_sizes, strides):
        valid_h = torch.clamp(torch.ceil(pad_shapes[:, 0].float() / s), max=h)
        valid_w = torch.clamp(torch.ceil(pad_shapes[:, 1].float() / s), max=w)
        rows = torch.arange(h, device=pad_shapes.device).view(1, h, 1) < valid_h.view(-1, 1, 1)
        cols = torch.arange(w, device=pad_shapes.device).view(1, 1, w) < valid_w.view(-1, 1, 1)
        masks.append((rows & cols).reshape(len(pad_shapes), h * w))
    return torch.cat(masks, dim=1)
