"""COCO evaluation: ground truth as detections scores AP 1.0 through the same code the trainer uses."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tood_lib.config import DataConfig, get_preset
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.data.coco import CocoDetection, coco_tiny_root
from tood_lib.engine.evaluate import STAT_NAMES, detections_to_coco_results, evaluate_coco, save_results_json

TINY = coco_tiny_root()


def ground_truth_as_detections(ds: CocoDetection) -> list[dict]:
    """Each image's transformed targets mapped back to original pixels (as postprocess does), score 1."""
    detections = []
    for i in range(len(ds)):
        item = ds[i]
        sx, sy = item["scale_factor"]
        boxes = item["boxes"] / torch.tensor([sx, sy, sx, sy])
        detections.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": item["labels"]})
    return detections


@pytest.mark.skipif(TINY is None, reason="COCO Tiny not found (set COCO_TINY or put it at ../shared/coco_tiny)")
def test_ground_truth_scores_ap_1_on_coco_tiny_val():
    ds = CocoDetection(TINY, "val", DataConfig(), train=False)
    results = detections_to_coco_results(ground_truth_as_detections(ds), ds.image_ids, ds.cat_ids)
    assert len(results) == 815 - 11  # crowd boxes are not detections
    result = evaluate_coco(ds.coco, results, ds.image_ids)
    assert list(result.stats.index) == list(STAT_NAMES)
    assert result.box_ap == pytest.approx(1.0)
    assert result.stats[["AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"]].tolist() == pytest.approx([1.0] * 7)
    assert len(result.per_class) == 80 and np.allclose(result.per_class["AP"], 1.0)
    assert result.per_class["num_gt"].sum() == 804
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in result.summary_text


def test_ground_truth_scores_ap_1_on_builtin_val(tmp_path):
    root = build_builtin_dataset(tmp_path / "builtin", num_train=2, num_val=25, progress=False)
    ds = CocoDetection(root, "val", get_preset("tood_small").data, train=False)
    results = detections_to_coco_results(ground_truth_as_detections(ds), ds.image_ids, ds.cat_ids)
    result = evaluate_coco(ds.coco, results)
    assert result.box_ap == pytest.approx(1.0) and result.stats["AP50"] == pytest.approx(1.0)
    assert list(result.per_class["class"]) == ds.class_names


@pytest.fixture()
def small_gt(tmp_path):
    """Two 100x100 images, classes a (id 1), b (id 5), c (id 7; no boxes)."""
    root = tmp_path / "gt"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"},
                                                            {"id": 7, "name": "c"}]}
    for image_id in (1, 2):
        data["images"].append({"id": image_id, "file_name": f"{image_id}.png", "height": 100, "width": 100})
        Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(root / "val2017" / f"{image_id}.png")
    for ann_id, (image_id, bbox, cat) in enumerate([(1, [10, 10, 30, 40], 1), (1, [50, 50, 40, 40], 5),
                                                    (2, [0, 0, 50, 50], 1)], start=1):
        data["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox,
                                    "area": bbox[2] * bbox[3], "iscrowd": 0})
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return CocoDetection(root, "val", DataConfig(img_scale=(100, 100)), train=False)


def test_results_format(small_gt):
    dets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 50.0, 90.0, 90.0]]),
             "scores": torch.tensor([0.9, 0.4]), "labels": torch.tensor([0, 1])},
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    results = detections_to_coco_results(dets, [1, 2], small_gt.cat_ids)
    assert results == [{"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 30.0, 40.0], "score": pytest.approx(0.9)},
                       {"image_id": 1, "category_id": 5, "bbox": [50.0, 50.0, 40.0, 40.0], "score": pytest.approx(0.4)}]
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        detections_to_coco_results([{**dets[0], "labels": torch.tensor([0, 3])}], [1], small_gt.cat_ids)
    with pytest.raises(ValueError, match="2 detection dicts for 1 image ids"):
        detections_to_coco_results(dets, [1], small_gt.cat_ids)


def test_no_detections_give_ap_0_not_a_crash(small_gt):
    result = evaluate_coco(small_gt.coco, [])
    assert result.box_ap == 0.0 and result.stats["AP50"] == 0.0 and result.stats["AR100"] == 0.0
    table = result.per_class.set_index("class")
    assert table.loc["a", "AP"] == 0.0 and table.loc["b", "AP"] == 0.0
    assert np.isnan(table.loc["c", "AP"]) and table.loc["c", "note"] == "no gt" and table.loc["c", "num_gt"] == 0


def test_partial_detections_and_image_subset(small_gt):
    # image 1 found perfectly; image 2's box missed -> class a recall 1/2.
    dets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 50.0, 90.0, 90.0]]),
             "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1])}]
    results = detections_to_coco_results(dets, [1], small_gt.cat_ids)
    before = json.dumps(results)
    result = evaluate_coco(small_gt.coco, results)
    assert json.dumps(results) == before  # loadRes must not have added keys to the caller's dicts
    table = result.per_class.set_index("class")
    assert table.loc["b", "AP"] == pytest.approx(1.0) and 0.4 < table.loc["a", "AP"] < 0.6
    assert result.box_ap == pytest.approx(table["AP"].mean())  # COCO's AP: the mean over classes with gt
    only_image_1 = evaluate_coco(small_gt.coco, results, image_ids=[1])
    assert only_image_1.box_ap == pytest.approx(1.0)
    assert only_image_1.coco_eval.params.imgIds == [1]
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(small_gt.coco, [{**results[0], "image_id": 99}])
    json.dumps(result.to_dict())


def test_save_results_json(tmp_path):
    results = [{"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]
    path = save_results_json(results, tmp_path / "out" / "results.json")
    assert json.loads(path.read_text()) == results
