"""COCO-format detection data through pycocotools, with the official train and test transforms (spec §3).

Reads ``<root>/annotations/instances_{split}2017.json`` and ``<root>/{split}2017/<file_name>``: the
full COCO 2017 release, COCO Tiny, and the built-in data set all have this layout.

Targets, as MMDetection's ``CocoDataset`` builds them:

- labels are contiguous 0..K-1 in the order of the sorted COCO category ids (``cat_ids`` maps back);
- crowd annotations (``iscrowd=1``) are not targets (COCOeval treats them as "ignore" regions);
- boxes are converted from COCO's (x, y, w, h) to (x1, y1, x2, y2); a box that is not finite, has
  w < 1 or h < 1, has area <= 0 or lies outside its image is skipped and counted;
- for training, images left without boxes are dropped (``drop_empty`` defaults to ``train``).

Augmentation randomness is drawn from ``np.random.default_rng([seed, epoch, image_id])``: the same
(seed, epoch, image) always gets the same scale and flip, whatever the worker, the batch order, or
the step a run was resumed at. Keying it by the image id rather than the list position keeps it
stable when images are dropped. Call ``set_epoch(epoch)`` before each epoch; with a DataLoader
this works as long as ``persistent_workers=False`` (the default), since workers then copy the
dataset afresh each epoch.

Unreadable images (garbage or truncated files) are handled lazily and deterministically: loading
one logs a warning naming the file, counts it in ``stats["unreadable_images"]``, and returns the
next readable image in list order instead (with that image's own augmentation), so a long run
never dies, and never silently, on one bad file. ``find_unreadable()`` checks all files up front.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor

from tood_lib.batch import Batch, make_batch
from tood_lib.config import DataConfig
from tood_lib.data.transforms import resize_and_normalize, to_tensor_image

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "val")


class DataNotFoundError(FileNotFoundError):
    """A data root, annotation file or image folder is missing."""


class AnnotationFormatError(ValueError):
    """An annotation file is empty, not JSON, or not COCO-shaped."""


def find_coco_root(explicit: str | Path | None = None) -> Path:
    """The COCO root: ``explicit`` if given, else ``$COCO_ROOT``, else ``<repo>/data/coco``."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("COCO_ROOT"):
        return Path(os.environ["COCO_ROOT"])
    return REPO_ROOT / "data" / "coco"


def coco_tiny_root() -> Path | None:
    """COCO Tiny (80 + 80 real COCO images, shared beside the repo): ``$COCO_TINY`` or
    ``<repo>/../shared/coco_tiny``; None when it is not there."""
    path = Path(os.environ.get("COCO_TINY", REPO_ROOT.parent / "shared" / "coco_tiny"))
    return path if path.exists() else None


def _missing_root_message(root: Path) -> str:
    return (f"COCO data not found: {root} does not exist.\n"
            f"Expected {root}/annotations/instances_{{train,val}}2017.json and {root}/{{train,val}}2017/.\n"
            f"Download COCO 2017 with:  python scripts/download_coco.py --root {root}\n"
            "or point COCO_ROOT at an existing copy, or use the built-in data set instead:\n"
            "  python -c 'from tood_lib.data.builtin import build_builtin_dataset; print(build_builtin_dataset())'")


def load_coco_annotations(path: Path) -> COCO:
    """Parse and check a COCO instances file; -> an indexed pycocotools COCO object.

    Raises DataNotFoundError for a missing file and AnnotationFormatError for an empty file,
    invalid JSON, or JSON without the "images", "annotations" and "categories" lists.
    """
    if not path.is_file():
        raise DataNotFoundError(f"annotation file not found: expected {path}")
    text = path.read_text()
    if not text.strip():
        raise AnnotationFormatError(f"annotation file {path} is empty (0 bytes or whitespace); "
                                    "it was probably cut short by an interrupted download or extraction")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationFormatError(f"annotation file {path} is not valid JSON ({err})") from None
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(key), list)]
    if missing:
        raise AnnotationFormatError(f"annotation file {path} is not a COCO instances file: "
                                    f"it has no {', '.join(repr(k) for k in missing)} list")
    if not data["categories"]:
        raise AnnotationFormatError(f"annotation file {path} has no categories")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


