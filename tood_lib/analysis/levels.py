"""The level audit: which pyramid level holds an assigner's positives and a model's detections.

What TOOD changes is spread over the pyramid: the layer attention is computed per level, one head
is shared by every level, and TAL picks each object's anchors *across* levels by t. A bench whose
positives all sit on P3 exercises none of that, so every data set, resolution and assigner is
audited here with the project's own ``multilevel_priors`` and assigners and the config's values:

* :func:`assignment_audit` — one row per object: its side, and per level how many anchor points
  lie inside its box (TAL's candidate pool) and how many positives the assigner gives it. On the
  ground truth alone for the geometric schemes ("atss" and the other fixed ones); on a trained
  model's dense predictions for "tal".
* :func:`detection_audit` — the level of every post-NMS detection of a model.
* :func:`run_level_shares` — all three for a trained run (the grid records it per run).
* :func:`level_summary` — the shares in percent, and what a miniature gives up: the median points
  per object side on the level that holds its positives (COCO's ~8 at anchor scale 8), and the
  median number of anchor points inside an object (the pool TAL's m = 13 chooses from).

``python -m tood_lib levels`` prints the table for any data set and size.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from tood_lib.assign.tal import inside_gt
from tood_lib.criterion import geometric_assign
from tood_lib.model.priors import multilevel_priors, prior_points, valid_prior_mask


def level_names(strides) -> list[str]:
    """P3..P7 for the default strides (P_k has stride 2^k)."""
    return [f"P{int(round(math.log2(s)))}" for s in strides]


def _geometry_batches(dataset, images: int | None, batch_size: int):
    """Batches of ground truth as the model sees it (resized, padded), without decoding the pixels."""
    count = len(dataset) if images is None else min(images, len(dataset))
    for start in range(0, count, batch_size):
        items = [dataset.item_without_pixels(i) for i in range(start, min(start + batch_size, count))]
        batch, metas = dataset.collate(items)
        yield start, batch, metas


def _object_rows(positive: torch.Tensor, gt_index: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                 level_of: torch.Tensor, points: torch.Tensor, valid: torch.Tensor, names: list[str],
                 image: int, image_id: int) -> list[dict]:
    """One image: positive, gt_index, valid (A,); gt_boxes (G, 4); gt_mask (G,); level_of (A,); points (A, 2)
    -> per object its side, anchor points inside per level and positives per level."""
    rows = []
    inside = inside_gt(points[None], gt_boxes[:, None, :].float(), 0.01) & valid[None]  # (G, A)
    for g in gt_mask.nonzero().squeeze(1).tolist():
        x1, y1, x2, y2 = gt_boxes[g].tolist()
        row = dict(image=image, image_id=image_id, object=g, side=math.sqrt(max(x2 - x1, 0.0) * max(y2 - y1, 0.0)),
                   width=x2 - x1, height=y2 - y1)
        mine = positive & (gt_index == g)
        for level, name in enumerate(names):
            on_level = level_of == level
            row[f"inside_{name}"] = int((inside[g] & on_level).sum())
            row[f"pos_{name}"] = int((mine & on_level).sum())
        rows.append(row)
    return rows


def assignment_audit(dataset, cfg, assigner: str = "atss", model=None, images: int | None = None,
                     batch_size: int = 16, progress: bool = False) -> pd.DataFrame:
    """One row per object of ``dataset`` (a CocoDetection in test mode, transformed as ``cfg.data`` says).

    ``assigner``: "atss" (the default; ATSS on the ground truth, ``cfg.tal.atss_topk``), any other
    geometric scheme of ``criterion.geometric_assign``, or "tal" (needs ``model``: TAL on its dense
    predictions, ``cfg.tal``'s α, β and m). Anchors: ``cfg.model.strides`` and ``cfg.model.anchor_scale``.

    Columns: image, image_id, object, side (√(w·h) in input pixels), width, height, and for each
    level name (P3..P7) ``inside_Pk`` (anchor points inside the box) and ``pos_Pk`` (positives).
    """
    from tqdm.auto import tqdm

    strides = tuple(cfg.model.strides)
    names = level_names(strides)
    rows = []
    if assigner == "tal":
        if model is None:
            raise ValueError("assignment_audit: assigner='tal' assigns on a model's predictions; pass model=")
        from tood_lib.analysis.alignment import dense_predictions
        from tood_lib.assign import task_aligned_assign

        count = len(dataset) if images is None else min(images, len(dataset))
        for start in tqdm(range(0, count, batch_size), desc="TAL level audit", disable=not progress, leave=False):
            batch, metas = dataset.collate([dataset[i] for i in range(start, min(count, start + batch_size))])
            preds = dense_predictions(model, batch)
            scores = torch.stack([p.scores for p in preds])
            boxes = torch.stack([p.boxes for p in preds])
            priors = preds[0].priors
            valid = torch.stack([p.valid for p in preds])
            a = task_aligned_assign(scores, boxes, priors, batch.gt_boxes, batch.gt_labels, batch.gt_mask, valid,
                                    alpha=cfg.tal.alpha, beta=cfg.tal.beta, topk=cfg.tal.topk)
            level_of = preds[0].level_of_all()
            for b, p in enumerate(preds):
                rows += _object_rows(a.positive[b], a.gt_index[b], batch.gt_boxes[b], batch.gt_mask[b], level_of,
                                     p.points, p.valid, names, start + b, metas[b]["image_id"])
        return pd.DataFrame(rows)

    for start, batch, metas in tqdm(_geometry_batches(dataset, images, batch_size), desc=f"{assigner} level audit",
                                    disable=not progress, leave=False):
        height, width = batch.images.shape[-2:]
        sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in strides]
        level_priors = multilevel_priors(sizes, strides, anchor_scale=cfg.model.anchor_scale)
        level_of = torch.repeat_interleave(torch.arange(len(strides)), torch.tensor([len(p) for p in level_priors]))
        points = prior_points(torch.cat(level_priors))
        valid = valid_prior_mask(sizes, strides, batch.pad_shapes)
        a = geometric_assign(sizes, strides, batch, cfg.tal, assigner, anchor_scale=cfg.model.anchor_scale)
        for b in range(len(metas)):
            rows += _object_rows(a.positive[b], a.gt_index[b], batch.gt_boxes[b], batch.gt_mask[b], level_of,
                                 points, valid[b], names, start + b, metas[b]["image_id"])
    return pd.DataFrame(rows)


def detection_audit(model, dataset, images: int | None = None, batch_size: int = 8, progress: bool = False) -> pd.DataFrame:
    """The level of every post-NMS detection (the test config's thresholds) -> one row per detection:
    image_id, level (P3..P7), score, label."""
    from tqdm.auto import tqdm

    from tood_lib.postprocess import postprocess

    cfg = model.cfg
    names = level_names(cfg.model.strides)
    count = len(dataset) if images is None else min(images, len(dataset))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    with torch.no_grad():
        for start in tqdm(range(0, count, batch_size), desc="detection levels", disable=not progress, leave=False):
            batch, metas = dataset.collate([dataset[i] for i in range(start, min(count, start + batch_size))])
            features = None if batch.features is None else [f.to(device) for f in batch.features]
            out = model(batch.images.to(device), backbone_features=features)  # (a cached data set gives the features)
            t = cfg.test
            dets = postprocess(out, batch.image_sizes, batch.original_sizes, t.nms_pre, t.score_thr, t.iou_thr, t.max_per_img)
            for meta, det in zip(metas, dets):
                for level, score, label in zip(det["levels"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
                    rows.append(dict(image_id=meta["image_id"], level=names[level], score=score, label=label))
    model.train(was_training)
    return pd.DataFrame(rows, columns=["image_id", "level", "score", "label"])


def level_summary(audit: pd.DataFrame, strides=(8, 16, 32, 64, 128)) -> dict:
    """Shares of an ``assignment_audit`` (or ``detection_audit``) and what the scale gives up.

    -> dict: ``share_Pk`` (% of all positives, or of all detections, on each level), ``objects``,
    ``positives`` and for an assignment audit also ``positives_per_object`` (mean),
    ``points_per_side`` (median over positives of the object's side / its level's stride: how many
    anchor points span the object where it is learned), ``inside_points`` (median anchor points
    inside an object over all levels: the pool TAL's top-m picks from) and ``objects_without_positive`` (%).
    """
    names = level_names(strides)
    if "level" in audit.columns:  # a detection audit
        counts = audit["level"].value_counts().reindex(names, fill_value=0)
        total = int(counts.sum())
        return dict(detections=total, **{f"share_{n}": 100.0 * counts[n] / max(total, 1) for n in names})
    pos = audit[[f"pos_{n}" for n in names]].to_numpy()
    total = int(pos.sum())
    out = dict(objects=len(audit), positives=total, positives_per_object=total / max(len(audit), 1))
    out.update({f"share_{n}": 100.0 * pos[:, i].sum() / max(total, 1) for i, n in enumerate(names)})
    per_side = np.repeat(np.repeat(audit["side"].to_numpy()[:, None], len(names), 1).ravel()
                         / np.tile(np.asarray(strides, float), len(audit)), pos.ravel())
    out["points_per_side"] = float(np.median(per_side)) if len(per_side) else float("nan")
    inside = audit[[f"inside_{n}" for n in names]].to_numpy().sum(1)
    out["inside_points"] = float(np.median(inside)) if len(inside) else float("nan")
    out["objects_without_positive"] = 100.0 * float((pos.sum(1) == 0).mean()) if len(pos) else float("nan")
    return out


def format_level_table(rows: list[dict], strides=(8, 16, 32, 64, 128)) -> str:
    """A plain-text table of level summaries, each row a dict with a ``data`` label first."""
    names = level_names(strides)
    width = max([len("data, resolution, assigner")] + [len(r["data"]) for r in rows])
    head = f"{'data, resolution, assigner':<{width}} " + " ".join(f"{n:>5}" for n in names) + "   pos/obj  pts/side  inside"
    lines = [head, "-" * len(head)]
    for r in rows:
        shares = " ".join(f"{r[f'share_{n}']:5.1f}" for n in names)
        extra = "" if "positives_per_object" not in r else (
            f"   {r['positives_per_object']:7.1f}  {r['points_per_side']:8.1f}  {r['inside_points']:6.0f}")
        lines.append(f"{r['data']:<{width}} {shares}{extra}")
    lines.append(f"{'':<{width}} (% of the positives, or of the detections, on each level; pos/obj: positives per object; "
                 "pts/side: median anchor points across an object on the level of its positives; inside: median anchor "
                 "points inside an object, all levels)")
    return "\n".join(lines)


def run_level_shares(model, val_set, cfg, batch_size: int = 16) -> dict:
    """What a trained run puts on each level, on its val split (a CocoDetection in test mode, cached
    features allowed) -> {"atss_ground_truth": ..., "tal_predictions": ..., "detections": ...}, each a
    :func:`level_summary`: ATSS on the ground truth (the data set's and the anchors' structure, the
    same for every run of a bench), TAL on this model's dense predictions (where TAL would put its
    positives now that the model is trained), and the levels of the model's post-NMS detections."""
    strides = tuple(cfg.model.strides)
    return dict(atss_ground_truth=level_summary(assignment_audit(val_set, cfg, "atss", batch_size=batch_size), strides),
                tal_predictions=level_summary(assignment_audit(val_set, cfg, "tal", model=model, batch_size=batch_size), strides),
                detections=level_summary(detection_audit(model, val_set, batch_size=batch_size), strides))


def plot_level_shares(rows: pd.DataFrame, label_column: str = "data", title: str = "", strides=(8, 16, 32, 64, 128)):
    """Stacked horizontal bars of the share of positives (or detections) per level, one bar per row of
    ``rows`` (each with ``share_P3``..``share_P7`` and a label in ``label_column``), first row on top:
    ``results/levels_bench.csv`` or the per-run audit ``results/levels_runs_cpu.csv``."""
    import matplotlib.pyplot as plt

    names = level_names(strides)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.4), constrained_layout=True)
    left = np.zeros(len(rows))
    y = np.arange(len(rows))[::-1]
    for i, name in enumerate(names):
        values = rows[f"share_{name}"].to_numpy(float)
        ax.barh(y, values, left=left, color=plt.get_cmap("viridis")(i / (len(names) - 1)), label=name)
        for yy, lo, v in zip(y, left, values):
            if v >= 6:
                ax.text(lo + v / 2, yy, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if i < 3 else "black")
        left += values
    ax.set_yticks(y, rows[label_column].tolist(), fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% on each level")
    ax.legend(ncols=len(names), loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, pad=22)
    return fig


def pool_shares(audit: pd.DataFrame, strides=(8, 16, 32, 64, 128)) -> dict:
    """TAL's candidate pool per level: of all anchor points that lie inside an object (the points TAL's
    top-m may pick, ``inside_Pk`` of an :func:`assignment_audit`), the % on each level -> ``pool_Pk``.

    Points are 4x denser on each finer level, so for any object larger than a few strides the pool is
    ~3/4 on P3 (1 / (1 + 1/4 + 1/16 + ...)), on COCO as on a miniature. A TAL whose alignment metric t
    does not prefer a level picks its positives in these proportions; ATSS does not (it takes its top
    k per level, then keeps those whose anchor shape fits the box)."""
    names = level_names(strides)
    inside = audit[[f"inside_{n}" for n in names]].to_numpy().sum(0).astype(float)
    return {f"pool_{n}": 100.0 * v / max(inside.sum(), 1.0) for n, v in zip(names, inside)}


def tal_level_course(folder, dataset, epochs, images: int | None = None) -> pd.DataFrame:
    """Where TAL puts its positives as a run trains: TAL on the dense predictions of the run's
    checkpoints ``folder/epoch_{e}.pth`` for e in ``epochs`` (those present), on ``dataset`` (test mode,
    the run's cached features) -> one row per epoch: epoch, ``trained_with`` (the assigner of that epoch:
    "atss" during the warm-up), ``share_Pk``, positives_per_object, and the
    candidate pool's ``pool_Pk`` (:func:`pool_shares`, the same for every epoch)."""
    from pathlib import Path

    from tood_lib.api import load_model

    rows = []
    for epoch in epochs:
        path = Path(folder) / f"epoch_{epoch}.pth"
        if not path.is_file():
            continue
        model, cfg = load_model(path)
        model.eval()
        audit = assignment_audit(dataset, cfg, "tal", model=model, images=images)
        s = level_summary(audit, cfg.model.strides)
        rows.append(dict(epoch=epoch, trained_with="atss" if epoch <= cfg.tal.warmup_epochs else cfg.tal.assigner,
                         positives_per_object=s["positives_per_object"],
                         **{k: v for k, v in s.items() if k.startswith("share_")}, **pool_shares(audit, cfg.model.strides)))
    return pd.DataFrame(rows)
