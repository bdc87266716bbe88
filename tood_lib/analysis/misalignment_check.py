"""The misaligned data set's design check: is it measurably misaligned? Declared before the grid runs.

A data set built to separate the best place to classify from the best place to locate must
*measure* that way on a trained model. The rule (issue 19), on a parallel head trained with ATSS
(the grid's ``atss_parallel``, seed 0, the bench recipe), compared with the same model on the shapes:

1. **distance**: the median over objects of the distance between the object's best-classified
   anchor (highest score of its class) and its best-localised anchor (highest IoU of the predicted
   box), divided by the box's size √(w·h), is larger on the misaligned set than on the shapes;
2. **PCC**: Table 6's mean PCC (rank correlation of score and IoU among each object's top-50
   predictions) is lower on the misaligned set than on the shapes;
3. **mark**: for more than half of the objects, the best-classified anchor lies nearer the centre
   of the class-deciding mark than the centre of the box.

Both anchors are searched among the anchor points inside the object's box, on every level
(``alignment.best_anchors``). Beside the rule the check records AP, AP50 and AP75 of both models:
AP50 well above AP75 says the box is hard; the rule does not judge them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tood_lib.analysis.alignment import best_anchors, dense_predictions, instance_alignment

RULE = ("distance: median normalised distance between best-classified and best-localised anchor larger on misaligned than on shapes; "
        "PCC: mean Table 6 PCC lower on misaligned than on shapes; "
        "mark: best-classified anchor nearer the mark centre than the box centre for more than half of the misaligned objects")
MODEL = ("atss_parallel", 0)  # (experiment, seed) of the grid whose seed-0 run the check reads


def mark_boxes(dataset, index: int) -> torch.Tensor | None:
    """(G, 4) x1y1x2y2 of each object's ``mark_bbox`` in the resized image of item ``index``, in the
    order of the item's boxes; None when the annotations carry no marks (the shapes)."""
    image_id = dataset.image_ids[index]
    anns = [a for a in dataset.coco.imgToAnns.get(image_id, [])
            if not a["iscrowd"] and a["id"] not in dataset.report.thin_annotation_ids]
    if not anns or "mark_bbox" not in anns[0]:
        return None
    info = dataset.coco.imgs[image_id]
    height, width = dataset.item_without_pixels(index)["image_size"]
    sx, sy = width / info["width"], height / info["height"]
    return torch.tensor([[x * sx, y * sy, (x + w) * sx, (y + h) * sy] for x, y, w, h in (a["mark_bbox"] for a in anns)])


def object_alignment(model, dataset, batch_size: int = 8, progress: bool = True) -> pd.DataFrame:
    """One row per object of a (test-mode) data set: image_id, gt, side (√(w·h) px), gap (pixels between
    the best-classified and best-localised anchor points), gap_norm (gap / side), same (one anchor is
    best at both), pcc, iou_top (Table 6), and where marks exist cls_to_mark, cls_to_centre (pixels
    from the best-classified anchor point to the mark's and to the box's centre) and nearer_mark."""
    rows = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="object alignment", disable=not progress, leave=False):
        indices = list(range(start, min(len(dataset), start + batch_size)))
        batch, metas = dataset.collate([dataset[i] for i in indices])
        for i, pred in enumerate(dense_predictions(model, batch)):
            mask = batch.gt_mask[i]
            boxes, labels = batch.gt_boxes[i][mask], batch.gt_labels[i][mask]
            marks = mark_boxes(dataset, indices[i])
            table6 = instance_alignment(pred, boxes, labels)
            for g, (box, label) in enumerate(zip(boxes, labels)):
                best = best_anchors(pred, box, int(label))
                p_cls, p_loc = pred.points[best["cls_index"]], pred.points[best["loc_index"]]
                side = math.sqrt(max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0))
                gap = float((p_cls - p_loc).norm())
                row = dict(image_id=metas[i]["image_id"], gt=g, side=side, gap=gap, gap_norm=gap / max(side, 1e-6),
                           same=bool(best["same"]), cls_level=best["cls_level"], loc_level=best["loc_level"],
                           pcc=table6[g]["pcc"], iou_top=table6[g]["iou_top"])
                if marks is not None:
                    mark_centre = (marks[g, :2] + marks[g, 2:]) / 2
                    box_centre = (box[:2] + box[2:]) / 2
                    row["cls_to_mark"] = float((p_cls - mark_centre).norm())
                    row["cls_to_centre"] = float((p_cls - box_centre).norm())
                    row["nearer_mark"] = row["cls_to_mark"] < row["cls_to_centre"]
                rows.append(row)
    return pd.DataFrame(rows)


