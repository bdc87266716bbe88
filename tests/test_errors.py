"""Table 6's post-NMS box counts: correct, redundant, error and background detections."""
import pytest
import torch

from tood_lib.analysis.errors import classify_detections, nms_box_counts


def test_each_category_on_a_hand_made_image():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 70.0]])
    gt_labels = torch.tensor([0, 1])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 9.0],      # IoU 0.9 with object 0: correct (highest score)
                          [0.0, 0.0, 10.0, 8.0],      # IoU 0.8 with object 0 again: redundant
                          [0.0, 0.0, 10.0, 3.0],      # IoU 0.3: error
                          [100.0, 100.0, 110.0, 110.0],  # nowhere: background
                          [50.0, 50.0, 70.0, 70.0],   # exact box of object 1 but the wrong class: background
                          [50.0, 50.0, 70.0, 68.0]])  # object 1, right class: correct
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = torch.tensor([0, 0, 0, 0, 0, 1])
    assert classify_detections(boxes, scores, labels, gt, gt_labels) == [
        "correct", "redundant", "error", "background", "background", "correct"]


def test_the_higher_score_claims_the_object_whatever_the_order():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 10.0]])
    # the worse box scores higher: it is the correct one, the perfect box becomes redundant (misalignment!)
    out = classify_detections(boxes, torch.tensor([0.9, 0.5]), torch.tensor([0, 0]), gt, torch.tensor([0]))
    assert out == ["correct", "redundant"]


def test_counts_over_a_data_set_and_images_without_objects():
    class Tiny:
        def ground_truth(self, index):
            if index == 0:
                return torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([2])
            return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)

    detections = [dict(boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0]]),
                       scores=torch.tensor([0.9, 0.8]), labels=torch.tensor([2, 2])),
                  dict(boxes=torch.tensor([[0.0, 0.0, 5.0, 5.0]]), scores=torch.tensor([0.3]), labels=torch.tensor([0]))]
    assert nms_box_counts(detections, Tiny()) == dict(correct=1, redundant=1, error=0, background=1, objects=1)


def _coco(annotations, categories):
    import contextlib
    import io

    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dict(images=[dict(id=1, width=200, height=200), dict(id=2, width=200, height=200)],
                        categories=categories,
                        annotations=[dict(id=i + 1, image_id=img, category_id=cat, bbox=box, area=box[2] * box[3],
                                          iscrowd=0) for i, (img, cat, box) in enumerate(annotations)])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_error_breakdown_forgives_one_kind_of_error_per_step():
    from tood_lib.analysis.errors import BREAKDOWN, coco_error_breakdown
    from tood_lib.engine.evaluate import evaluate_coco

    categories = [dict(id=1, name="cat", supercategory="animal"), dict(id=2, name="dog", supercategory="animal"),
                  dict(id=3, name="car", supercategory="vehicle")]
    gt = _coco([(1, 1, [10, 10, 40, 40]), (1, 2, [100, 100, 40, 40]), (2, 3, [20, 20, 50, 50])], categories)
    results = [dict(image_id=1, category_id=1, bbox=[100, 100, 40, 40], score=0.9),  # a cat on the dog: similar-class confusion
               dict(image_id=1, category_id=1, bbox=[10, 10, 40, 40], score=0.8),    # the cat
               dict(image_id=1, category_id=2, bbox=[100, 100, 40, 40], score=0.9),  # the dog
               dict(image_id=2, category_id=3, bbox=[20, 20, 50, 15], score=0.9)]    # the car, IoU 0.3: localisation error
    table, precision = coco_error_breakdown(gt, results)
    assert list(table.columns) == list(BREAKDOWN) and list(table.index) == ["cat", "dog", "car", "all"]
    assert table.loc["cat", "C50"] == pytest.approx(0.5) and table.loc["cat", "Sim"] == pytest.approx(1.0)
    assert table.loc["dog", "C75"] == pytest.approx(1.0)
    assert table.loc["car", "C50"] == pytest.approx(0.0) and table.loc["car", "Loc"] == pytest.approx(1.0)
    assert (table.diff(axis=1).iloc[:, 1:] >= -1e-9).all().all()  # each step can only forgive more
    stats = evaluate_coco(gt, results).stats
    assert table.loc["all", "C75"] == pytest.approx(stats["AP75"]) and table.loc["all", "C50"] == pytest.approx(stats["AP50"])
    assert precision.shape == (7, 101, 3)


def test_other_class_confusion_needs_the_oth_step():
    from tood_lib.analysis.errors import coco_error_breakdown

    categories = [dict(id=1, name="cat", supercategory="animal"), dict(id=3, name="car", supercategory="vehicle")]
    gt = _coco([(1, 1, [10, 10, 40, 40]), (1, 3, [100, 100, 40, 40])], categories)
    results = [dict(image_id=1, category_id=1, bbox=[100, 100, 40, 40], score=0.9),  # a "cat" on the car
               dict(image_id=1, category_id=1, bbox=[10, 10, 40, 40], score=0.8)]
    table, _ = coco_error_breakdown(gt, results)
    assert table.loc["cat", "Sim"] == pytest.approx(0.5)  # a car is not an animal: not forgiven yet
    assert table.loc["cat", "Oth"] == pytest.approx(1.0)
