"""Looking inside the T-Head (paper §3.1, Fig. 3): getting its intermediate maps, and the numbers notebook 01
reads from them (its drawings are in ``head_maps.py``).

Everything here reads the ``internals`` the head returns with ``return_internals=True``: a list with
one dict per FPN level (strides 8..128), each holding, for a batch of B images and a level of size
H x W (C channels, K classes, N = 6 interactive layers):

    inter_feats     N tensors (B, C, H, W)   the task-interactive features X^1..X^N (Eq. 1)
    cls_attention   (B, N)                   layer attention w of the classification branch (Eq. 3)
    reg_attention   (B, N)                   layer attention w of the localisation branch
    cls_feat        (B, C, H, W)             X^cls, the decomposed classification features (Eq. 2, 4)
    reg_feat        (B, C, H, W)             X^reg
    cls_logits      (B, K, H, W)             Z_cls; σ(Z_cls) is the paper's P
    prob_logits     (B, 1, H, W)             logit of M
    prob_map        (B, 1, H, W)             M = σ(prob_logits) (Eq. 7)
    offsets         (B, 8, H, W)             O (Eq. 8): (dy, dx) per box side c = x1, y1, x2, y2,
                                             O[2c] rows, O[2c+1] columns, in feature-map cells
    boxes_before    (B, 4, H, W)             B, x1y1x2y2 in stride units
    boxes_after     (B, 4, H, W)             B_align (Eq. 6), x1y1x2y2 in stride units

Location (row i, column j) of a level with stride s has its anchor point at pixel (x, y) = (j·s, i·s)
(MMDetection's ``center_offset=0``, see ``model/priors.py``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchvision.ops import box_iou, nms

STRIDES = (8, 16, 32, 64, 128)
SIDES = ("left", "top", "right", "bottom")  # box channel c = x1, y1, x2, y2 reads O[2c] (dy), O[2c+1] (dx)


def denormalize(image: Tensor, mean, std) -> np.ndarray:
    """A normalised (3, h, w) image tensor -> (h, w, 3) uint8 RGB array (undoes ``resize_and_normalize``)."""
    pixels = image.float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return pixels.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def network_inputs(dataset, indices: Sequence[int]):
    """Items of a (test-mode) CocoDetection as the network sees them.

    -> (Batch of len(indices) images, list of dicts with ``image`` (h, w, 3) uint8 resized RGB,
    ``boxes`` (G, 4) float x1y1x2y2 in the resized image's pixels, ``labels`` (G,), ``image_id``).
    """
    items = [dataset[i] for i in indices]
    batch, _ = dataset.collate(items)
    cfg = dataset.data_cfg
    views = [dict(image=denormalize(it["image"], cfg.mean, cfg.std), boxes=it["boxes"].numpy(),
                  labels=it["labels"].numpy(), image_id=it["image_id"]) for it in items]
    return batch, views


@torch.no_grad()
def head_internals(model, batch):
    """Run the detector in eval mode on ``batch`` (a Batch or an image tensor (B, 3, H, W)).

    -> the HeadOutput with ``.internals`` (one dict per level, see the module docstring).
    The model's train/eval mode is restored afterwards.
    """
    images = batch.images if hasattr(batch, "images") else batch
    was_training = model.training
    model.eval()
    out = model(images.to(next(model.parameters()).device), return_internals=True)
    model.train(was_training)
    return out


def aligned_scores(level: Mapping) -> Tensor:
    """P_align = sqrt(σ(Z_cls)·M) of one level's internals: (B, K, H, W) (Eq. 5, the head's scores)."""
    return (level["cls_logits"].float().sigmoid() * level["prob_map"].float()).sqrt()


def feature_energy(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W): the L2 norm over channels, how strongly a location responds."""
    return x.float().norm(dim=1)


def offset_lengths(level: Mapping) -> Tensor:
    """(B, 4, H, W): length sqrt(dy² + dx²) of each box side's offset, in feature-map cells."""
    o = level["offsets"].float()
    b, _, h, w = o.shape
    return o.view(b, 4, 2, h, w).norm(dim=2)


def internals_shapes(internals: Sequence[Mapping], strides=STRIDES) -> pd.DataFrame:
    """One row per level: the shapes of what the head computes there (see the module docstring)."""
    def shape(t):
        return "×".join(str(n) for n in t.shape)

    rows = []
    for lvl, d in enumerate(internals):
        rows.append({"level": f"P{lvl + 3}", "stride": strides[lvl], "H×W": shape(d["prob_map"][0, 0]),
                     "X^1..X^N": f"{len(d['inter_feats'])} × {shape(d['inter_feats'][0])}",
                     "w (cls, reg)": shape(d["cls_attention"]), "X^cls, X^reg": shape(d["cls_feat"]),
                     "Z_cls": shape(d["cls_logits"]), "M": shape(d["prob_map"]), "O": shape(d["offsets"]),
                     "B, B_align": shape(d["boxes_after"])})
    return pd.DataFrame(rows).set_index("level")