class CocoDetection(torch.utils.data.Dataset):
    """One split of a COCO-format data set, with MMDetection's train or test pipeline.

    ``dataset[i]`` is a dict:
        image          (3, h, w) float, resized and normalised (not padded)
        boxes          (G, 4) float32 x1y1x2y2 in pixels of the resized (and flipped) image
        labels         (G,) long, 0..K-1
        image_id       int, the COCO image id
        original_size  (H, W) as read from disk; detections are mapped back to it
        image_size     (h, w) after resizing
        scale_factor   (sx, sy) = (w / W, h / H)
        flipped        bool
        file_name      str
    Use ``dataset.collate`` (or the module's ``collate``) as the DataLoader's ``collate_fn``.
    """

    def __init__(self, root: str | Path, split: str = "train", data_cfg: DataConfig | None = None,
                 train: bool = True, drop_empty: bool | None = None, seed: int = 0, max_images: int | None = None):
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if not root.is_dir():
            raise DataNotFoundError(_missing_root_message(root))
        self.root, self.split, self.train, self.seed = root, split, train, seed
        self.data_cfg = data_cfg if data_cfg is not None else DataConfig()
        self.image_dir = root / f"{split}2017"
        self.annotation_file = root / "annotations" / f"instances_{split}2017.json"
        self.coco = load_coco_annotations(self.annotation_file)
        if not self.image_dir.is_dir():
            raise DataNotFoundError(f"image folder not found: expected {self.image_dir} "
                                    f"(the images of {self.annotation_file.name})")
        self.cat_ids = sorted(self.coco.getCatIds())
        self.class_names = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self._label_of = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.epoch = 0
        self.stats = {"images": 0, "annotations": 0, "crowd": 0, "degenerate": 0,
                      "empty_images_dropped": 0, "unreadable_images": 0}
        self._unreadable: set[int] = set()

        drop_empty = train if drop_empty is None else drop_empty
        self.image_ids, self._targets = [], []
        for image_id in sorted(self.coco.getImgIds()):
            boxes, labels = self._parse_annotations(image_id)
            if drop_empty and len(boxes) == 0:
                self.stats["empty_images_dropped"] += 1
                continue
            self.image_ids.append(image_id)
            self._targets.append((boxes, labels))
        if max_images is not None:  # the first N usable images, by id: a fixed subset for quick runs
            if max_images < 1:
                raise ValueError(f"max_images: expected a positive count or None, got {max_images}")
            self.image_ids, self._targets = self.image_ids[:max_images], self._targets[:max_images]
        self.stats["images"] = len(self.image_ids)
        if self.stats["degenerate"]:
            logger.warning("%s: skipped %d degenerate boxes (not finite, w < 1, h < 1, area <= 0, "
                           "or outside the image)", self.annotation_file, self.stats["degenerate"])
        if not self.image_ids:
            raise AnnotationFormatError(f"{self.annotation_file}: no usable images "
                                        f"(drop_empty={drop_empty}; stats: {self.stats})")

    def _parse_annotations(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (boxes (G, 4) float32 x1y1x2y2 in original pixels, labels (G,) int64), crowd and
        degenerate boxes left out (and counted)."""
        info = self.coco.imgs[image_id]
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                self.stats["crowd"] += 1
                continue
            if ann["category_id"] not in self._label_of:
                raise AnnotationFormatError(f"{self.annotation_file}: annotation {ann.get('id')} has "
                                            f"category_id {ann['category_id']}, which is not in 'categories'")
            x, y, w, h = (float(v) for v in ann["bbox"])
            inside_w = min(x + w, info["width"]) - max(x, 0.0)
            inside_h = min(y + h, info["height"]) - max(y, 0.0)
            if (not all(math.isfinite(v) for v in (x, y, w, h)) or w < 1 or h < 1
                    or ann.get("area", w * h) <= 0 or inside_w <= 0 or inside_h <= 0):
                self.stats["degenerate"] += 1
                continue
            boxes.append((x, y, x + w, y + h))
            labels.append(self._label_of[ann["category_id"]])
            self.stats["annotations"] += 1
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentations of this epoch (see the module docstring)."""
        self.epoch = int(epoch)

    def augmentation(self, index: int) -> tuple[tuple[int, int], bool]:
        """-> (img_scale, flip) of item ``index`` in the current epoch; the test pipeline always
        gives (data_cfg.img_scale, False)."""
        cfg = self.data_cfg
        if not self.train:
            return tuple(cfg.img_scale), False
        rng = np.random.default_rng([self.seed, self.epoch, self.image_ids[index]])
        scale = tuple(cfg.img_scale)
        if cfg.multiscale_short is not None:
            # MMDetection's "range" mode: long side fixed at the max, short side an integer
            # uniform in [lo, hi] (inclusive), as np.random.randint(lo, hi + 1).
            lo, hi = min(cfg.multiscale_short), max(cfg.multiscale_short)
            scale = (max(cfg.img_scale), int(rng.integers(lo, hi + 1)))
        flip = bool(rng.random() < cfg.flip_prob)
        return scale, flip

    def file_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def _read_image(self, index: int) -> Image.Image:
        with Image.open(self.file_path(index)) as image:
            return image.convert("RGB")  # forces the full decode, so truncation shows up here

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        # Walk forward from index to the first readable image (see the module docstring).
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            if i in self._unreadable:
                continue
            try:
                image = self._read_image(i)
            except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for bad or truncated files
                self._unreadable.add(i)
                self.stats["unreadable_images"] = len(self._unreadable)
                logger.warning("skipping unreadable image %s (%s: %s); %d unreadable so far",
                               self.file_path(i), type(err).__name__, err, len(self._unreadable))
                continue
            return self._transform(i, image)
        raise RuntimeError(f"none of the {len(self)} images in {self.image_dir} could be read")

    def _transform(self, index: int, image: Image.Image) -> dict:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        width, height = image.size
        if (height, width) != (info["height"], info["width"]):
            logger.warning("%s: decoded size %dx%d differs from the annotation's %dx%d",
                           self.file_path(index), width, height, info["width"], info["height"])
        scale, flip = self.augmentation(index)
        cfg = self.data_cfg
        tensor, sx, sy = resize_and_normalize(to_tensor_image(image), scale, cfg.mean, cfg.std)
        boxes = torch.from_numpy(self._targets[index][0]) * torch.tensor([sx, sy, sx, sy])
        new_h, new_w = tensor.shape[1:]
        if flip:
            tensor = tensor.flip(-1)
            boxes = torch.stack((new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]), dim=1)
        return {"image": tensor, "boxes": boxes, "labels": torch.tensor(self._targets[index][1]),
                "image_id": image_id, "original_size": (height, width), "image_size": (new_h, new_w),
                "scale_factor": (sx, sy), "flipped": flip, "file_name": info["file_name"]}

    def collate(self, items: list[dict]) -> tuple[Batch, list[dict]]:
        """``collate`` with this data set's ``data_cfg.size_divisor``."""
        return collate(items, self.data_cfg.size_divisor)

    def find_unreadable(self) -> list[str]:
        """Decode every image once; -> the file names that fail (also remembered, so that
        __getitem__ skips them without retrying). Slow on full COCO: a pre-flight check."""
        bad = []
        for i in range(len(self)):
            try:
                self._read_image(i)
            except (OSError, SyntaxError, ValueError):
                self._unreadable.add(i)
                bad.append(self.coco.imgs[self.image_ids[i]]["file_name"])
        self.stats["unreadable_images"] = len(self._unreadable)
        return bad

    def ground_truth(self, index: int) -> tuple[Tensor, Tensor]:
        """-> (boxes (G, 4) x1y1x2y2 in original pixels, labels (G,)): the targets before any transform."""
        boxes, labels = self._targets[index]
        return torch.from_numpy(boxes.copy()), torch.from_numpy(labels.copy())


def collate(items: list[dict], size_divisor: int = 32) -> tuple[Batch, list[dict]]:
    """DataLoader collate_fn for CocoDetection items: -> (Batch padded to a multiple of size_divisor,
    the per-image metadata dicts: everything but image, boxes and labels)."""
    batch = make_batch([it["image"] for it in items], [it["boxes"] for it in items],
                       [it["labels"] for it in items], [it["original_size"] for it in items],
                       size_divisor=size_divisor)
    metas = [{k: v for k, v in it.items() if k not in ("image", "boxes", "labels")} for it in items]
    return batch, metas
