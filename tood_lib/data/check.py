"""Checking a COCO-format split before anything trains on it or is scored against it.

``check_split(root, split)`` reads ``annotations/instances_{split}2017.json``, checks every id,
category, box and image file (it exists, decodes in full, and has the size the JSON states), and
returns a ``SplitReport``: the problems found, each with a count, a few examples and the policy
applied to it, plus a *repaired copy* of the annotations that training and evaluation both use, so
the training targets and the evaluation ground truth always follow the same rules.

The policies (also in ``data/README.md``; ``POLICIES`` below is the single source):

- stop:   the data cannot be used as it is; ``SplitReport.raise_for_stop()`` raises
          ``DataCheckError`` naming the file and the ids (duplicate image or category ids, one image
          file under two image ids, an empty split, unknown categories, image entries without a
          size, an iscrowd that is not 0 or 1).
- drop:   the annotation or image is left out, counted and printed (non-finite or empty boxes,
          boxes outside their image, annotations of unknown images, missing or unreadable image
          files, images whose decoded size differs from the JSON's: their boxes go with them,
          unchecked, since their frame is unknown).
- repair: the value is fixed, counted and printed (boxes partly outside the image are clipped to
          it, duplicate annotation ids are renumbered, a missing area is set to the box's, 16-bit
          images are scaled to 8 bits, other modes converted to RGB).

Nothing is ever dropped or changed without being counted. The original file is never modified.
Image files are decoded on threads (PIL releases the GIL while decoding); for splits of more than
``CACHE_ABOVE`` images the result per file is cached by (size, mtime), so full COCO is decoded once.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from pycocotools.coco import COCO

from tood_lib.data.coco_json import DataNotFoundError, read_coco_json
from tood_lib.data.decode import DECODE_ERRORS, SIXTEEN_BIT_MODES, check_pixel_range

# defect -> (policy, what is done, in words). The order is the order of the printed table.
POLICIES = {
    "split without images": ("stop", "the 'images' list is empty: there is nothing to train on or to score"),
    "duplicate image id": ("stop", "two image entries share an id: which file the boxes belong to is unknown"),
    "image file under two image ids": ("stop", "two image entries with different ids name the same file: each copy's "
                                       "boxes would be background in the other, and correct detections on one "
                                       "would be false positives on the other"),
    "image entry without id, file name or size": ("stop", "an image entry lacks id, file_name, width or height (> 0)"),
    "duplicate category id": ("stop", "two categories share an id"),
    "category entry without id or name": ("stop", "a category lacks an integer id or a name: the class it stands "
                                          "for is unknown"),
    "unknown category": ("stop", "an annotation names a category_id that is not in 'categories'"),
    "bad iscrowd value": ("stop", "iscrowd is not 0 or 1 (or false/true; missing or null counts as 0): whether "
                          "the box is a target or an ignored region is unknown"),
    "annotation of an unknown image": ("drop", "the annotation is left out (its image_id is not in 'images')"),
    "malformed or non-finite box": ("drop", "bbox is not 4 finite numbers: left out of training and of the evaluation ground truth"),
    "empty box (w or h <= 0)": ("drop", "left out of training and of the evaluation ground truth"),
    "box outside its image": ("drop", "no pixel of the box is in the image: left out everywhere"),
    "box partly outside its image": ("repair", "clipped to the image, in training and in the evaluation ground truth"),
    "thin box (w or h < 1 px)": ("drop", "left out of training only (MMDetection's rule); kept in the evaluation ground truth, as COCO's evaluation does"),
    "duplicate or missing annotation id": ("repair", "renumbered (pycocotools would silently lose one of two boxes with the same id)"),
    "missing or non-positive area": ("repair", "set to the box's area (COCOeval needs it for its size ranges)"),
    "crowd annotation": ("ignore", "not a training target; COCOeval ignores detections on it"),
    "missing image file": ("drop", "the image is left out of training, or of the evaluation (reported)"),
    "unreadable image file": ("drop", "zero-byte, truncated, not an image, a folder, over Pillow's pixel limit "
                              "(Image.MAX_IMAGE_PIXELS), or pixels of unknown range (float, or more than 16 "
                              "bits): left out of training or evaluation"),
    "decoded size differs from the JSON": ("drop", "the boxes' frame is unknown, so the image is left out with its "
                                           "annotations, whose boxes are not checked against the wrong size "
                                           "(EXIF orientation is not applied, as in COCO's own sizes)"),
    "16-bit image": ("repair", "16-bit grayscale is scaled to 8 bits (v >> 8, Pillow's rule for 16-bit colour "
                     "PNGs), not clipped, then converted to RGB"),
    "not an RGB image": ("repair", "grayscale, CMYK, palette or alpha images are converted to RGB"),
    "training image without boxes": ("drop", "training only: an image with no usable box is not trained on (evaluation keeps it)"),
    "no usable image": ("stop", "every image of the split was left out by the rows above: nothing is left to train on "
                        "or to score"),
}
CACHE_ABOVE = 5000
MAX_EXAMPLES = 1000  # kept per problem; the table shows the first few


class DataCheckError(ValueError):
    """A split has a problem whose policy is 'stop'; the message is the report's table."""


