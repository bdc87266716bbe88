"""Cached backbone features: train only the FPN and the head on a frozen backbone.

The ablations differ only in the head and the assignment, so a study of them can freeze the
whole backbone (``model.frozen_stages=4`` with ``model.norm_eval=true``). Its outputs C3..C5 are
then a fixed function of the image, and with fixed-scale training an image has only two inputs:
itself and its mirror image. Computing both once per training image and reading them back at
every step removes the backbone's forward pass from training (at 160 px on one CPU thread about
half of a frozen-backbone step). Nothing else changes: the loss, the assignment and the optimiser
see exactly what they would see with the live backbone (the cache is fp32; a test checks equality).

The cache is one file holding, per backbone output level, a tensor (N, 2, C, H, W): image index
in the data set, then flip (0: as read, 1: mirrored). It records a fingerprint of the backbone
weights, the image scale, the normalisation and the image ids; :func:`check_cache` refuses a cache
made for anything else. It is loaded memory-mapped, so several runs reading it share one copy.

Evaluation keeps the live backbone (each val image is seen once per evaluation).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

CACHE_VERSION = 1


def backbone_fingerprint(backbone: nn.Module) -> str:
    """A hash of every tensor of the backbone's state dict (weights and BatchNorm statistics)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(backbone: nn.Module, dataset) -> dict:
    """What a cache must have been built from to be valid for (backbone, dataset)."""
    cfg = dataset.data_cfg
    ids = hashlib.sha256(",".join(map(str, dataset.image_ids)).encode()).hexdigest()[:16]
    # the annotation file's bytes too: a data set regenerated in the same folder with the same ids (a
    # changed generator) must not be served the old images' features
    annotations = hashlib.sha256(Path(dataset.annotation_file).read_bytes()).hexdigest()[:16]
    return dict(version=CACHE_VERSION, backbone=backbone_fingerprint(backbone), img_scale=list(cfg.img_scale),
                mean=list(cfg.mean), std=list(cfg.std), size_divisor=cfg.size_divisor, image_ids=ids, annotations=annotations,
                images=len(dataset), root=str(Path(dataset.root).resolve()), split=dataset.split)


def require_frozen(backbone: nn.Module, data_cfg) -> None:
    """Refuse a backbone or pipeline for which cached features would differ from live ones."""
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(f"cached backbone features need a fully frozen backbone (model.frozen_stages=4, "
                         f"model.norm_eval=true); trainable: {', '.join(trainable[:3])}...")
    if not getattr(backbone, "norm_eval", False):
        raise ValueError("cached backbone features need model.norm_eval=true (BatchNorm statistics fixed)")
    if data_cfg.multiscale_short is not None:
        raise ValueError("cached backbone features need a fixed training scale (data.multiscale_short=None)")


@torch.no_grad()
def build_feature_cache(backbone: nn.Module, dataset, path: str | Path, batch_size: int = 16,
                        progress: bool = True) -> Path:
    """Run ``backbone`` (in eval mode) on every image of ``dataset`` and its mirror; write the cache to ``path``.

    Written to a temporary file and renamed, so an interrupted build leaves nothing behind."""
    from tood_lib.batch import make_batch

    require_frozen(backbone, dataset.data_cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = backbone.training
    backbone.eval()
    levels: list[Tensor] | None = None
    n = len(dataset)
    saved_train, saved_features = dataset.train, dataset.features
    dataset.train = False  # the test pipeline: no random flip; we flip ourselves
    dataset.features = None  # read the real images, never placeholders
    try:
        for start in tqdm(range(0, n, batch_size), desc=f"caching backbone features ({n} images x 2 flips)",
                          disable=not progress, leave=False):
            items = [dataset[i] for i in range(start, min(n, start + batch_size))]
            batch = make_batch([it["image"] for it in items], size_divisor=dataset.data_cfg.size_divisor)
            plain = backbone(batch.images)
            mirrored = backbone(batch.images.flip(-1))
            if (batch.pad_shapes != batch.image_sizes).any():
                raise ValueError("cached backbone features need images whose size is a multiple of the size divisor "
                                 "(a mirrored padded image is not the padded mirrored image)")
            if levels is None:
                levels = [torch.empty(n, 2, *f.shape[1:]) for f in plain]
            for level, (a, b) in enumerate(zip(plain, mirrored)):
                levels[level][start:start + len(items), 0] = a
                levels[level][start:start + len(items), 1] = b
    finally:
        dataset.train, dataset.features = saved_train, saved_features
        backbone.train(was_training)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(dict(key=cache_key(backbone, dataset), levels=levels), tmp)
    tmp.replace(path)
    return path


class FeatureCache:
    """A built cache, memory-mapped: ``lookup(index, flip)`` -> C3..C5 of one image, each (C, H, W)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no feature cache at {self.path}; build it with build_feature_cache")
        body = torch.load(self.path, mmap=True, weights_only=True)
        self.key, self.levels = body["key"], body["levels"]

    def __len__(self) -> int:
        return len(self.levels[0])

    def lookup(self, index: int, flip: bool) -> list[Tensor]:
        return [level[index, int(flip)].clone() for level in self.levels]


def check_cache(cache: FeatureCache, backbone: nn.Module, dataset) -> None:
    """Refuse a cache built from other weights, another scale or normalisation, or other images."""
    expected = cache_key(backbone, dataset)
    wrong = [k for k in expected if k != "root" and cache.key.get(k) != expected[k]]
    if wrong:
        details = "; ".join(f"{k}: cache {cache.key.get(k)!r}, run {expected[k]!r}" for k in wrong)
        raise ValueError(f"{cache.path} was built for something else ({details}); delete it to rebuild")


def cached_training_features(backbone: nn.Module, dataset, path: str | Path, progress: bool = True) -> FeatureCache:
    """The cache at ``path`` for (backbone, dataset), built first if missing; attached to ``dataset``."""
    path = Path(path)
    if not path.is_file():
        build_feature_cache(backbone, dataset, path, progress=progress)
    cache = FeatureCache(path)
    check_cache(cache, backbone, dataset)
    dataset.attach_features(cache)
    return cache
