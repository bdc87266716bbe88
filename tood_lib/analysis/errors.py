"""Error analysis of a detector's final (post-NMS) boxes.

``nms_box_counts`` gives the "with NMS" columns of the paper's Table 6: every detection kept by NMS
is matched, in order of decreasing score, to the ground-truth boxes of its own class:

* correct:   IoU >= 0.5 with an object no higher-scoring detection has claimed yet;
* redundant: IoU >= 0.5 with an object already claimed (a duplicate NMS failed to remove);
* error:     best IoU in (0.1, 0.5), a poorly localised box (or one on the wrong object);
* background (best IoU <= 0.1) is counted too, though the paper's table leaves it out.

Better-aligned detectors have fewer redundant and error boxes: their highest-scoring box is also
their best-localised one, so NMS keeps the right box and removes its neighbours.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tood_lib.boxes import box_iou

CATEGORIES = ("correct", "redundant", "error", "background")


def classify_detections(boxes: Tensor, scores: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                        match_iou: float = 0.5, error_iou: float = 0.1) -> list[str]:
    """One image: boxes (N, 4), scores (N,), labels (N,) of its detections; gt_boxes (G, 4), gt_labels (G,)
    in the same pixels -> N categories (see the module docstring), in the detections' order."""
    categories = [""] * len(boxes)
    claimed = torch.zeros(len(gt_boxes), dtype=torch.bool)
    ious = box_iou(boxes.float(), gt_boxes.float()) if len(gt_boxes) else torch.zeros(len(boxes), 0)
    same_class = labels.view(-1, 1) == gt_labels.view(1, -1)
    ious = torch.where(same_class, ious, torch.zeros_like(ious))
    for i in scores.argsort(descending=True, stable=True).tolist():
        best, g = (ious[i].max(0) if ious.shape[1] else (torch.tensor(0.0), torch.tensor(-1)))
        if best >= match_iou:
            categories[i] = "redundant" if claimed[g] else "correct"
            claimed[g] = True
        elif best > error_iou:
            categories[i] = "error"
        else:
            categories[i] = "background"
    return categories


def nms_box_counts(detections: list[dict], dataset, image_ids: list[int] | None = None) -> dict[str, int]:
    """Table 6's "with NMS" counts over a data set.

    detections: per image dicts with ``boxes`` (original pixels), ``scores``, ``labels``, as
    ``predict_dataset`` returns them (in the data set's order). -> {category: count, "objects": G}.
    """
    counts = dict.fromkeys(CATEGORIES, 0)
    objects = 0
    for index, det in enumerate(detections):
        gt_boxes, gt_labels = dataset.ground_truth(index)
        objects += len(gt_labels)
        for category in classify_detections(det["boxes"], det["scores"], det["labels"], gt_boxes, gt_labels):
            counts[category] += 1
    return {**counts, "objects": objects}


def nms_box_table(models: dict, dataset, progress: bool = False) -> pd.DataFrame:
    """``nms_box_counts`` of several models ({name: model}) on one data set, one row per model."""
    from tood_lib.engine.inference import predict_dataset

    rows = {}
    for name, model in models.items():
        detections, _ = predict_dataset(model, dataset, progress=progress)
        rows[name] = nms_box_counts(detections, dataset)
    return pd.DataFrame(rows).T.astype(np.int64)
