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

import contextlib
import copy
import io

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


# ----------------------------------------------------------------------------- COCO-style error breakdown
BREAKDOWN = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
BREAKDOWN_MEANING = {
    "C75": "PR at IoU 0.75",
    "C50": "PR at IoU 0.50",
    "Loc": "PR at IoU 0.10: localisation errors forgiven",
    "Sim": "and confusions with classes of the same supercategory removed",
    "Oth": "and confusions with every other class removed",
    "BG": "and every false positive on the background removed",
    "FN": "and every missed object found",
}


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _coco_from(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    _quiet(coco.createIndex)
    return coco


def _precision(coco_gt, results, iou_thrs, cat_ids, image_ids) -> np.ndarray:
    """COCOeval precision (T, R, K, A=4, M=1) at maxDets 100 for the given thresholds and classes."""
    from pycocotools.cocoeval import COCOeval

    from tood_lib.engine.evaluate import _load_results

    coco_eval = COCOeval(coco_gt, _load_results(coco_gt, results), iouType="bbox")
    coco_eval.params.imgIds = image_ids
    coco_eval.params.catIds = cat_ids
    coco_eval.params.iouThrs = np.array(iou_thrs, dtype=float)
    coco_eval.params.maxDets = [100]
    _quiet(coco_eval.evaluate)
    _quiet(coco_eval.accumulate)
    return coco_eval.eval["precision"]


def coco_error_breakdown(coco_gt, results: list[dict], image_ids: list[int] | None = None):
    """The COCO detection-analysis breakdown (Hoiem-style, as in the COCO API's ``analyze``).

    For every class, precision-recall curves that forgive one more kind of error at each step
    (``BREAKDOWN_MEANING``): C75, C50, Loc (IoU 0.1), Sim (ground truth of the other classes of the
    same supercategory ignored), Oth (of every other class ignored), BG (all remaining false positives
    removed) and FN (perfect recall). The gap between consecutive curves is what that error costs.

    -> (DataFrame: one row per class with ground truth and a last row "all", one AP column per step;
        precision array (7, R=101, K) at area "all").
    """
    image_ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    cat_ids = sorted(coco_gt.getCatIds())
    ps = np.full((len(BREAKDOWN), 101, len(cat_ids)), -1.0)
    ps[:3] = _precision(coco_gt, results, [0.75, 0.5, 0.1], cat_ids, image_ids)[:, :, :, 0, 0]
    super_of = {c["id"]: c.get("supercategory") for c in coco_gt.dataset["categories"]}
    for k, cat in enumerate(cat_ids):
        own = [r for r in results if r["category_id"] == cat]
        for stage, forgiven in ((3, lambda c: c != cat and super_of[c] == super_of[cat] and super_of[c] is not None),
                                (4, lambda c: c != cat)):
            dataset = copy.deepcopy(coco_gt.dataset)
            for ann in dataset["annotations"]:
                if forgiven(ann["category_id"]):  # a detection on it is neither right nor wrong: a crowd box
                    ann.update(category_id=cat, iscrowd=1, ignore=1)
            ps[stage, :, k] = _precision(_coco_from(dataset), own, [0.1], [cat], image_ids)[0, :, 0, 0, 0]
    has_gt = (ps[0] > -1).any(axis=0)
    ps[5] = np.where(ps[4] > 0, 1.0, np.where(ps[4] < 0, -1.0, 0.0))  # every remaining FP removed
    ps[6] = np.where(has_gt, 1.0, -1.0)[None, :]                      # every object found
    names = [coco_gt.cats[c]["name"] for c in cat_ids]
    rows = {}
    for k in np.flatnonzero(has_gt):
        rows[names[k]] = {s: float(ps[i, :, k][ps[i, :, k] > -1].mean()) for i, s in enumerate(BREAKDOWN)}
    table = pd.DataFrame(rows).T
    table.loc["all"] = table.mean()
    return table, ps[:, :, has_gt]


def plot_error_breakdown(precision: np.ndarray, title: str = "", ax=None):
    """The COCO analysis figure: stacked areas between the seven PR curves (mean over classes)."""
    import matplotlib.pyplot as plt

    recall = np.linspace(0, 1, 101)
    curves = [np.where(p > -1, p, np.nan).mean(axis=1) for p in precision]  # mean over classes, per step
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.95, len(BREAKDOWN)))
    for i in reversed(range(len(BREAKDOWN))):  # widest first, so each narrower curve is painted on top
        ax.fill_between(recall, 0, curves[i], color=colours[i], lw=0,
                        label=f"[{np.nanmean(curves[i]):.3f}] {BREAKDOWN[i]}: {BREAKDOWN_MEANING[BREAKDOWN[i]]}")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="lower left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "error breakdown (COCO analysis), mean over classes", fontsize=10)
    return fig if fig is not None else ax.figure
