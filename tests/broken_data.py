"""A generator of broken COCO-format data sets, for the bad-data tests (issue 13).

``make_broken_split(source, out, split)`` copies one split of a clean COCO-format set (the built-in
data or COCO Tiny) and damages it in every way the data check must handle: image files that are
truncated, empty, text, a folder, missing, of another size than their JSON entry, grayscale, CMYK,
PNG bytes named .jpg, EXIF-rotated; boxes that are NaN, infinite, malformed, empty, negative, fully
and partly outside their image; a duplicate annotation id, a missing area, an annotation of an
unknown image, and an image without annotations. It also writes the *clean subset*: a second root
whose JSON lists only the images the check must keep, with their valid annotations (sharing the
image files), and returns the exact counts the check must report.

Small generators for single defects (issue 21): ``make_small_split`` (a minimal clean split to damage),
``edit_annotations``, ``write_16bit_gray`` (16-bit grayscale PNG, TIFF or PGM with a known true mean)
and ``write_oversized_png`` (a valid PNG over Pillow's pixel limit, a few kB on disk).
"""
from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def _save_like(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=95)


def make_broken_split(source: Path, out: Path, split: str = "val") -> dict:
    """-> {"root": broken root, "clean_root": root of the clean subset, "expected": {defect: count},
    "kept_ids": image ids the check must keep, "files": {role: path}}."""
    source, out = Path(source), Path(out)
    data = json.loads((source / "annotations" / f"instances_{split}2017.json").read_text())
    image_dir = out / f"{split}2017"
    image_dir.mkdir(parents=True)
    (out / "annotations").mkdir()
    anns_of: dict[int, list] = {}
    for ann in data["annotations"]:
        anns_of.setdefault(ann["image_id"], []).append(ann)
    # images with at least two non-crowd boxes, so every damaged one has something to lose
    images = [im for im in sorted(data["images"], key=lambda im: im["id"])
              if sum(not a.get("iscrowd", 0) for a in anns_of.get(im["id"], [])) >= 2][:15]
    if len(images) < 15:
        raise ValueError(f"{source}: need 15 {split} images with two boxes or more, found {len(images)}")
    for im in images:
        shutil.copy(source / f"{split}2017" / im["file_name"], image_dir / im["file_name"])
    annotations = [dict(a) for im in images for a in anns_of[im["id"]]]
    path = {im["id"]: image_dir / im["file_name"] for im in images}
    role = dict(zip(["truncated", "zero_byte", "text", "folder", "missing", "resized", "gray", "cmyk",
                     "png_as_jpg", "exif", "dup_id_a", "dup_id_b", "bad_boxes", "partly_outside", "spare"],
                    [im["id"] for im in images]))
    files = {}

    # --- image files
    raw = path[role["truncated"]].read_bytes()
    path[role["truncated"]].write_bytes(raw[: len(raw) * 2 // 5])
    path[role["zero_byte"]].write_bytes(b"")
    path[role["text"]].write_text("this is not an image\n")
    path[role["folder"]].unlink()
    path[role["folder"]].mkdir()
    path[role["missing"]].unlink()
    with Image.open(path[role["resized"]]) as im:
        _save_like(im.convert("RGB").resize((im.width - 10, im.height - 6)), path[role["resized"]])
    with Image.open(path[role["gray"]]) as im:
        _save_like(im.convert("L"), path[role["gray"]])
    entry = {im["id"]: im for im in images}

    def rename(image_id: int, suffix: str) -> Path:
        new = path[image_id].with_name(path[image_id].stem + suffix)
        path[image_id].unlink()
        entry[image_id]["file_name"] = new.name
        path[image_id] = new
        return new

    with Image.open(path[role["cmyk"]]) as im:
        rgb = im.convert("RGB")
    rgb.convert("CMYK").save(rename(role["cmyk"], "_cmyk.jpg"), format="JPEG", quality=95)
    with Image.open(path[role["png_as_jpg"]]) as im:
        rgb = im.convert("RGB")
    rgb.save(rename(role["png_as_jpg"], "_png.jpg"), format="PNG")
    with Image.open(path[role["exif"]]) as im:
        rgb = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": COCO's sizes and boxes are in the stored frame
    rgb.save(rename(role["exif"], "_exif.jpg"), format="JPEG", quality=95, exif=exif)
    files.update({name: path[role[name]] for name in ("truncated", "zero_byte", "text", "folder", "missing",
                                                       "resized", "gray", "cmyk", "png_as_jpg", "exif")})

    # --- an image without annotations (a mirrored copy of the spare one, so its pixels are new)
    spare = entry[role["spare"]]
    empty_id = max(entry) + 1
    empty_name = f"empty_{spare['file_name']}"
    with Image.open(path[role["spare"]]) as im:
        _save_like(ImageOps.mirror(im.convert("RGB")), image_dir / empty_name)
    images.append({**spare, "id": empty_id, "file_name": empty_name})
    files["empty"] = image_dir / empty_name

    # --- annotations
    clean_annotations = [dict(a) for a in annotations]  # before any damage: the valid boxes
    by_image = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    first = lambda image_id: next(a for a in by_image[image_id] if not a.get("iscrowd", 0))  # noqa: E731
    first(role["dup_id_b"])["id"] = first(role["dup_id_a"])["id"]  # pycocotools would lose one of them
    del first(role["dup_id_a"])["area"]
    w = entry[role["partly_outside"]]["width"]
    a, b = [x for x in by_image[role["partly_outside"]] if not x.get("iscrowd", 0)][:2]
    a["bbox"] = [a["bbox"][0] - a["bbox"][0] - 25, a["bbox"][1], a["bbox"][2] + a["bbox"][0] + 25, a["bbox"][3]]
    b["bbox"] = [b["bbox"][0], b["bbox"][1], w + 40 - b["bbox"][0], b["bbox"][3]]  # to 40 px past the right edge
    clean_by_id = {x["id"]: x for x in clean_annotations}
    for x in (a, b):  # what the check must make of them: clipped to the image
        x1, x2 = max(x["bbox"][0], 0), min(x["bbox"][0] + x["bbox"][2], w)
        clean_by_id[x["id"]]["bbox"] = [x1, x["bbox"][1], x2 - x1, x["bbox"][3]]
    repaired = clean_by_id[first(role["dup_id_a"])["id"]]  # its area comes back as the box's
    repaired["area"] = repaired["bbox"][2] * repaired["bbox"][3]
    cat = annotations[0]["category_id"]
    next_id = max(x["id"] for x in annotations) + 1
    bad = role["bad_boxes"]
    for bbox in ([float("nan"), 5, 10, 10], [5, 5, float("inf"), 10], [5, 5, 10],  # malformed or non-finite
                 [5, 5, 0, 10], [5, 5, 10, -3],                                  # empty
                 [entry[bad]["width"] + 10, 5, 10, 10]):                          # outside
        annotations.append({"id": next_id, "image_id": bad, "category_id": cat, "bbox": bbox, "area": 100.0, "iscrowd": 0})
        next_id += 1
    annotations.append({"id": next_id, "image_id": 987654321, "category_id": cat, "bbox": [1, 1, 5, 5],
                        "area": 25.0, "iscrowd": 0})
    broken = {**{k: v for k, v in data.items() if k not in ("images", "annotations")},
              "images": images, "annotations": annotations}
    (out / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(broken))

    # the clean subset: the images the check keeps, their valid boxes, the same files
    dropped = {role[r] for r in ("truncated", "zero_byte", "text", "folder", "missing", "resized")}
    kept_ids = sorted(im["id"] for im in images if im["id"] not in dropped)
    clean_root = out.parent / (out.name + "_clean")
    (clean_root / "annotations").mkdir(parents=True)
    (clean_root / f"{split}2017").symlink_to(image_dir.resolve(), target_is_directory=True)
    clean = {**broken, "images": [im for im in images if im["id"] in kept_ids],
             "annotations": [x for x in clean_annotations if x["image_id"] in kept_ids]}
    (clean_root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(clean))
    crowd = sum(bool(x.get("iscrowd", 0)) for x in annotations)
    expected = {"unreadable image file": 4, "missing image file": 1, "decoded size differs from the JSON": 1,
                "not an RGB image": 2, "malformed or non-finite box": 3, "empty box (w or h <= 0)": 2,
                "box outside its image": 1, "box partly outside its image": 2,
                "duplicate or missing annotation id": 1, "missing or non-positive area": 1,
                "annotation of an unknown image": 1, "crowd annotation": crowd}
    if split == "train":
        expected["training image without boxes"] = 1
    expected = {k: v for k, v in expected.items() if v}
    return {"root": out, "clean_root": clean_root, "expected": expected, "kept_ids": kept_ids, "files": files,
            "role": role, "empty_id": empty_id}


# ---------------------------------------------------------------- single defects (issue 21)

def make_small_split(root: Path, split: str = "val", num_images: int = 3, size: tuple[int, int] = (40, 60)) -> Path:
    """A minimal clean COCO-format split in ``root``: ``num_images`` RGB PNGs of ``size`` (h, w) named
    000000000001.png..., image ids 1..N, one 20x10 box (category 1, annotation id = image id) on each;
    -> the annotation file."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(exist_ok=True)
    h, w = size
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i in range(1, num_images + 1):
        name = f"{i:012d}.png"
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / f"{split}2017" / name)
        data["images"].append({"id": i, "file_name": name, "width": w, "height": h})
        data["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 10],
                                    "area": 200.0, "iscrowd": 0})
    path = root / "annotations" / f"instances_{split}2017.json"
    path.write_text(json.dumps(data))
    return path


def edit_annotations(path: Path, change) -> dict:
    """Apply ``change(data)`` (in place) to the COCO JSON at ``path`` and write it back; -> the data."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return data


def write_16bit_gray(path: Path, size: tuple[int, int] = (40, 60), seed: int = 0) -> float:
    """A 16-bit grayscale image with real 16-bit detail (a curved ramp plus noise over about 13000..53000
    of 65535, so Pillow's clipping conversion makes it all white), as PNG (Pillow mode I;16), TIFF
    (I;16B) or PGM (I), by ``path``'s suffix; -> its true mean brightness on the 8-bit scale
    (mean / 65535 * 255, about 82)."""
    h, w = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, w)[None, :] * np.ones((h, 1))
    values = np.clip(13074 + 40000 * ramp ** 4 + rng.normal(0, 600, (h, w)), 0, 65535).astype(np.uint16)
    if path.suffix == ".pgm":  # binary PGM, maxval 65535: big-endian 16-bit samples
        path.write_bytes(f"P5 {w} {h} 65535\n".encode() + values.astype(">u2").tobytes())
    elif path.suffix in (".tif", ".tiff"):
        Image.fromarray(values.astype(">u2")).save(path)  # mode I;16B
    else:
        Image.fromarray(values).save(path)  # mode I;16, a 16-bit grayscale PNG
    return float(values.mean() / 65535 * 255)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_oversized_png(path: Path, width: int = 30000, height: int = 20000) -> None:
    """A valid all-black 1-bit PNG of width x height (600 M pixels by default, over twice Pillow's
    Image.MAX_IMAGE_PIXELS, so Image.open raises DecompressionBombError), written row block by row block
    so that it never holds the 75 MB of raw rows in memory; about 75 kB on disk."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    block = row * 1000
    idat = b"".join(packer.compress(block) for _ in range(height // 1000))
    idat += packer.compress(row * (height % 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
