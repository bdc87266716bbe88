"""The built-in data set: deterministic, COCO-format, honest labels, atomic and cached builds."""
import hashlib
import json

import numpy as np
import pytest

from tood_lib.config import get_preset
from tood_lib.data.builtin import build_builtin_dataset, scene_seed
from tood_lib.data.coco import CocoDetection
from tood_lib.data.synthetic import CLASSES, draw_scene, shape_mask


def digest_tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def builtin_root(tmp_path_factory):
    return build_builtin_dataset(tmp_path_factory.mktemp("a") / "builtin", num_train=12, num_val=8, progress=False)


def test_two_builds_are_identical(builtin_root, tmp_path):
    other = build_builtin_dataset(tmp_path / "elsewhere", num_train=12, num_val=8, progress=False)
    first, second = digest_tree(builtin_root), digest_tree(other)
    assert first == second
    assert sum(name.endswith(".png") for name in first) == 20 and "manifest.json" in first


def test_coco_format(builtin_root):
    for split, count in (("train", 12), ("val", 8)):
        data = json.loads((builtin_root / "annotations" / f"instances_{split}2017.json").read_text())
        assert [c["id"] for c in data["categories"]] == list(range(1, 11))
        assert [c["name"] for c in data["categories"]] == list(CLASSES)
        assert len(data["images"]) == count and all(img["width"] == img["height"] == 320 for img in data["images"])
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(w * h, abs=0.01) and w >= 1 and h >= 1
            assert 0 <= x and x + w <= 320.01 and 0 <= y and y + h <= 320.01
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    train = json.loads((builtin_root / "annotations" / "instances_train2017.json").read_text())
    val = json.loads((builtin_root / "annotations" / "instances_val2017.json").read_text())
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    assert not {i["scene_seed"] for i in train["images"]} & {i["scene_seed"] for i in val["images"]}
    assert scene_seed(0, "val", 0) != scene_seed(0, "train", 0) != scene_seed(1, "train", 0)


def test_loads_through_coco_detection(builtin_root):
    cfg = get_preset("tood_small")
    ds = CocoDetection(builtin_root, "train", cfg.data, train=True)
    assert len(ds.cat_ids) == cfg.model.num_classes == 10 and ds.class_names == list(CLASSES)
    item = ds[0]
    side = min(cfg.data.img_scale)  # 320x320 scenes, resized to the preset's square scale
    assert item["image"].shape == (3, side, side) and item["image_size"] == (side, side)
    assert item["original_size"] == (320, 320)
    assert ds.stats["degenerate"] == 0 and ds.stats["crowd"] == 0
    pixels, boxes, labels = draw_scene(scene_seed(0, "train", 0), size=(320, 320))
    gt_boxes, gt_labels = ds.ground_truth(0)
    np.testing.assert_allclose(gt_boxes.numpy(), boxes, atol=0.02)
    assert gt_labels.tolist() == labels.tolist()


def test_cached_build_is_skipped_and_changed_parameters_rebuild(tmp_path):
    root = build_builtin_dataset(tmp_path / "b", num_train=2, num_val=1, progress=False)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    build_builtin_dataset(root, num_train=2, num_val=1, progress=False)
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    build_builtin_dataset(root, num_train=3, num_val=1, progress=False)
    assert len(list((root / "train2017").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folders left behind


def test_refuses_to_replace_a_folder_that_is_not_a_build(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="force=True"):
        build_builtin_dataset(tmp_path / "mine", num_train=1, num_val=1, progress=False)
    assert (tmp_path / "mine" / "precious.txt").exists()


def test_every_object_stays_at_least_half_visible():
    for seed in range(40):
        _, boxes, labels = draw_scene(seed, max_objects=8)
        owner = np.full((320, 320), -1)
        full = []
        for k, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
            mask = shape_mask(CLASSES[label], box, (320, 320))
            owner[mask] = k
            full.append(mask.sum())
        visible = np.bincount(owner[owner >= 0], minlength=len(full))
        assert (visible >= 0.45 * np.asarray(full)).all(), seed  # 0.5 up to float32 rounding of the boxes
