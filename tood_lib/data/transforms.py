"""Image transforms of the official pipeline (spec §3): keep-ratio resize, normalise, (pad in make_batch)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def rescale_size(height: int, width: int, img_scale: tuple[int, int]) -> tuple[int, int]:
    """MMDetection's keep-ratio rule: fit the long side into max(img_scale) and the short side into
    min(img_scale). (1333, 800): short side 800 unless the long side would pass 1333. -> (new_h, new_w)."""
    long_max, short_max = max(img_scale), min(img_scale)
    factor = min(long_max / max(height, width), short_max / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def to_tensor_image(image) -> Tensor:
    """(H, W, 3) uint8 RGB array or PIL image -> (3, H, W) float tensor in 0..255."""
    array = np.array(image)  # a writable copy (PIL images and read-only arrays alike)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()


def resize_and_normalize(image: Tensor, img_scale: tuple[int, int], mean, std) -> tuple[Tensor, float, float]:
    """(3, H, W) float 0..255 -> ((3, h, w) normalised, scale_x, scale_y). Bilinear, as mmcv's imresize."""
    h, w = image.shape[1:]
    new_h, new_w = rescale_size(h, w, img_scale)
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    normalized = (resized - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return normalized, new_w / w, new_h / h