@dataclass
class Finding:
    defect: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def policy(self) -> str:
        return POLICIES[self.defect][0]

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)


@dataclass
class SplitReport:
    """What ``check_split`` found in one split.

    coco:             a pycocotools COCO of the repaired annotations (dropped ones removed, boxes
                      clipped, ids renumbered); use it as the evaluation ground truth.
    usable_image_ids: the ids of the images that exist, decode, and have their stated size (and, with
                      drop_empty, have a box to train on), sorted.
    findings:         defect -> Finding (count, examples naming the file or id).
    images_checked:   whether the image files were opened and decoded.
    thin_annotation_ids: annotations kept for evaluation but not trained on (w or h < 1 px).
    """
    split: str
    annotation_file: Path
    coco: COCO
    usable_image_ids: list[int]
    num_images: int
    num_annotations: int
    findings: dict[str, Finding]
    images_checked: bool
    thin_annotation_ids: set[int] = field(default_factory=set)

    def count(self, defect: str) -> int:
        return self.findings[defect].count if defect in self.findings else 0

    @property
    def stops(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.policy == "stop"]

    def table(self, max_examples: int | None = 3) -> str:
        """The problems as an aligned text table: defect, count, policy, the first ``max_examples``
        examples (None: all that were kept)."""
        head = (f"{self.annotation_file}: {self.num_images} images, {self.num_annotations} annotations; "
                f"{len(self.usable_image_ids)} images usable"
                + ("" if self.images_checked else " (image files not opened)"))
        if not self.findings:
            return head + "\n  no problems found"
        rows = [("problem", "count", "policy", "examples")]
        for defect in POLICIES:
            if defect in self.findings:
                f = self.findings[defect]
                shown = f.examples[:max_examples]
                more = f"; ... ({f.count - len(shown)} more)" if f.count > len(shown) else ""
                rows.append((defect, str(f.count), f.policy, "; ".join(shown) + more))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [head] + ["  " + "  ".join(r[i].ljust(widths[i]) if i < 3 else r[i] for i in range(4)).rstrip()
                          for r in rows]
        return "\n".join(lines)

    def raise_for_stop(self) -> None:
        if self.stops:
            names = ", ".join(f"{f.defect} ({f.count})" for f in self.stops)
            raise DataCheckError(f"{self.annotation_file}: cannot be used as it is: {names}\n{self.table()}\n"
                                 "Fix the annotation file (data/README.md lists every check and its policy).")


