"""How the geometric assignment schemes of Tables 1 and 2 see a data set's objects, before any training.

The fixed schemes were designed for COCO at 1333x800, where objects span 10-800 px and the five
pyramid levels share them. On a small data set at a small input size they can behave very
differently from there, whatever the network learns: RetinaNet's IoU thresholds need an anchor box
(8 x stride, 64 px on P3) that overlaps the object by IoU 0.5, and FCOS spreads an object's
positives over the levels its regression range picks. This module counts, per object, what each
scheme gives it, so that a result of the grid can be read against it.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from tood_lib.boxes import box_iou
from tood_lib.criterion import geometric_assign
from tood_lib.data.coco import collate
from tood_lib.model.priors import multilevel_priors

SCHEMES = ("max_iou", "fcos", "atss", "fovea")


def feature_sizes(height: int, width: int, strides) -> list[tuple[int, int]]:
    """(H_l, W_l) of each level for a padded input of height x width (FPN's ceil rule)."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def assignment_coverage(dataset, cfg, images: int = 200, batch_size: int = 16) -> pd.DataFrame:
    """One row per object of the first ``images`` images of ``dataset`` (a CocoDetection, transformed
    as the model sees it): ``image``, ``object``, ``side`` (√area in input pixels), ``best_anchor_iou``
    (the largest IoU of its box with any anchor box), and for each scheme of :data:`SCHEMES` the number
    of positives it gets (``pos_<scheme>``) and the number of pyramid levels they lie on
    (``levels_<scheme>``). ``cfg``: the experiment's Config (its strides and ``tal`` settings)."""
    strides = list(cfg.model.strides)
    rows = []
    count = min(images, len(dataset))
    for start in range(0, count, batch_size):
        batch, _ = collate([dataset[i] for i in range(start, min(start + batch_size, count))])
        height, width = batch.images.shape[-2:]
        sizes = feature_sizes(height, width, strides)
        level_priors = multilevel_priors(sizes, strides, anchor_scale=cfg.model.anchor_scale)
        priors = torch.cat(level_priors)
        level_of = torch.repeat_interleave(torch.arange(len(strides)), torch.tensor([len(p) for p in level_priors]))
        anchor_iou = box_iou(priors.expand(len(batch.gt_boxes), -1, -1), batch.gt_boxes.float())  # (B, A, G)
        found = {m: geometric_assign(sizes, strides, batch, cfg.tal, m, anchor_scale=cfg.model.anchor_scale) for m in SCHEMES}
        for b in range(len(batch.gt_boxes)):
            for g in batch.gt_mask[b].nonzero().squeeze(1).tolist():
                x1, y1, x2, y2 = batch.gt_boxes[b, g].tolist()
                row = dict(image=start + b, object=g, side=math.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0)),
                           best_anchor_iou=float(anchor_iou[b, :, g].max()))
                for m, a in found.items():
                    mine = a.positive[b] & (a.gt_index[b] == g)
                    row[f"pos_{m}"] = int(mine.sum())
                    row[f"levels_{m}"] = int(level_of[mine].unique().numel())
                rows.append(row)
    return pd.DataFrame(rows)


def coverage_summary(coverage: pd.DataFrame, pos_iou_thr: float = 0.5) -> pd.DataFrame:
    """Per scheme: mean positives per object, share of objects with none, share spread over more than
    one level; plus (scheme "anchors") the share of objects no anchor box overlaps by ``pos_iou_thr``."""
    rows = []
    for m in SCHEMES:
        pos, levels = coverage[f"pos_{m}"], coverage[f"levels_{m}"]
        rows.append(dict(scheme=m, positives_per_object=pos.mean(), objects_without_positive=(pos == 0).mean(),
                         objects_on_several_levels=(levels > 1).mean()))
    summary = pd.DataFrame(rows).set_index("scheme")
    summary.attrs["objects_below_pos_iou"] = float((coverage["best_anchor_iou"] < pos_iou_thr).mean())
    return summary


def plot_coverage(coverages: dict[str, pd.DataFrame], pos_iou_thr: float = 0.5, neg_iou_thr: float = 0.4):
    """Left: each object's best IoU with any anchor box (one histogram per data set) against RetinaNet's
    thresholds. Right: positives per object of each scheme (mean, with the share of objects left
    without any written on the bar). ``coverages``: {data set: assignment_coverage(...)}."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    bins = np.linspace(0, 1, 21)
    for name, cov in coverages.items():
        left.hist(cov["best_anchor_iou"], bins=bins, alpha=0.55, label=f"{name} ({len(cov)} objects)")
    left.axvline(pos_iou_thr, color="green", linestyle="--", label=f"positive from IoU {pos_iou_thr}")
    left.axvline(neg_iou_thr, color="red", linestyle=":", label=f"negative below IoU {neg_iou_thr}")
    left.set_xlabel("best IoU of the object with any anchor box (8 x stride)")
    left.set_ylabel("objects")
    left.legend(fontsize=8)
    width = 0.8 / max(len(coverages), 1)
    x = np.arange(len(SCHEMES))
    for k, (name, cov) in enumerate(coverages.items()):
        summary = coverage_summary(cov, pos_iou_thr)
        bars = right.bar(x + k * width, summary["positives_per_object"], width, label=name)
        for bar, none in zip(bars, summary["objects_without_positive"]):
            right.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{none:.0%}\nnone", ha="center",
                       va="bottom", fontsize=7)
    right.set_xticks(x + width * (len(coverages) - 1) / 2, [
        {"max_iou": "IoU thresholds", "fcos": "FCOS centre\nsampling", "atss": "ATSS", "fovea": "FoveaBox"}[m]
        for m in SCHEMES])
    right.set_ylabel("positives per object (mean)")
    right.margins(y=0.2)
    right.legend(fontsize=8)
    fig.suptitle("what the geometric schemes give each object at 128 px, before any training", fontsize=11)
    fig.tight_layout()
    return fig
