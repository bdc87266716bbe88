"""CocoDetection on real COCO images (COCO Tiny), its errors on bad input, and the download script's offline logic."""
import hashlib
import http.server
import importlib.util
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tood_lib.config import DataConfig
from tood_lib.data.coco import (AnnotationFormatError, CocoDetection, DataNotFoundError, coco_tiny_root, collate,
                                find_coco_root)
from tood_lib.data.transforms import rescale_size

TINY = coco_tiny_root()
needs_tiny = pytest.mark.skipif(TINY is None, reason="COCO Tiny not found (set COCO_TINY or put it at ../shared/coco_tiny)")


# ---------------------------------------------------------------- COCO Tiny

@needs_tiny
@pytest.mark.parametrize("split, num_anns, num_crowd", [("train", 705, 6), ("val", 815, 11)])
def test_coco_tiny_loads_with_80_classes_and_no_crowd_targets(split, num_anns, num_crowd):
    ds = CocoDetection(TINY, split, DataConfig(), train=split == "train")
    assert len(ds) == 80 and len(ds.cat_ids) == 80 and ds.cat_ids == sorted(ds.cat_ids)
    assert ds.class_names[0] == "person" and ds.cat_ids[-1] == 90  # COCO's ids have gaps: 1..90
    assert ds.stats["crowd"] == num_crowd and ds.stats["degenerate"] == 0
    targets = [ds.ground_truth(i) for i in range(len(ds))]
    assert sum(len(b) for b, _ in targets) == ds.stats["annotations"] == num_anns - num_crowd
    crowd = {tuple(a["bbox"]) for a in ds.coco.dataset["annotations"] if a["iscrowd"]}
    for boxes, labels in targets:
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        assert not any(tuple(round(v, 2) for v in b) in crowd for b in xywh.tolist())
        assert labels.min() >= 0 and labels.max() < 80


@needs_tiny
def test_coco_tiny_resize_rule_and_box_scaling():
    ds = CocoDetection(TINY, "val", DataConfig(), train=False)
    for i in range(0, 80, 10):
        item = ds[i]
        h, w = item["original_size"]
        new_h, new_w = item["image_size"]
        assert (new_h, new_w) == rescale_size(h, w, (1333, 800)) == tuple(item["image"].shape[1:])
        assert min(new_h, new_w) == 800 or max(new_h, new_w) == 1333  # short side 800 unless long > 1333
        sx, sy = item["scale_factor"]
        boxes, labels = ds.ground_truth(i)
        torch.testing.assert_close(item["boxes"], boxes * torch.tensor([sx, sy, sx, sy]))
        assert torch.equal(item["labels"], labels) and not item["flipped"]


@needs_tiny
def test_flip_is_deterministic_per_seed_epoch_image_and_mirrors_boxes():
    cfg = DataConfig(flip_prob=0.5)
    ds = CocoDetection(TINY, "train", cfg, train=True, seed=3)
    same = CocoDetection(TINY, "train", cfg, train=True, seed=3)  # e.g. a resumed run
    pattern = {}
    for epoch in range(6):
        ds.set_epoch(epoch)
        same.set_epoch(epoch)
        pattern[epoch] = [ds.augmentation(i)[1] for i in range(len(ds))]
        assert pattern[epoch] == [same.augmentation(i)[1] for i in range(len(ds))]
        assert 10 < sum(pattern[epoch]) < 70
    assert len({tuple(p) for p in pattern.values()}) == 6  # differs across epochs
    # An image flipped in one epoch and not in another: pixels and boxes are mirror images.
    i = next(i for i in range(len(ds)) if len({pattern[e][i] for e in pattern}) == 2)
    e_flip, e_plain = (next(e for e in pattern if pattern[e][i] == f) for f in (True, False))
    ds.set_epoch(e_flip)
    a, a_again = ds[i], ds[i]
    ds.set_epoch(e_plain)
    b = ds[i]
    assert a["flipped"] and not b["flipped"] and torch.equal(a["image"], a_again["image"])
    torch.testing.assert_close(a["image"], b["image"].flip(-1))
    w = b["image_size"][1]
    torch.testing.assert_close(a["boxes"], torch.stack([w - b["boxes"][:, 2], b["boxes"][:, 1],
                                                        w - b["boxes"][:, 0], b["boxes"][:, 3]], 1))


@needs_tiny
def test_multiscale_short_side_is_an_integer_in_range():
    ds = CocoDetection(TINY, "train", DataConfig(multiscale_short=(480, 800)), train=True)
    scales = [ds.augmentation(i)[0] for i in range(len(ds))]
    shorts = {s for _, s in scales}
    assert all(long == 1333 for long, _ in scales) and all(480 <= s <= 800 and isinstance(s, int) for s in shorts)
    assert len(shorts) > 40
    item = ds[0]
    h, w = item["image_size"]
    assert min(h, w) == scales[0][1] or max(h, w) == 1333


