"""The typed hand-off from data to model: a padded batch of images and their boxes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tood_lib.boxes import check_boxes


@dataclass
class Batch:
    """B images padded to a common size, with their boxes padded to G per image.

    images:         (B, 3, H, W) normalised, zero-padded on the right and bottom.
    pad_shapes:     (B, 2) long, each image's own (h, w) after padding to a multiple of 32; the
                    priors beyond it are invalid for that image (spec §1.3).
    image_sizes:    (B, 2) long, each image's (h, w) after resizing, before padding.
    original_sizes: (B, 2) long, each image's (h, w) as read from disk; detections are rescaled to it.
    gt_boxes:       (B, G, 4) float, x1y1x2y2 in pixels of the resized image; padding rows are 0.
    gt_labels:      (B, G) long, class indices 0..K-1; padding rows are -1.
    gt_mask:        (B, G) bool, True for real boxes.
    features:       optional cached backbone outputs C3..C5, each (B, C_l, H_l, W_l), which the
                    detector then uses instead of running its backbone (engine/feature_cache.py).
    """

    images: Tensor
    pad_shapes: Tensor
    image_sizes: Tensor
    original_sizes: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor
    gt_mask: Tensor
    features: list[Tensor] | None = None

    def to(self, device) -> "Batch":
        moved = {k: v.to(device) for k, v in self.__dict__.items() if k != "features"}
        features = None if self.features is None else [f.to(device) for f in self.features]
        return Batch(**moved, features=features)

    @property
    def num_images(self) -> int:
        return self.images.shape[0]


def make_batch(images: list[Tensor], boxes: list[Tensor] | None = None, labels: list[Tensor] | None = None,
               original_sizes: list[tuple[int, int]] | None = None, size_divisor: int = 32) -> Batch:
    """Pad a list of (3, h_i, w_i) images (already resized and normalised) and their boxes into a Batch.

    boxes[i] (G_i, 4) in pixels of image i, labels[i] (G_i,). Without boxes, every image has none.
    """
    if not images:
        raise ValueError("make_batch: expected at least one image, got an empty list")
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"make_batch: image {i}: expected shape (3, H, W), got {tuple(img.shape)}")
    n = len(images)
    boxes = boxes if boxes is not None else [torch.zeros(0, 4) for _ in range(n)]
    labels = labels if labels is not None else [torch.zeros(0, dtype=torch.long) for _ in range(n)]
    if len(boxes) != n or len(labels) != n:
        raise ValueError(f"make_batch: expected {n} box and label lists, got {len(boxes)} and {len(labels)}")
    sizes = torch.tensor([img.shape[1:] for img in images], dtype=torch.long)
    pad_shapes = (sizes + size_divisor - 1) // size_divisor * size_divisor
    height, width = pad_shapes.max(0).values.tolist()
    batch_images = torch.stack([F.pad(img, (0, width - img.shape[2], 0, height - img.shape[1])) for img in images])
    max_boxes = max(len(b) for b in boxes)
    gt_boxes = torch.zeros(n, max_boxes, 4)
    gt_labels = torch.full((n, max_boxes), -1, dtype=torch.long)
    gt_mask = torch.zeros(n, max_boxes, dtype=torch.bool)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)
        lab = torch.as_tensor(lab, dtype=torch.long).reshape(-1)
        if len(b) != len(lab):
            raise ValueError(f"make_batch: image {i}: {len(b)} boxes but {len(lab)} labels")
        check_boxes(b, f"image {i} boxes")
        gt_boxes[i, :len(b)], gt_labels[i, :len(b)], gt_mask[i, :len(b)] = b, lab, True
    originals = torch.tensor(original_sizes, dtype=torch.long) if original_sizes is not None else sizes.clone()
    return Batch(batch_images, pad_shapes, sizes, originals, gt_boxes, gt_labels, gt_mask)