def _is_size(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _is_key(value) -> bool:
    """Whether a JSON value can be an id at all: a list or an object as an id is simply unknown (and
    would crash the set and dict lookups below)."""
    return isinstance(value, (int, float, str)) or value is None


def _crowd_flag(value) -> int | None:
    """COCO's iscrowd as 0 or 1; missing or null is 0; None for anything else ("no", 2, "1", [1])."""
    if value is None:
        return 0
    if isinstance(value, (int, float)) and value in (0, 1):  # also false/true, and 1.0
        return int(value)
    return None


def _note(findings: dict[str, Finding], defect: str, example: str) -> None:
    findings.setdefault(defect, Finding(defect)).add(example)


def _check_image_entries(data: dict, image_dir: Path, findings: dict[str, Finding]) -> tuple[list[dict], set]:
    """Check the image entries of a parsed COCO dict; -> (the usable entries (copies), every image id in
    the file, for telling an annotation of a bad entry from one of an unknown image)."""
    images = []
    id_count = Counter(img.get("id") for img in data["images"] if isinstance(img, dict) and _is_key(img.get("id")))
    for img in data["images"]:
        if not (isinstance(img, dict) and isinstance(img.get("id"), int) and isinstance(img.get("file_name"), str)
                and _is_size(img.get("width")) and _is_size(img.get("height"))):
            _note(findings, "image entry without id, file name or size", f"entry {json.dumps(img)[:80]}")
            continue
        if id_count[img["id"]] > 1:
            _note(findings, "duplicate image id", f"image id {img['id']} ({img['file_name']})")
            continue
        images.append(dict(img))
    # one file under two ids: its boxes would be split between two "images" (normpath: "a.jpg" is "./a.jpg")
    ids_of_file: dict[str, list[int]] = {}
    for img in images:
        ids_of_file.setdefault(os.path.normpath(img["file_name"]), []).append(img["id"])
    for name, ids in ids_of_file.items():
        if len(ids) > 1:
            _note(findings, "image file under two image ids",
                  f"{image_dir / name} is image {' and image '.join(map(str, ids))}")
    return images, set(id_count)


def _check_annotations(data: dict, images: list[dict], all_image_ids: set, findings: dict[str, Finding],
                       frame_unknown: set[int] = frozenset()) -> tuple[dict, set[int], Counter]:
    """Check the categories and annotations of a parsed COCO dict against its usable image entries;
    -> (the repaired dict (a copy), the ids of its thin boxes, the number of annotations left out with
    each image of ``frame_unknown``).

    The annotations of the images in ``frame_unknown`` (their file's size differs from the JSON's, so
    the image is dropped) are left out with their image: their boxes are not checked against a size
    known to be wrong, so they are not counted as box problems too.
    """
    def note(defect: str, example: str) -> None:
        _note(findings, defect, example)

    for cat in data["categories"]:
        if not (isinstance(cat, dict) and isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str)):
            note("category entry without id or name", f"entry {json.dumps(cat)[:80]}")
    cat_count = Counter(c.get("id") for c in data["categories"] if isinstance(c, dict) and _is_key(c.get("id")))
    for cat_id, n in cat_count.items():
        if n > 1:
            note("duplicate category id", f"category id {cat_id}")
    cat_ids = set(cat_count)
    sizes = {img["id"]: (img["width"], img["height"]) for img in images}

    annotations, used_ids, thin, left_out = [], set(), [], Counter()
    ann_ids = Counter(a.get("id") for a in data["annotations"] if isinstance(a, dict) and _is_key(a.get("id")))
    next_id = max([i for i in ann_ids if isinstance(i, int)] + [0]) + 1
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not _is_key(ann.get("image_id")) or ann["image_id"] not in all_image_ids:
            note("annotation of an unknown image", f"annotation {ann.get('id') if isinstance(ann, dict) else ann!r} "
                 f"(image_id {ann.get('image_id') if isinstance(ann, dict) else '?'})")
            continue
        ann = dict(ann)
        where = f"annotation {ann.get('id')} of image {ann['image_id']}"
        if ann["image_id"] not in sizes:  # its image entry was bad: already reported as a stop
            continue
        if not _is_key(ann.get("category_id")) or ann["category_id"] not in cat_ids:
            note("unknown category", f"{where}: category_id {ann.get('category_id')}")
            continue
        crowd = _crowd_flag(ann.get("iscrowd"))
        if crowd is None:
            note("bad iscrowd value", f"{where}: iscrowd {json.dumps(ann['iscrowd'])} (expected 0 or 1)")
            continue
        ann["iscrowd"] = crowd
        if ann["image_id"] in frame_unknown:
            left_out[ann["image_id"]] += 1
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            note("malformed or non-finite box", f"{where}: bbox {bbox}")
            continue
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            note("empty box (w or h <= 0)", f"{where}: bbox {bbox}")
            continue
        width, height = sizes[ann["image_id"]]
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x2 <= x1 or y2 <= y1:
            note("box outside its image", f"{where}: bbox {bbox} in a {width}x{height} image")
            continue
        clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
        if clipped:
            note("box partly outside its image", f"{where}: bbox {bbox} in a {width}x{height} image")
            ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
        if ann["bbox"][2] < 1 or ann["bbox"][3] < 1:  # the box as it is used: after clipping
            note("thin box (w or h < 1 px)", f"{where}: bbox {[round(v, 3) for v in ann['bbox']]}"
                 + (f" (clipped from {bbox})" if clipped else ""))
            thin.append(ann)
        area = ann.get("area")
        if not _is_size(area):
            note("missing or non-positive area", f"{where}: area {area}")
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        if not isinstance(ann.get("id"), int) or ann_ids[ann["id"]] > 1 and ann["id"] in used_ids:
            note("duplicate or missing annotation id", f"{where}: id {ann.get('id')} -> {next_id}")
            ann["id"], next_id = next_id, next_id + 1
        used_ids.add(ann["id"])
        if ann["iscrowd"]:
            note("crowd annotation", where)
        annotations.append(ann)
    repaired = {**{k: v for k, v in data.items() if k not in ("images", "annotations")},
                "images": images, "annotations": annotations}
    return repaired, {ann["id"] for ann in thin}, left_out