@needs_tiny
def test_collate_pads_to_multiple_of_32():
    ds = CocoDetection(TINY, "val", DataConfig(), train=False)
    batch, metas = ds.collate([ds[0], ds[1], ds[2]])
    assert batch.images.shape[0] == 3 and batch.images.shape[2] % 32 == 0 and batch.images.shape[3] % 32 == 0
    assert (batch.pad_shapes % 32 == 0).all()
    assert batch.image_sizes.tolist() == [list(m["image_size"]) for m in metas]
    assert batch.original_sizes.tolist() == [list(m["original_size"]) for m in metas]
    assert batch.gt_mask.sum(1).tolist() == [len(ds.ground_truth(i)[0]) for i in range(3)]
    assert [m["image_id"] for m in metas] == ds.image_ids[:3] and "image" not in metas[0]
    for collate_fn in (ds.collate, collate):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_fn)
        batch, metas = next(iter(loader))
        assert batch.images.shape[0] == 2 and len(metas) == 2 and batch.images.shape[2] % 32 == 0


# ---------------------------------------------------------------- bad input

def write_coco(root: Path, split: str = "train", images: int = 3, boxes=None, make_files=True) -> Path:
    """A tiny COCO-format data set in root: `images` 40x60 PNGs, one box each unless `boxes` is given."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(exist_ok=True)
    data = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}]}
    for i in range(images):
        name = f"{i + 1:012d}.png"
        data["images"].append({"id": i + 1, "file_name": name, "height": 40, "width": 60})
        if make_files:
            Image.fromarray(np.full((40, 60, 3), 30 * i, np.uint8)).save(root / f"{split}2017" / name)
    for i, (image_id, bbox, cat) in enumerate(boxes or [(i + 1, [5, 5, 20, 10], 1) for i in range(images)]):
        data["annotations"].append({"id": i + 1, "image_id": image_id, "bbox": bbox, "category_id": cat,
                                    "area": bbox[2] * bbox[3], "iscrowd": 0})
    path = root / "annotations" / f"instances_{split}2017.json"
    path.write_text(json.dumps(data))
    return path


def test_missing_root_names_the_download_command_and_the_builtin_data(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as err:
        CocoDetection(root, "train", DataConfig(), train=True)
    assert isinstance(err.value, FileNotFoundError)
    assert f"python scripts/download_coco.py --root {root}" in str(err.value) and "build_builtin_dataset" in str(err.value)


def test_missing_annotation_file_names_the_exact_path(tmp_path):
    (tmp_path / "val2017").mkdir()
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "annotations" / "instances_val2017.json")):
        CocoDetection(tmp_path, "val", DataConfig(), train=False)


@pytest.mark.parametrize("content, message", [("", "is empty"), ("{}", "not a COCO instances file"),
                                              ("{\"images\": [", "not valid JSON"),
                                              ("{\"images\": [], \"annotations\": []}", "'categories'")])
def test_bad_annotation_files_say_what_is_wrong_and_where(tmp_path, content, message):
    path = write_coco(tmp_path)
    path.write_text(content)
    with pytest.raises(AnnotationFormatError, match=message) as err:
        CocoDetection(tmp_path, "train", DataConfig(), train=True)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)


def test_missing_image_folder(tmp_path):
    write_coco(tmp_path, make_files=False)
    (tmp_path / "train2017").rmdir()
    with pytest.raises(DataNotFoundError, match="train2017"):
        CocoDetection(tmp_path, "train", DataConfig(), train=True)


def test_labels_follow_sorted_category_ids(tmp_path):
    write_coco(tmp_path, boxes=[(1, [1, 1, 10, 10], 3), (2, [1, 1, 10, 10], 1), (3, [1, 1, 10, 10], 3)])
    ds = CocoDetection(tmp_path, "train", DataConfig(img_scale=(60, 40)), train=False)
    assert ds.cat_ids == [1, 3] and ds.class_names == ["a", "b"]
    assert [ds.ground_truth(i)[1].tolist() for i in range(3)] == [[1], [0], [1]]


def test_degenerate_boxes_are_skipped_and_counted(tmp_path, capsys):
    write_coco(tmp_path, boxes=[(1, [5, 5, 0, 10], 1), (1, [5, 5, 20, 10], 1), (2, [5, 5, 10, 0.5], 1),
                                (3, [float("nan"), 5, 10, 10], 1), (3, [70, 5, 10, 10], 1)])
    ds = CocoDetection(tmp_path, "train", DataConfig(img_scale=(60, 40), flip_prob=0.0), train=True)
    assert ds.stats["degenerate"] == 4 and ds.stats["empty_images_dropped"] == 2 and len(ds) == 1
    printed = capsys.readouterr().out
    for defect in ("empty box (w or h <= 0)", "thin box (w or h < 1 px)", "malformed or non-finite box",
                   "box outside its image", "training image without boxes"):
        assert defect in printed
    assert ds[0]["boxes"].tolist() == [[5.0, 5.0, 25.0, 15.0]]
    keep = CocoDetection(tmp_path, "train", DataConfig(img_scale=(60, 40)), train=True, drop_empty=False)
    assert len(keep) == 3 and len(keep[1]["boxes"]) == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_is_left_out_with_a_count_naming_it(tmp_path, capsys, damage):
    write_coco(tmp_path, images=3)
    bad = tmp_path / "train2017" / "000000000002.png"
    if damage == "garbage":
        bad.write_bytes(b"this is not an image" * 10)
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:300])
    ds = CocoDetection(tmp_path, "train", DataConfig(img_scale=(60, 40)), train=False)
    assert ds.image_ids == [1, 3] and ds[1]["image_id"] == 3 and ds[1]["file_name"] == "000000000003.png"
    assert ds.stats["unreadable_images"] == 1 and str(bad) in capsys.readouterr().out


def test_unreadable_jpg_with_garbage_bytes(tmp_path, capsys):
    write_coco(tmp_path, images=2)
    data = json.loads((tmp_path / "annotations" / "instances_train2017.json").read_text())
    data["images"][0]["file_name"] = "broken.jpg"
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    (tmp_path / "train2017" / "broken.jpg").write_bytes(bytes(range(256)) * 4)
    ds = CocoDetection(tmp_path, "train", DataConfig(img_scale=(60, 40)), train=False)
    assert ds.image_ids == [2] and ds[0]["image_id"] == 2
    assert "broken.jpg" in capsys.readouterr().out and ds.stats["unreadable_images"] == 1


def test_all_images_unreadable_raises(tmp_path):
    write_coco(tmp_path, images=2)
    for f in (tmp_path / "train2017").iterdir():
        f.write_bytes(b"xx")
    with pytest.raises(ValueError, match="no usable image") as err:
        CocoDetection(tmp_path, "train", DataConfig(), train=False)
    assert "unreadable image file  2" in str(err.value)


def test_find_coco_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("COCO_ROOT", str(tmp_path / "env"))
    assert find_coco_root(tmp_path / "x") == tmp_path / "x"
    assert find_coco_root() == tmp_path / "env"
    monkeypatch.delenv("COCO_ROOT")
    assert find_coco_root() == Path(__file__).resolve().parents[1] / "data" / "coco"


# ---------------------------------------------------------------- scripts/download_coco.py (offline)

def load_download_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "download_coco.py"
    spec = importlib.util.spec_from_file_location("download_coco", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_dry_run_prints_the_plan(tmp_path, capsys):
    dl = load_download_script()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations_trainval2017.zip.part").write_bytes(b"x" * 10)
    assert dl.main(["--root", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would download http://images.cocodataset.org/zips/train2017.zip" in out
    assert "[val]" in out and "nothing to do" in out
    assert "resuming at 10 bytes" in out
    assert list(tmp_path.iterdir()) != [] and not (tmp_path / "train2017.zip").exists()


def test_md5_verification(tmp_path):
    dl = load_download_script()
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello coco")
    dl.verify(path, hashlib.md5(b"hello coco").hexdigest(), progress=False)
    with pytest.raises(ValueError, match="does not match"):
        dl.verify(path, "0" * 32, progress=False)
    assert not path.exists()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring "Range: bytes=N-" as a real server does."""
    PAYLOAD = bytes(range(256)) * 500

    def do_GET(self):
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if "Range" in self.headers else 0
        body = self.PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.PAYLOAD) - 1}/{len(self.PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_download_resumes_a_partial_file(tmp_path):
    dl = load_download_script()
    server = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/val2017.zip"
        dest = tmp_path / "val2017.zip"
        (tmp_path / "val2017.zip.part").write_bytes(RangeHandler.PAYLOAD[:1000])
        dl.download(url, dest, progress=False)
        assert dest.read_bytes() == RangeHandler.PAYLOAD and not (tmp_path / "val2017.zip.part").exists()
        fresh = tmp_path / "fresh.zip"
        dl.download(url, fresh, progress=False)
        assert fresh.read_bytes() == RangeHandler.PAYLOAD
    finally:
        server.shutdown()
        server.server_close()