def summarise(objects: pd.DataFrame) -> dict:
    out = dict(objects=len(objects), gap_norm_median=float(objects["gap_norm"].median()),
               gap_norm_mean=float(objects["gap_norm"].mean()), same_anchor=float(objects["same"].mean()),
               pcc=float(objects["pcc"].mean(skipna=True)), iou_top=float(objects["iou_top"].mean(skipna=True)))
    if "nearer_mark" in objects:
        out["nearer_mark"] = float(objects["nearer_mark"].mean())
    return out


def judge(shapes: dict, misaligned: dict) -> dict:
    """The rule on two summaries -> {criterion: bool} and ``passed``."""
    checks = dict(distance=misaligned["gap_norm_median"] > shapes["gap_norm_median"],
                  pcc=misaligned["pcc"] < shapes["pcc"],
                  mark=misaligned.get("nearer_mark", 0.0) > 0.5)
    return dict(checks, passed=all(checks.values()))


def run_check(run_dirs: dict[str, str | Path], bench: str = "multi_level", progress: bool = True) -> dict:
    """The check on the trained runs ``{"shapes": dir, "misaligned": dir}`` (each holds its
    ``epoch_N.pth`` and ``result.json``) of ``bench``'s data sets -> the record written to
    ``results/misalignment_check.json``."""
    from tood_lib.ablations.bench import bench_data_root
    from tood_lib.data.coco import CocoDetection
    from tood_lib.engine.run_folder import load_run_model

    record = dict(rule=RULE, bench=bench, model=dict(experiment=MODEL[0], seed=MODEL[1]))
    for name, folder in run_dirs.items():
        folder = Path(folder)
        model, cfg = load_run_model(folder)
        dataset = CocoDetection(bench_data_root(name, bench), "val", cfg.data, train=False, verbose=False)
        summary = summarise(object_alignment(model, dataset, progress=progress))
        result = json.loads((folder / "result.json").read_text())
        summary.update({k: result[k] for k in ("AP", "AP50", "AP75")})
        summary.update(run=str(folder), epochs=cfg.train.epochs, img_scale=list(cfg.data.img_scale),
                       anchor_scale=cfg.model.anchor_scale)
        record[name] = summary
    record["verdict"] = judge(record["shapes"], record["misaligned"])
    return record


def format_check(record: dict) -> str:
    s, m, v = record["shapes"], record["misaligned"], record["verdict"]
    yes = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    return "\n".join([
        f"misalignment check ({record['model']['experiment']}, seed {record['model']['seed']}): {yes(v['passed'])}",
        f"  distance best-cls <-> best-loc anchor / box size (median): misaligned {m['gap_norm_median']:.3f} vs shapes "
        f"{s['gap_norm_median']:.3f}  -> {yes(v['distance'])}",
        f"  PCC (Table 6): misaligned {m['pcc']:.3f} vs shapes {s['pcc']:.3f}  -> {yes(v['pcc'])}",
        f"  best-classified anchor nearer the mark than the box centre: {100 * m.get('nearer_mark', 0):.0f} % of objects "
        f"-> {yes(v['mark'])}",
        f"  AP / AP50 / AP75: misaligned {m['AP']:.3f} / {m['AP50']:.3f} / {m['AP75']:.3f}; "
        f"shapes {s['AP']:.3f} / {s['AP50']:.3f} / {s['AP75']:.3f}",
    ])
