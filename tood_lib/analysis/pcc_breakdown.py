"""Where Table 6's PCC comes from: an object's top-50 pool, split by where its anchors sit.

Table 6's PCC (``alignment.instance_alignment``) takes, for each object, the dense predictions whose
boxes overlap it more than any other object, keeps the 50 with the highest score for its class, and
correlates their ranks by score and by IoU. That pool mixes two kinds of anchor: those whose point
lies **inside** the object (the only ones either assigner can make positive) and those **outside**
it, whose boxes still reach it. This module breaks the statistic down per object, so that a
difference in PCC between two models can be traced to one part of the pool (issue 19: parallel +
TAL has a lower PCC than parallel + ATSS on the multi-level bench's shapes, the paper has it higher).

Per object (:func:`object_breakdown`):

* ``pcc_top10``, ``pcc_top20``, ``pcc_top50``: the PCC over the 10, 20, 50 best-scored of the pool
  (``pcc_top50`` is Table 6's);
* ``inside_share``: the share of the top 50 whose anchor point lies inside the object;
* ``pcc_inside``, ``pcc_outside``: the rank correlation of score and IoU within each part of the top 50;
* ``iou_inside``, ``iou_outside``: each part's mean IoU; ``score_inside``, ``score_outside``: each
  part's mean score relative to the object's best score (so that models with other score scales compare);
* ``pcc_all_inside``: score against IoU over *every* valid anchor inside the object, in the pool or not.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor
from torchvision.ops import box_iou

from tood_lib.analysis.alignment import DensePrediction, dense_predictions, inside_object, rank_correlation

TOP = 50  # Table 6's pool per object
PARTS = ("inside", "outside")


def _mean(values: Tensor) -> float:
    return float(values.float().mean()) if len(values) else math.nan


def object_breakdown(pred: DensePrediction, gt_boxes: Tensor, gt_labels: Tensor, top: int = TOP) -> list[dict]:
    """The breakdown of each object of one image (module docstring). gt_boxes (G, 4) pixels,
    gt_labels (G,) -> a dict per object whose pool holds 2 predictions or more (with fewer there is no
    rank correlation: Table 6's mean skips those objects too, so the mean of ``pcc_top50`` over the
    rows is Table 6's PCC)."""
    if len(gt_boxes) == 0:
        return []
    ious = box_iou(pred.boxes, gt_boxes.to(pred.boxes)).masked_fill(~pred.valid[:, None], 0)  # (A, G)
    best_iou, owner = ious.max(dim=1)
    rows = []
    for g in range(len(gt_boxes)):
        label = int(gt_labels[g])
        inside_all = inside_object(pred, gt_boxes[g])  # (A,)
        pool = ((owner == g) & (best_iou > 0)).nonzero().squeeze(1)  # as instance_alignment's
        if len(pool) < 2:
            continue
        scores = pred.scores[pool, label]
        order = scores.argsort(descending=True, stable=True)[:top]
        score, iou, inside = scores[order], best_iou[pool][order], inside_all[pool][order]
        row = dict(gt=g, label=label, pool=len(pool), inside_share=_mean(inside))
        for k in (10, 20, top):
            row[f"pcc_top{k}"] = rank_correlation(score[:k], iou[:k])
        for part, mask in zip(PARTS, (inside, ~inside)):
            row[f"pcc_{part}"] = rank_correlation(score[mask], iou[mask])
            row[f"iou_{part}"] = _mean(iou[mask])
            row[f"score_{part}"] = _mean(score[mask] / score[0].clamp(min=1e-12))
        all_scores, all_iou = pred.scores[inside_all, label], ious[inside_all, g]
        row["pcc_all_inside"] = rank_correlation(all_scores, all_iou)
        rows.append(row)
    return rows


@torch.no_grad()
def pcc_breakdown(model, dataset, batch_size: int = 8, max_images: int | None = None) -> pd.DataFrame:
    """The breakdown for every object of a (test-mode) data set -> one row per object, with its image_id."""
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    rows = []
    for start in range(0, n, batch_size):
        batch, metas = dataset.collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        for i, pred in enumerate(dense_predictions(model, batch)):
            mask = batch.gt_mask[i]
            rows += [dict(image_id=metas[i]["image_id"], **r)
                     for r in object_breakdown(pred, batch.gt_boxes[i][mask], batch.gt_labels[i][mask])]
    return pd.DataFrame(rows)


def summarise_breakdown(per_object: pd.DataFrame) -> dict:
    """Means over the objects (NaN-skipping: a part can be empty for an object), and how many objects."""
    columns = [c for c in per_object.columns if c not in ("image_id", "gt", "label")]
    summary = {c: float(per_object[c].mean(skipna=True)) for c in columns}
    summary["objects"] = int(len(per_object))
    return summary
