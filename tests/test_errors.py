"""Table 6's post-NMS box counts: correct, redundant, error and background detections."""
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