def probe_image(path: Path) -> tuple[int, int, str] | str:
    """Decode one image file in full; -> (width, height, mode), or the reason it cannot be read (the
    reasons ``decode.read_image`` would fail for)."""
    try:
        with Image.open(path) as image:
            image.load()  # the full decode: a truncated file fails here, not at Image.open
            check_pixel_range(image)
            return image.size[0], image.size[1], image.mode
    except FileNotFoundError:
        return "missing"
    except DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"


def _probe_all(paths: list[Path], cache_file: Path | None, progress: bool) -> list:
    """probe_image for every path on threads, with an optional cache keyed by (size, mtime)."""
    cache = {}
    if cache_file is not None and cache_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            cache = json.loads(cache_file.read_text())

    def stamp(path: Path):
        try:
            st = path.stat()
            return [st.st_size, st.st_mtime_ns]
        except OSError:
            return None

    def one(path: Path):
        key, st = str(path), stamp(path)
        hit = cache.get(key)
        if st is not None and hit is not None and hit[0] == st:
            return hit[1] if isinstance(hit[1], str) else tuple(hit[1])
        result = probe_image(path)
        if st is not None:
            cache[key] = [st, result]
        return result

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(tqdm(pool.map(one, paths), total=len(paths), desc="checking images", unit="img",
                            disable=not progress or len(paths) < 2000, leave=False))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    return results


def _cache_file(image_dir: Path) -> Path:
    base = Path(os.environ.get("TOOD_CACHE", Path.home() / ".cache" / "tood_lib"))
    return base / "image_checks" / (hashlib.sha1(str(image_dir.resolve()).encode()).hexdigest()[:16] + ".json")


