"""COCO box evaluation with pycocotools' COCOeval, the tool every TOOD number in the paper comes from.

Nothing is re-implemented: detections are converted to COCO's results format, handed to
``COCOeval(iouType="bbox")`` with its default parameters, and its numbers are read back into
pandas tables. The 12 summary numbers keep COCOeval's order and get their usual names.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from tood_lib.engine.atomic import atomic_write_text

# COCOeval.stats, in its order: AP over IoU 0.50:0.95, at 0.50, at 0.75, for small/medium/large
# objects (all at 100 detections per image), then AR at 1/10/100 detections and per size.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class EvalResult:
    """stats:       pd.Series of the 12 COCO numbers (index STAT_NAMES), in 0..1; NaN where COCOeval
                    reports -1 (no ground truth in that range).
    per_class:      pd.DataFrame, one row per category: class, category_id, num_gt (non-crowd boxes
                    in the evaluated images), AP, AP50 (area "all", 100 detections), note ("no gt"
                    where AP is NaN).
    box_ap:         stats["AP"], the headline number.
    summary_text:   COCOeval.summarize()'s printout.
    coco_eval:      the COCOeval object (its evalImgs and eval arrays, for error analysis)."""

    stats: pd.Series
    per_class: pd.DataFrame
    box_ap: float
    summary_text: str
    coco_eval: COCOeval

    def to_dict(self) -> dict:
        """JSON-friendly: the 12 numbers (None for NaN) and the per-class table."""
        stats = {k: (None if np.isnan(v) else float(v)) for k, v in self.stats.items()}
        per_class = json.loads(self.per_class.to_json(orient="records"))
        return {"stats": stats, "per_class": per_class}


def detections_to_coco_results(detections: list[dict[str, Tensor]], image_ids: list[int],
                               cat_ids: list[int]) -> list[dict]:
    """Detections of each image -> COCO results: [{image_id, category_id, bbox [x, y, w, h], score}].

    detections[i] has ``boxes`` (N, 4) x1y1x2y2 in pixels of the original image, ``scores`` (N,) and
    ``labels`` (N,) in 0..K-1 (as ``postprocess`` returns them); image_ids[i] is its COCO image id;
    cat_ids[k] is the COCO category id of label k (``CocoDetection.cat_ids``).
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"got {len(detections)} detection dicts for {len(image_ids)} image ids")
    results = []
    for det, image_id in zip(detections, image_ids):
        boxes = det["boxes"].detach().float().cpu().reshape(-1, 4)
        xywh = boxes.clone()
        xywh[:, 2:] -= boxes[:, :2]
        labels = det["labels"].detach().cpu().tolist()
        if labels and not 0 <= min(labels) <= max(labels) < len(cat_ids):
            raise ValueError(f"image {image_id}: labels must be in 0..{len(cat_ids) - 1}, got {min(labels)}..{max(labels)}")
        for box, score, label in zip(xywh.tolist(), det["scores"].detach().float().cpu().tolist(), labels):
            results.append({"image_id": int(image_id), "category_id": int(cat_ids[label]),
                            "bbox": [round(v, 2) for v in box], "score": float(score)})
    return results


def save_results_json(results: list[dict], path: str | Path) -> Path:
    """Write COCO results (the format of the COCO test server) as JSON, atomically."""
    return atomic_write_text(path, json.dumps(results))


def _load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """COCO.loadRes, but also for an empty list (loadRes indexes results[0]) and without
    modifying the caller's dicts (loadRes adds area, id and iscrowd to them)."""
    known = set(coco_gt.getImgIds())
    unknown = {r["image_id"] for r in results} - known
    if unknown:
        raise ValueError(f"results name {len(unknown)} image ids that are not in the ground truth, "
                         f"e.g. {sorted(unknown)[:5]}")
    if results:
        with contextlib.redirect_stdout(io.StringIO()):  # "Loading and preparing results..."
            return coco_gt.loadRes(copy.deepcopy(results))
    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                       "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def _per_class_table(coco_eval: COCOeval, coco_gt: COCO) -> pd.DataFrame:
    params = coco_eval.params
    precision = coco_eval.eval["precision"]  # (T iou thresholds, R recall points, K classes, A areas, M maxDets)
    area_all, max_dets = params.areaRngLbl.index("all"), len(params.maxDets) - 1  # "all", 100 detections
    rows = []
    for k, cat_id in enumerate(params.catIds):
        p = precision[:, :, k, area_all, max_dets]
        p50 = p[np.isclose(params.iouThrs, 0.5)]
        ap = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else float("nan")
        num_gt = len(coco_gt.getAnnIds(imgIds=params.imgIds, catIds=[cat_id], iscrowd=False))
        rows.append({"class": coco_gt.cats[cat_id]["name"], "category_id": cat_id, "num_gt": num_gt,
                     "AP": ap, "AP50": ap50, "note": "no gt" if np.isnan(ap) else ""})
    return pd.DataFrame(rows)


def evaluate_coco(coco_gt: COCO, results: list[dict], image_ids: list[int] | None = None) -> EvalResult:
    """Run COCOeval (bbox) on COCO-format results; ``image_ids`` restricts it to those images
    (default: every image of coco_gt). No detections at all give AP 0 where there is ground truth."""
    coco_dt = _load_results(coco_gt, results)
    coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if image_ids is not None:
        coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # progress lines and timings
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    stats = pd.Series(np.where(coco_eval.stats < 0, np.nan, coco_eval.stats), index=list(STAT_NAMES), name="bbox")
    return EvalResult(stats=stats, per_class=_per_class_table(coco_eval, coco_gt), box_ap=float(stats["AP"]),
                      summary_text=summary.getvalue(), coco_eval=coco_eval)