def offset_summary(internals_by_model: Mapping[str, Sequence[Mapping]], strides=STRIDES) -> pd.DataFrame:
    """Mean offset length sqrt(dy² + dx²) per box side, over all locations and images of each level,
    in cells and in pixels: one row per (model, level)."""
    rows = []
    for name, internals in internals_by_model.items():
        for lvl, d in enumerate(internals):
            lengths = offset_lengths(d).mean(dim=(0, 2, 3))  # (4,) cells
            row = {"model": name, "level": f"P{lvl + 3}"}
            row.update({f"{side} (cells)": float(v) for side, v in zip(SIDES, lengths)})
            row["mean (px)"] = float(lengths.mean()) * strides[lvl]
            rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "level"]).round(3)


def top_locations(internals: Sequence[Mapping], k: int = 5, image_index: int = 0, levels=None,
                  strides=STRIDES, gt_boxes=None, iou_thr: float = 0.6) -> pd.DataFrame:
    """The k most confident locations of one image, one per object: highest P_align (max over
    classes) over the chosen levels, after NMS at ``iou_thr`` on the aligned boxes, so that the k
    rows are k different detections rather than neighbours of the same one.

    Returns one row per location: level, stride, row, col, anchor point x, y (px), score, label,
    ``before`` and ``after`` (x1, y1, x2, y2 tuples in px) and, when ``gt_boxes`` (G, 4) px is
    given, the best IoU of each with the ground truth.
    """
    levels = range(len(internals)) if levels is None else levels
    where, boxes_after, scores, labels = [], [], [], []
    for lvl in levels:
        d, s = internals[lvl], strides[lvl]
        score, label = aligned_scores(d)[image_index].max(dim=0)  # (H, W)
        h, w = score.shape
        where += [(lvl, i, j) for i in range(h) for j in range(w)]  # row-major, as flatten()
        boxes_after.append(d["boxes_after"][image_index].float().flatten(1).T * s)  # (H·W, 4) px
        scores.append(score.flatten())
        labels.append(label.flatten())
    scores, labels = torch.cat(scores), torch.cat(labels)
    keep = nms(torch.cat(boxes_after), scores, iou_thr)[:k]
    gt = None if gt_boxes is None else torch.as_tensor(np.asarray(gt_boxes), dtype=torch.float32).reshape(-1, 4)
    out = []
    for idx in keep.tolist():
        lvl, i, j = where[idx]
        d, s = internals[lvl], strides[lvl]
        r = dict(level=lvl, stride=s, row=i, col=j, x=float(j * s), y=float(i * s), score=float(scores[idx]),
                 label=int(labels[idx]),
                 before=tuple(float(v) * s for v in d["boxes_before"][image_index, :, i, j]),
                 after=tuple(float(v) * s for v in d["boxes_after"][image_index, :, i, j]))
        if gt is not None and len(gt):
            r["iou_before"] = float(box_iou(torch.tensor([r["before"]]), gt).max())
            r["iou_after"] = float(box_iou(torch.tensor([r["after"]]), gt).max())
        out.append(r)
    return pd.DataFrame(out)


def summarize_head(internals_by_model: Mapping[str, Sequence[Mapping]]) -> pd.DataFrame:
    """A few numbers per model that say how far the head has moved from its initialisation (all
    levels and images together): the spread of the layer attention and the largest cls/reg
    difference, the range of M, the largest classifier score and P_align, the mean offset length."""
    def across(internals, fn):  # every value of fn over all levels, flattened
        return torch.cat([fn(d).float().flatten() for d in internals])

    columns = {}
    for name, internals in internals_by_model.items():
        w_cls, w_reg = across(internals, lambda d: d["cls_attention"]), across(internals, lambda d: d["reg_attention"])
        m = across(internals, lambda d: d["prob_map"])
        columns[name] = {
            "layer attention w: min": float(torch.cat([w_cls, w_reg]).min()),
            "layer attention w: max": float(torch.cat([w_cls, w_reg]).max()),
            "largest |w_cls - w_reg|": float((w_cls - w_reg).abs().max()),
            "M: min": float(m.min()), "M: max": float(m.max()),
            "max σ(Z_cls)": float(across(internals, lambda d: d["cls_logits"].sigmoid()).max()),
            "max P_align": float(across(internals, aligned_scores).max()),
            "mean |O| (cells)": float(across(internals, offset_lengths).mean())}
    return pd.DataFrame(columns).round(4)


def alignment_iou_table(internals: Sequence[Mapping], gt_boxes_per_image: Sequence, k: int = 4,
                        strides=STRIDES) -> pd.DataFrame:
    """:func:`top_locations` of every image of the batch, stacked: does B_align fit the ground truth
    better than B? One row per (image, location), with ``iou_before``, ``iou_after`` and ``gain``."""
    tables = []
    for b, gt in enumerate(gt_boxes_per_image):
        top = top_locations(internals, k, image_index=b, strides=strides, gt_boxes=gt)
        tables.append(top.assign(image=b)[["image", "level", "row", "col", "score", "iou_before", "iou_after"]])
    table = pd.concat(tables, ignore_index=True)
    return table.assign(gain=table["iou_after"] - table["iou_before"])