def check_split(root: str | Path, split: str, check_images: bool = True, progress: bool = True,
                drop_empty: bool | None = None) -> SplitReport:
    """Check ``root``'s ``split`` (see the module docstring); -> SplitReport.

    Missing or unparsable annotation files raise at once (DataNotFoundError, AnnotationFormatError);
    every other problem is collected in the report; call ``raise_for_stop()`` to refuse 'stop' ones.
    check_images=False skips opening the image files (then every image counts as usable).
    drop_empty (default: for the train split) leaves out, with a count, the images without a box to
    train on (none, or only crowd and thin ones).
    """
    root = Path(root)
    annotation_file = root / "annotations" / f"instances_{split}2017.json"
    data = read_coco_json(annotation_file)
    findings: dict[str, Finding] = {}
    image_dir = root / f"{split}2017"
    if not data["images"]:
        _note(findings, "split without images", f"{annotation_file}: \"images\" is an empty list")
    images, all_image_ids = _check_image_entries(data, image_dir, findings)

    usable = sorted(img["id"] for img in images)
    size_mismatches = {}  # image id -> what the check found (noted once its annotations are counted)
    if check_images:
        if not image_dir.is_dir():
            raise DataNotFoundError(f"image folder not found: expected {image_dir} (the images of {annotation_file.name})")
        by_id = sorted(images, key=lambda im: im["id"])
        cache = _cache_file(image_dir) if len(by_id) > CACHE_ABOVE else None
        probes = _probe_all([image_dir / im["file_name"] for im in by_id], cache, progress)
        usable = []
        for img, probe in zip(by_id, probes):
            name = f"{image_dir / img['file_name']} (image {img['id']})"
            if probe == "missing":
                _note(findings, "missing image file", name)
            elif isinstance(probe, str):
                _note(findings, "unreadable image file", f"{name}: {probe}")
            elif (probe[0], probe[1]) != (img["width"], img["height"]):
                size_mismatches[img["id"]] = (f"{name}: {probe[0]}x{probe[1]} on disk, "
                                              f"{img['width']}x{img['height']} in the JSON")
            else:
                if probe[2] in SIXTEEN_BIT_MODES:  # scaled to 8 bits by decode.to_rgb (counted here once)
                    _note(findings, "16-bit image", f"{name}: mode {probe[2]}")
                elif probe[2] != "RGB":
                    _note(findings, "not an RGB image", f"{name}: mode {probe[2]}")
                usable.append(img["id"])
    repaired, thin_ids, left_out = _check_annotations(data, images, all_image_ids, findings, set(size_mismatches))
    for image_id, example in size_mismatches.items():
        _note(findings, "decoded size differs from the JSON",
              f"{example}; its {left_out[image_id]} annotation(s) left out with it")

    drop_empty_applies = split == "train" if drop_empty is None else drop_empty
    if drop_empty_applies:
        trainable = {a["image_id"] for a in repaired["annotations"] if not a["iscrowd"] and a["id"] not in thin_ids}
        files = {img["id"]: img["file_name"] for img in repaired["images"]}
        for image_id in [i for i in usable if i not in trainable]:
            findings.setdefault("training image without boxes", Finding("training image without boxes")).add(
                f"{image_dir / files[image_id]} (image {image_id})")
        usable = [i for i in usable if i in trainable]
    if data["images"] and not usable and (check_images or drop_empty_applies):
        # the same data that CocoDetection refuses ("no usable images") must not pass check-data
        _note(findings, "no usable image", f"{annotation_file}: none of its {len(data['images'])} images is left")
    # the annotations of the other images that are not usable (missing, unreadable) stay in the ground
    # truth (evaluation is limited to usable_image_ids, so they are never scored) and are never trained on
    coco = COCO()
    coco.dataset = repaired
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return SplitReport(split=split, annotation_file=annotation_file, coco=coco, usable_image_ids=usable,
                       num_images=len(data["images"]), num_annotations=len(data["annotations"]),
                       findings=findings, images_checked=check_images, thin_annotation_ids=thin_ids)
