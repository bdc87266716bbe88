"""COCO-format detection data through pycocotools, with the official train and test transforms (spec §3).

Reads ``<root>/annotations/instances_{split}2017.json`` and ``<root>/{split}2017/<file_name>``: the
full COCO 2017 release, COCO Tiny, and the built-in data set all have this layout.

Every split is checked first (``tood_lib.data.check``: ids, categories, boxes, and every image file
decoded once), and the repaired annotations it returns are both the training targets and the
evaluation ground truth. Targets, as MMDetection's ``CocoDataset`` builds them:

- labels are contiguous 0..K-1 in the order of the sorted COCO category ids (``cat_ids`` maps back);
- crowd annotations (``iscrowd=1``) are not targets (COCOeval treats them as "ignore" regions);
- boxes are converted from COCO's (x, y, w, h) to (x1, y1, x2, y2); boxes partly outside the image
  are clipped, non-finite, empty and outside boxes are dropped, boxes thinner than 1 px are not
  trained on; each is counted and printed with the check's table;
- images that are missing, unreadable, or whose decoded size differs from the JSON's are left out
  (counted); for training, images left without boxes are dropped too (``drop_empty`` defaults to ``train``).

Augmentation randomness is drawn from ``np.random.default_rng([seed, epoch, image_id])``: the same
(seed, epoch, image) always gets the same scale and flip, whatever the worker, the batch order, or
the step a run was resumed at. Keying it by the image id rather than the list position keeps it
stable when images are dropped. Call ``set_epoch(epoch)`` before each epoch; with a DataLoader
this works as long as ``persistent_workers=False`` (the default), since workers then copy the
dataset afresh each epoch.

An image that fails to load later (a file changed after the check) raises ``UnreadableImageError``
naming the file: an item is never replaced by another image, so a detection is never scored
under the wrong image id.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor

from tood_lib.batch import Batch, make_batch
from tood_lib.config import DataConfig
from tood_lib.data.check import check_split
from tood_lib.data.coco_json import AnnotationFormatError, DataNotFoundError, read_coco_json
from tood_lib.data.decode import DECODE_ERRORS, read_rgb_image
from tood_lib.data.transforms import rescale_size, resize_and_normalize, to_tensor_image

REPO_ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "val")


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


class UnreadableImageError(ValueError):
    """An image file could not be read, or is not the size its annotation says, when it was loaded."""


def load_coco_annotations(path: Path) -> COCO:
    """``read_coco_json`` as an indexed pycocotools COCO object (unchecked beyond its shape)."""
    coco = COCO()
    coco.dataset = read_coco_json(path)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


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
                 train: bool = True, drop_empty: bool | None = None, seed: int = 0, max_images: int | None = None,
                 check_images: bool = True, verbose: bool = True):
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if not root.is_dir():
            raise DataNotFoundError(_missing_root_message(root))
        self.root, self.split, self.train, self.seed = root, split, train, seed
        self.data_cfg = data_cfg if data_cfg is not None else DataConfig()
        self.image_dir = root / f"{split}2017"
        self.annotation_file = root / "annotations" / f"instances_{split}2017.json"
        if not self.annotation_file.exists():
            raise DataNotFoundError(f"annotation file not found: expected {self.annotation_file}")
        if not self.image_dir.is_dir():
            raise DataNotFoundError(f"image folder not found: expected {self.image_dir} "
                                    f"(the images of {self.annotation_file.name})")
        # every id, box and image file checked once; stop on what cannot be used, count the rest
        drop_empty = train if drop_empty is None else drop_empty
        self.report = check_split(root, split, check_images=check_images, progress=verbose, drop_empty=drop_empty)
        self.report.raise_for_stop()
        self.coco = self.report.coco  # the repaired annotations: the evaluation ground truth too
        self.cat_ids = sorted(self.coco.getCatIds())
        self.class_names = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self._label_of = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.epoch = 0
        self.features = None  # a FeatureCache (engine/feature_cache.py): items then carry backbone features

        self.image_ids = list(self.report.usable_image_ids)
        self._targets = [self._parse_annotations(image_id) for image_id in self.image_ids]
        if max_images is not None:  # the first N usable images, by id: a fixed subset for quick runs
            if max_images < 1:
                raise ValueError(f"max_images: expected a positive count or None, got {max_images}")
            self.image_ids, self._targets = self.image_ids[:max_images], self._targets[:max_images]
        count = self.report.count
        self.stats = {"images": len(self.image_ids), "annotations": sum(len(t[1]) for t in self._targets),
                      "crowd": count("crowd annotation"),
                      "degenerate": sum(count(d) for d in ("malformed or non-finite box", "empty box (w or h <= 0)",
                                                           "box outside its image", "thin box (w or h < 1 px)")),
                      "clipped": count("box partly outside its image"),
                      "empty_images_dropped": count("training image without boxes"),
                      "unreadable_images": count("missing image file") + count("unreadable image file"),
                      "size_mismatch_images": count("decoded size differs from the JSON")}
        if verbose and _is_main_process() and any(f.policy != "ignore" for f in self.report.findings.values()):
            print(f"[data] {self.split} split:\n{self.report.table()}", flush=True)
        if not self.image_ids:
            raise AnnotationFormatError(f"{self.annotation_file}: no usable images "
                                        f"(drop_empty={drop_empty})\n{self.report.table()}")

    def _parse_annotations(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (boxes (G, 4) float32 x1y1x2y2 in original pixels, labels (G,) int64) of an image's
        repaired annotations, without crowd and thin boxes (see the module docstring)."""
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann["iscrowd"] or ann["id"] in self.report.thin_annotation_ids:
                continue
            x, y, w, h = ann["bbox"]
            boxes.append((x, y, x + w, y + h))
            labels.append(self._label_of[ann["category_id"]])
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

    def attach_features(self, cache) -> None:
        """From now on every item carries ``features``, the cached backbone outputs of its image as
        augmented (flipped or not), C3..C5 each (C, H, W), and the image file is no longer read: its
        ``image`` is a placeholder of the right size filled with inf (the detector uses the features
        instead, see engine/feature_cache.py, and refuses to run its backbone on a placeholder)."""
        if len(cache) != len(self):
            raise ValueError(f"the feature cache {cache.path} has {len(cache)} images, the {self.split} split {len(self)}")
        self.features = cache

    def file_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def _read_image(self, index: int) -> Image.Image:
        path = self.file_path(index)
        try:
            return read_rgb_image(path)  # the full decode, so truncation shows up here; 16-bit scaled to 8
        except DECODE_ERRORS as err:  # PIL's errors for bad, truncated or oversized files
            raise UnreadableImageError(f"cannot read image {path} (image {self.image_ids[index]}): "
                                       f"{type(err).__name__}: {err}. It passed the check when the data set "
                                       "was opened, so it changed since; python -m tood_lib check-data "
                                       f"--data-root {self.root} lists every problem") from None

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        if self.features is not None:  # the backbone's outputs are cached: the pixels are not needed
            return self._transform(index, None)
        return self._transform(index, self._read_image(index))

    def item_without_pixels(self, index: int) -> dict:
        """Item ``index`` with its boxes and sizes exactly as ``dataset[index]`` gives them, but the image
        file is not read (``image`` is an inf placeholder): for audits of the ground truth alone."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        item = self._transform(index, None)
        item.pop("features", None)
        return item

    def _transform(self, index: int, image: Image.Image | None) -> dict:
        """The pipeline for item ``index``; ``image=None`` (cached features) gives an inf placeholder image."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        width, height = image.size if image is not None else (info["width"], info["height"])
        if (height, width) != (info["height"], info["width"]):  # only possible with check_images=False
            raise UnreadableImageError(f"{self.file_path(index)} (image {image_id}) decodes to {width}x{height} but "
                                       f"its annotation says {info['width']}x{info['height']}; its boxes' frame is unknown")
        scale, flip = self.augmentation(index)
        cfg = self.data_cfg
        if image is not None:
            tensor, sx, sy = resize_and_normalize(to_tensor_image(image), scale, cfg.mean, cfg.std)
            new_h, new_w = tensor.shape[1:]
        else:
            new_h, new_w = rescale_size(height, width, scale)
            # inf, not zeros: the detector refuses it (model/detector.py), and any other use turns non-finite
            tensor, sx, sy = torch.full((3, new_h, new_w), float("inf")), new_w / width, new_h / height
        boxes = torch.from_numpy(self._targets[index][0]) * torch.tensor([sx, sy, sx, sy])
        if flip:
            tensor = tensor.flip(-1)
            boxes = torch.stack((new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]), dim=1)
        item = {"image": tensor, "boxes": boxes, "labels": torch.tensor(self._targets[index][1]),
                "image_id": image_id, "original_size": (height, width), "image_size": (new_h, new_w),
                "scale_factor": (sx, sy), "flipped": flip, "file_name": info["file_name"]}
        if self.features is not None:
            item["features"] = self.features.lookup(index, flip)
        return item

    def collate(self, items: list[dict]) -> tuple[Batch, list[dict]]:
        """``collate`` with this data set's ``data_cfg.size_divisor``."""
        return collate(items, self.data_cfg.size_divisor)

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
    if "features" in items[0]:  # cached backbone outputs (fixed-size images only: no padding to match)
        batch.features = [torch.stack(level) for level in zip(*(it["features"] for it in items))]
    metas = [{k: v for k, v in it.items() if k not in ("image", "boxes", "labels", "features")} for it in items]
    return batch, metas
