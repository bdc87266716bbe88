"""The ranking diagnosis: does a detector's score order its boxes by how well they are localised?

COCO AP ranks every detection of a class by its score. Two detectors that find the same objects with
the same boxes can score very differently if one ranks its poorly localised or background boxes above
its good ones. On the first CPU bench, T-Head + ATSS found more objects than parallel + ATSS, with
better IoU, and still scored lower AP50: it emitted about twice as many boxes per image, most of them
poor (issue 19). Under ATSS the parallel head ranks by cls x centerness; the T-Head by
sqrt(cls x M), both trained on binary targets. This module measures, on a model's post-NMS
detections over a val split:

* how many boxes it emits per image, and how often it reaches the cap (``test.max_per_img``);
* the reliability curve: per score bin, how many detections fall in it and the mean IoU of each with
  the object of its class it overlaps most (0 for a box on no object) -- a well-ranked detector's
  curve rises with the score;
* ``score_iou_spearman``: the rank correlation of score and that IoU over all detections, one number
  for the same question;
* the categories of Table 6 (``errors.classify_detections``: correct, redundant, error, background).

``ablations/diagnose.py`` runs it on every finished Table 6 run of the grid.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tood_lib.analysis.errors import CATEGORIES, classify_detections
from tood_lib.boxes import box_iou

SCORE_BINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # the test threshold is 0.05: the first bin is below it


def detection_rows(detections: list[dict], dataset) -> pd.DataFrame:
    """One row per detection: image (index), score, label, ``iou`` (best IoU with an object of its own
    class, 0 when none), category (Table 6's). ``detections`` as ``predict_dataset`` returns them, in the
    data set's order (boxes in original-image pixels, as ``dataset.ground_truth`` gives the objects)."""
    rows = []
    for index, det in enumerate(detections):
        gt_boxes, gt_labels = dataset.ground_truth(index)
        boxes, scores, labels = det["boxes"].float(), det["scores"].float(), det["labels"]
        if len(gt_boxes):
            ious = box_iou(boxes, gt_boxes.float())
            ious = torch.where(labels.view(-1, 1) == gt_labels.view(1, -1), ious, torch.zeros_like(ious))
            best = ious.max(1).values if len(boxes) else torch.zeros(0)
        else:
            best = torch.zeros(len(boxes))
        categories = classify_detections(boxes, scores, labels, gt_boxes, gt_labels)
        rows += [dict(image=index, score=float(s), label=int(c), iou=float(u), category=k)
                 for s, c, u, k in zip(scores, labels, best, categories)]
    return pd.DataFrame(rows, columns=["image", "score", "label", "iou", "category"])


def reliability_curve(rows: pd.DataFrame, bins=SCORE_BINS) -> pd.DataFrame:
    """Per score bin [lo, hi): detections, their mean IoU with their object, and the share of them that
    are correct (Table 6's category)."""
    edges = np.asarray(bins, float)
    which = np.clip(np.digitize(rows["score"].to_numpy(), edges[1:-1]), 0, len(edges) - 2)
    out = []
    for b in range(len(edges) - 1):
        part = rows[which == b]
        out.append(dict(score_lo=edges[b], score_hi=edges[b + 1], detections=len(part),
                        mean_iou=float(part["iou"].mean()) if len(part) else float("nan"),
                        correct_share=float((part["category"] == "correct").mean()) if len(part) else float("nan")))
    return pd.DataFrame(out)


def ranking_summary(rows: pd.DataFrame, images: int, cap: int) -> dict:
    """The diagnosis in numbers: detections per image, the share of images at the cap, the score-IoU
    rank correlation, each category's count, and the mean IoU of the top-scored and of the
    bottom-scored half of the detections."""
    per_image = rows.groupby("image").size().reindex(range(images), fill_value=0)
    median = rows["score"].median() if len(rows) else float("nan")
    out = dict(images=images, detections=len(rows), detections_per_image=float(per_image.mean()),
               images_at_cap=float((per_image >= cap).mean()),
               score_iou_spearman=float(rows["score"].rank().corr(rows["iou"].rank())) if len(rows) > 2 else float("nan"),
               mean_iou_top_half=float(rows.loc[rows["score"] >= median, "iou"].mean()) if len(rows) else float("nan"),
               mean_iou_bottom_half=float(rows.loc[rows["score"] < median, "iou"].mean()) if len(rows) else float("nan"))
    out.update({k: int((rows["category"] == k).sum()) for k in CATEGORIES})
    return out


def ranking_diagnosis(model, dataset, progress: bool = False) -> tuple[dict, pd.DataFrame]:
    """A model on a val split (test mode; cached features allowed) -> (:func:`ranking_summary`,
    :func:`reliability_curve`)."""
    from tood_lib.engine.inference import predict_dataset

    detections, _ = predict_dataset(model, dataset, progress=progress)
    rows = detection_rows(detections, dataset)
    return ranking_summary(rows, len(dataset), model.cfg.test.max_per_img), reliability_curve(rows)


def plot_reliability(reliability: pd.DataFrame, experiments: dict[str, str], dataset: str):
    """The reliability curves of ``experiments`` ({label: experiment}) on one data set: per score bin, the
    detections' mean IoU with their object (line, mean over seeds) and how many detections fall in it
    (bars, mean over seeds, log scale). A well-ranked detector's line rises with the score, and its bars
    do not pile up at the lowest scores. ``reliability``: ``results/reliability_cpu.csv``."""
    import matplotlib.pyplot as plt

    part = reliability[(reliability["dataset"] == dataset) & (reliability["detections"] > 0)]
    fig, (ax_iou, ax_n) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    for i, (label, name) in enumerate(experiments.items()):
        rows = part[part["experiment"] == name]
        if rows.empty:
            continue
        mean = rows.groupby("score_lo").agg(mean_iou=("mean_iou", "mean"), detections=("detections", "mean"),
                                             score_hi=("score_hi", "first"), seeds=("seed", "nunique"))
        centre = (mean.index + mean["score_hi"]) / 2
        ax_iou.plot(centre, mean["mean_iou"], "o-", color=f"C{i}", label=f"{label} ({int(mean['seeds'].max())} seeds)")
        width = (mean["score_hi"] - mean.index) / (len(experiments) + 1)
        ax_n.bar(mean.index + width * (i + 0.5), mean["detections"], width=width, align="edge", color=f"C{i}", label=label)
    ax_iou.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="score = IoU")
    ax_iou.set(xlabel="detection score (bin centre)", ylabel="mean IoU with its object", xlim=(0, 1), ylim=(0, 1),
               title=f"{dataset}: is a higher score a better box?")
    ax_n.set(xlabel="detection score", ylabel="detections per bin (mean over seeds)", yscale="log", xlim=(0, 1),
             title=f"{dataset}: where the detections' scores lie")
    for ax in (ax_iou, ax_n):  # (a data set without finished runs has nothing to label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax_iou.grid(alpha=0.3)
    return fig
