"""The built-in data sets: synthetic scenes written to disk in COCO format.

Two kinds of scenes (``scenes=``): ``"shapes"`` (``synthetic.py``, the default data set: ten
shape classes on clutter) and ``"misaligned"`` (``misaligned.py``: the class is a small off-centre
mark inside a large body that makes the box). Each comes at two scales (``sizes=``):
``"single_level"`` (the main job's shapes at ``data/builtin``, and the first bench's misaligned
scenes, ``misaligned_v1.py``, at ``data/misaligned``) and ``"multi_level"`` (the multi-level bench's,
``ablations/bench.py``: shapes with ``synthetic.SIZE_LAWS["multi_level"]`` at ``data/bench_shapes``
and the redesigned misaligned scenes of ``misaligned.py`` at ``data/bench_misaligned``: objects over
every octave, so that the positives spread over P3-P6 as on COCO).

It lets the whole COCO pipeline (``CocoDetection``, training, ``evaluate_coco``) run without a
download, and is small and easy enough for a small TOOD to learn on two CPU cores in minutes.

Layout (the same as COCO 2017, so every COCO code path is used unchanged)::

    <root>/annotations/instances_train2017.json   categories: the 10 shapes of CLASSES, ids 1..10
    <root>/annotations/instances_val2017.json
    <root>/train2017/000000000001.png ...          PNG: lossless, so the pixels are exactly reproducible
    <root>/val2017/000001000001.png ...
    <root>/manifest.json                           the parameters; a build with the same ones is skipped

Every scene comes from ``draw_scene(scene_seed)`` alone, with disjoint seeds for train and val, so
two builds with the same parameters give identical annotations and identical pixels on any
machine. (The PNG bytes could differ only if a different zlib compresses them differently.)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from tood_lib.data.misaligned import DESIGN as MISALIGNED_DESIGN
from tood_lib.data.misaligned import MARKS, draw_misaligned_scene
from tood_lib.data.misaligned_v1 import draw_misaligned_scene_v1
from tood_lib.data.synthetic import CLASSES, SIZE_LAWS, draw_scene

# Bump whenever draw_scene or the file format changes, so that old builds are regenerated.
GENERATOR_VERSION = 2
SPLITS = ("train", "val")
# Image ids (and the numbers in the file names) start here per split, so ids never collide.
_ID_OFFSET = {"train": 0, "val": 1_000_000}
_MAX_IMAGES = 1_000_000
SCENES = {"shapes": CLASSES, "misaligned": MARKS}  # kind of scene -> its class names
_FOLDER = {("shapes", "single_level"): "builtin", ("shapes", "multi_level"): "bench_shapes",
           ("misaligned", "single_level"): "misaligned", ("misaligned", "multi_level"): "bench_misaligned"}


def _check_kind(scenes: str, sizes: str | None) -> str:
    """-> the size law ("single_level" when None)."""
    if scenes not in SCENES:
        raise ValueError(f"scenes: expected one of {tuple(SCENES)}, got {scenes!r}")
    sizes = sizes or "single_level"
    if sizes not in SIZE_LAWS:
        raise ValueError(f"sizes: expected one of {tuple(SIZE_LAWS)}, got {sizes!r}")
    return sizes


def default_builtin_root(scenes: str = "shapes", sizes: str | None = None) -> Path:
    """``<repo>/data/builtin`` (shapes, single-level), ``data/misaligned`` (misaligned, single-level),
    ``data/bench_shapes`` or ``data/bench_misaligned`` (multi-level): next to ``data/coco``, git-ignored."""
    return Path(__file__).resolve().parents[2] / "data" / _FOLDER[(scenes, _check_kind(scenes, sizes))]


def scene_seed(seed: int, split: str, index: int) -> int:
    """The draw_scene seed of image ``index`` of a split; train and val seeds never overlap."""
    return (2 * seed + SPLITS.index(split)) * _MAX_IMAGES + index


def coco_categories(scenes: str = "shapes") -> list[dict]:
    supercategory = "shape" if scenes == "shapes" else "mark"
    return [{"id": i + 1, "name": name, "supercategory": supercategory} for i, name in enumerate(SCENES[scenes])]


def _xywh(box) -> list[float]:
    # Two decimals: far below a pixel, and short, reproducible JSON.
    x1, y1, x2, y2 = box
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def _split_annotations(split: str, num_images: int, image_size: tuple[int, int], seed: int,
                       max_objects: int, image_dir: Path | None, progress: bool, scenes: str = "shapes",
                       sizes: str = "single_level") -> dict:
    """Draw the scenes of one split; write their PNGs into image_dir (if given); -> the COCO dict."""
    height, width = image_size
    images, annotations = [], []
    label = scenes if sizes == "single_level" else f"{scenes} ({sizes})"
    for index in tqdm(range(num_images), desc=f"built-in {label} {split}", unit="img", disable=not progress):
        image_id = _ID_OFFSET[split] + index + 1
        file_name = f"{image_id:012d}.png"
        seed_i = scene_seed(seed, split, index)
        if scenes == "shapes":
            pixels, boxes, labels = draw_scene(seed_i, size=image_size, max_objects=max_objects, sizes=sizes)
            marks = None
        else:
            draw = draw_misaligned_scene if sizes == "multi_level" else draw_misaligned_scene_v1
            pixels, boxes, labels, marks = draw(seed_i, size=image_size, max_objects=max_objects)
        if image_dir is not None:
            Image.fromarray(pixels).save(image_dir / file_name, format="PNG", compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width,
                       "scene_seed": seed_i})
        for j, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
            x, y, w, h = _xywh(box)
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                          "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0}
            if marks is not None:  # where the class-deciding mark is (for the analyses)
                annotation["mark_bbox"] = _xywh(marks[j].tolist())
            annotations.append(annotation)
    return {"images": images, "annotations": annotations, "categories": coco_categories(scenes)}


def build_builtin_dataset(root: str | Path | None = None, num_train: int = 1000, num_val: int = 200,
                          image_size: tuple[int, int] = (320, 320), seed: int = 0, max_objects: int | None = None,
                          force: bool = False, progress: bool = True, scenes: str = "shapes",
                          sizes: str | None = None) -> Path:
    """Write a built-in data set under ``root`` (default ``default_builtin_root(scenes, sizes)``); -> its path.

    ``scenes``: "shapes" (the default data set) or "misaligned" (see the module docstring);
    ``sizes``: "single_level" (default: the main job's shapes, the first bench's misaligned scenes) or
    "multi_level" (the multi-level bench's; for the misaligned scenes, their redesign);
    ``max_objects`` defaults to 6 shapes or 4 marked bodies per image.

    Skipped when ``root/manifest.json`` records the same parameters (unless ``force``). The set is
    built in a temporary folder next to ``root`` and renamed into place at the end, so an
    interrupted build never leaves a half data set behind. A ``root`` that exists without our
    manifest is not ours to delete: that raises ``FileExistsError`` unless ``force``.
    """
    sizes = _check_kind(scenes, sizes)
    root = Path(root) if root is not None else default_builtin_root(scenes, sizes)
    if max_objects is None:
        max_objects = 6 if scenes == "shapes" else 4
    if not (0 <= num_train < _MAX_IMAGES and 0 <= num_val < _MAX_IMAGES):
        raise ValueError(f"num_train and num_val must be in 0..{_MAX_IMAGES - 1}, got {num_train}, {num_val}")
    manifest = {"generator_version": GENERATOR_VERSION, "num_train": num_train, "num_val": num_val,
                "image_size": list(image_size), "seed": seed, "max_objects": max_objects,
                "classes": list(SCENES[scenes])}
    if scenes != "shapes":  # the shapes manifest stays as it was, so existing builds are not redone
        manifest["scenes"] = scenes
    if sizes != "single_level":
        manifest["sizes"] = sizes
        if scenes == "misaligned":  # the redesigned scenes may change again: a new design is a new build
            manifest["design"] = MISALIGNED_DESIGN
    manifest_path = root / "manifest.json"
    if root.exists() and not force:
        if not manifest_path.is_file():
            raise FileExistsError(f"{root} exists but is not a built-in data set (no manifest.json); "
                                  "pass force=True to replace it, or choose another root")
        try:
            if json.loads(manifest_path.read_text()) == manifest:
                return root
        except json.JSONDecodeError:
            pass  # a damaged manifest: rebuild

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "annotations").mkdir(parents=True)
        for split, num in zip(SPLITS, (num_train, num_val)):
            image_dir = tmp / f"{split}2017"
            image_dir.mkdir()
            coco = _split_annotations(split, num, image_size, seed, max_objects, image_dir, progress, scenes, sizes)
            (tmp / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco, separators=(",", ":")))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))  # last: marks the build complete
        if root.exists():  # an older build (or force): move it aside first, then delete it
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            root.rename(old)
            tmp.rename(root)
            shutil.rmtree(old)
        else:
            tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
