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

It is written atomically (``engine/atomic.py``), and its size and SHA-256 go into a file beside it
(``train.pt.sha256``), written after it: a cache that is truncated, corrupted, or has no such record
(a build killed between the two) is found by :func:`cache_problem` and rebuilt with a printed line
naming it, never read.

Evaluation keeps the live backbone (each val image is seen once per evaluation).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tood_lib.engine.atomic import atomic_torch_save, atomic_write_text

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

    Written atomically, then its size and checksum beside it (:func:`checksum_path`), so an
    interrupted build never leaves a cache that would be read."""
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
    checksum_path(path).unlink(missing_ok=True)  # from here until the new record is written, the cache is not trusted
    atomic_torch_save(dict(key=cache_key(backbone, dataset), levels=levels), path)
    atomic_write_text(checksum_path(path), json.dumps(dict(bytes=path.stat().st_size, sha256=_sha256(path))) + "\n")
    return path


def checksum_path(path: str | Path) -> Path:
    """The file that records a cache's size and SHA-256 (``train.pt`` -> ``train.pt.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_problem(path: str | Path) -> str | None:
    """Why the cache file at ``path`` cannot be trusted (missing, no checksum recorded, truncated,
    corrupted), or None when its size and SHA-256 are those recorded when it was built."""
    path, record = Path(path), checksum_path(path)
    if not path.is_file():
        return "missing"
    if not record.is_file():
        return f"no checksum recorded beside it ({record.name}: the build did not finish, or an older version made it)"
    try:
        expected = json.loads(record.read_text())
        size, digest = int(expected["bytes"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError):
        return f"its checksum record {record.name} is unreadable"
    actual = path.stat().st_size
    if actual != size:
        return f"{actual} bytes where {size} were written (truncated)" if actual < size else \
            f"{actual} bytes where {size} were written"
    if _sha256(path) != digest:
        return "its SHA-256 differs from the one recorded when it was built (corrupted)"
    return None


class FeatureCache:
    """A built cache, memory-mapped: ``lookup(index, flip)`` -> C3..C5 of one image, each (C, H, W)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no feature cache at {self.path}; build it with build_feature_cache")
        try:
            body = torch.load(self.path, mmap=True, weights_only=True)
            self.key, self.levels = body["key"], body["levels"]
        except Exception as err:  # noqa: BLE001 - any failure to read it means the file is damaged
            raise ValueError(f"{self.path} is not a readable feature cache ({type(err).__name__}: {err}); "
                             "delete it to rebuild") from None

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
    """The cache at ``path`` for (backbone, dataset), built first if missing, rebuilt (with a printed
    line naming it) if it is not the file that was written (:func:`cache_problem`); attached to ``dataset``."""
    path = Path(path)
    problem = cache_problem(path)
    if problem is not None and problem != "missing":
        print(f"[features] {path}: {problem}; rebuilding it", flush=True)
    if problem is not None:
        build_feature_cache(backbone, dataset, path, progress=progress)
    cache = FeatureCache(path)
    check_cache(cache, backbone, dataset)
    dataset.attach_features(cache)
    return cache
