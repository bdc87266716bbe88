"""Task alignment, measured: where a detector's best-scoring and best-localising predictions are.

TOOD's alignment metric (paper Eq. 9) scores every (prior, object) pair by

    t = s^α · u^β,

s the predicted score of the object's class and u the IoU of the predicted box with the object.
This module computes, for a model and an image, the dense maps behind the paper's Fig. 1 (score,
IoU and t per pyramid level), the best anchor for classification and for localisation, and over
a data set the misalignment statistics of the paper's Table 6:

* PCC: for each object, its top-50 predictions by score; the Pearson correlation between their
  classification ranks and their localisation (IoU) ranks — a rank correlation, 1 when the order
  by score is the order by IoU. Averaged over objects.
* IoU (top-10): the mean IoU of each object's 10 highest-scoring predictions, averaged over objects.

The paper does not spell out which predictions "belong" to an object. We give each dense
prediction (before NMS) to the object its box overlaps most (IoU > 0), and rank within the
object's class score — the natural reading, stated here because other readings give other numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.patches import FancyArrowPatch, Rectangle
from torch import Tensor

from tood_lib.boxes import box_centers, box_iou
from tood_lib.model.priors import prior_points, valid_prior_mask

CLS_COLOUR, LOC_COLOUR, GT_COLOUR = "red", "lime", "yellow"  # the paper's Fig. 1 colours


@dataclass
class DensePrediction:
    """One image's dense (pre-NMS) predictions, levels concatenated. A priors, K classes, L levels.

    scores:        (A, K) class scores (the T-Head's aligned P).
    boxes:         (A, 4) predicted boxes, x1y1x2y2 pixels of the resized image.
    priors:        (A, 4) anchor boxes in pixels (their centres are the anchor points).
    valid:         (A,) bool, False for priors on the batch padding.
    feature_sizes: L (H_l, W_l); strides: L ints.
    """

    scores: Tensor
    boxes: Tensor
    priors: Tensor
    valid: Tensor
    feature_sizes: list[tuple[int, int]]
    strides: tuple[int, ...]

    @property
    def points(self) -> Tensor:
        """(A, 2) anchor points (x, y) in pixels."""
        return prior_points(self.priors)

    @property
    def level_starts(self) -> list[int]:
        sizes = [h * w for h, w in self.feature_sizes]
        return [int(s) for s in np.cumsum([0] + sizes[:-1])]

    def level_of(self, index: int) -> int:
        """The pyramid level (0 = P3) of a flat prior index."""
        return int(np.searchsorted(np.array(self.level_starts), index, side="right") - 1)

    def level_map(self, values: Tensor, level: int) -> np.ndarray:
        """values (A,) -> the (H_l, W_l) map of one level, as numpy."""
        start = self.level_starts[level]
        h, w = self.feature_sizes[level]
        return values[start:start + h * w].reshape(h, w).detach().float().cpu().numpy()

    def level_of_all(self) -> Tensor:
        """(A,) level index of every prior."""
        return torch.cat([torch.full((h * w,), i) for i, (h, w) in enumerate(self.feature_sizes)])


@torch.no_grad()
def dense_predictions(model, batch) -> list[DensePrediction]:
    """Run ``model`` (eval mode, no gradient) on a Batch -> one DensePrediction per image."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = None if batch.features is None else [f.to(device) for f in batch.features]
    out = model(batch.images.to(device), backbone_features=features)
    model.train(was_training)
    priors = torch.cat(out.priors(device))
    valid = valid_prior_mask(out.feature_sizes, out.strides, batch.pad_shapes.to(device))
    scores, boxes = out.flat_scores().float(), out.flat_boxes(pixels=True).float()
    return [DensePrediction(scores[i], boxes[i], priors, valid[i], out.feature_sizes, out.strides)
            for i in range(len(scores))]


def alignment_values(pred: DensePrediction, gt_box: Tensor, gt_label: int, alpha: float = 1.0,
                     beta: float = 6.0) -> dict[str, Tensor]:
    """Per prior, for one object: score s of its class, IoU u of the predicted box, t = s^α·u^β.

    gt_box (4,) pixels -> dict(score=(A,), iou=(A,), metric=(A,)); invalid priors hold 0.
    The same formula as the assigner (``assign/tal.py``), computed densely for display.
    """
    score = pred.scores[:, int(gt_label)]
    iou = box_iou(pred.boxes, gt_box.reshape(1, 4).to(pred.boxes))[:, 0]
    metric = score.pow(alpha) * iou.pow(beta)
    zero = ~pred.valid
    return dict(score=score.masked_fill(zero, 0), iou=iou.masked_fill(zero, 0), metric=metric.masked_fill(zero, 0))


def inside_object(pred: DensePrediction, gt_box: Tensor) -> Tensor:
    """(A,) bool: valid priors whose anchor point lies inside the object's box (where both assigners look)."""
    p = pred.points
    gt = gt_box.to(p)
    return (p[:, 0] > gt[0]) & (p[:, 0] < gt[2]) & (p[:, 1] > gt[1]) & (p[:, 1] < gt[3]) & pred.valid


def best_anchors(pred: DensePrediction, gt_box: Tensor, gt_label: int) -> dict:
    """The best anchor for classification (highest class score) and for localisation (highest IoU)
    among the priors whose anchor point is inside the object (all valid priors if none is).

    -> dict(cls_index, loc_index, cls_box (4,), loc_box (4,), cls_score, loc_score, cls_iou, loc_iou,
            cls_distance, loc_distance (anchor point to object centre, pixels), same (bool)).
    """
    values = alignment_values(pred, gt_box, gt_label)
    region = inside_object(pred, gt_box)
    if not region.any():
        region = pred.valid
    neg = torch.tensor(-1.0, device=region.device)
    cls_index = int(torch.where(region, values["score"], neg).argmax())
    loc_index = int(torch.where(region, values["iou"], neg).argmax())
    centre = box_centers(gt_box.to(pred.points))
    dist = (pred.points - centre).norm(dim=1)
    out = dict(cls_index=cls_index, loc_index=loc_index, same=cls_index == loc_index)
    for name, index in (("cls", cls_index), ("loc", loc_index)):
        out[f"{name}_box"] = pred.boxes[index].cpu()
        out[f"{name}_score"] = float(values["score"][index])
        out[f"{name}_iou"] = float(values["iou"][index])
        out[f"{name}_distance"] = float(dist[index])
        out[f"{name}_level"] = pred.level_of(index)
    return out


# ----------------------------------------------------------------------------- Table 6 statistics
def rank_correlation(first: Tensor, second: Tensor) -> float:
    """Pearson correlation of the ranks of two (N,) vectors (ties broken by position); NaN if N < 2
    or one of them is constant."""
    if len(first) < 2:
        return float("nan")
    r1 = first.argsort(stable=True).argsort().double()
    r2 = second.argsort(stable=True).argsort().double()
    if first.unique().numel() < 2 or second.unique().numel() < 2:
        return float("nan")
    r1, r2 = r1 - r1.mean(), r2 - r2.mean()
    return float((r1 * r2).sum() / (r1.norm() * r2.norm()))


def instance_alignment(pred: DensePrediction, gt_boxes: Tensor, gt_labels: Tensor, top_pcc: int = 50,
                       top_iou: int = 10) -> list[dict]:
    """Table 6 statistics of each object of one image.

    gt_boxes (G, 4) pixels, gt_labels (G,) -> G dicts: gt (index), label, num_predictions (how many
    dense predictions overlap it most), pcc (rank correlation of score and IoU among its ``top_pcc``
    highest-scoring predictions), iou_top (mean IoU of its ``top_iou`` highest-scoring predictions).
    """
    if len(gt_boxes) == 0:
        return []
    ious = box_iou(pred.boxes, gt_boxes.to(pred.boxes))  # (A, G)
    ious = ious.masked_fill(~pred.valid[:, None], 0)
    best_iou, owner = ious.max(dim=1)
    rows = []
    for g in range(len(gt_boxes)):
        mine = ((owner == g) & (best_iou > 0)).nonzero().squeeze(1)
        scores = pred.scores[mine, int(gt_labels[g])]
        order = scores.argsort(descending=True, stable=True)
        iou_mine = best_iou[mine][order]
        scores = scores[order]
        rows.append(dict(gt=g, label=int(gt_labels[g]), num_predictions=len(mine),
                         pcc=rank_correlation(scores[:top_pcc], iou_mine[:top_pcc]),
                         iou_top=float(iou_mine[:top_iou].mean()) if len(mine) else float("nan")))
    return rows


def misalignment_statistics(model, dataset, max_images: int | None = None, batch_size: int = 8,
                            top_pcc: int = 50, top_iou: int = 10, progress: bool = True) -> pd.DataFrame:
    """Table 6's PCC and top-10 IoU for every object of a (test-mode) data set -> one row per object
    (image_id, gt, label, num_predictions, pcc, iou_top). ``summarise_alignment`` averages them."""
    from tqdm.auto import tqdm

    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    rows = []
    for start in tqdm(range(0, n, batch_size), desc="alignment", disable=not progress, leave=False):
        batch, metas = dataset.collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        for i, pred in enumerate(dense_predictions(model, batch)):
            mask = batch.gt_mask[i]
            for row in instance_alignment(pred, batch.gt_boxes[i][mask], batch.gt_labels[i][mask], top_pcc, top_iou):
                rows.append(dict(image_id=metas[i]["image_id"], **row))
    return pd.DataFrame(rows)


def summarise_alignment(per_object: pd.DataFrame) -> dict:
    """Mean PCC and mean top-10 IoU over the objects that have them (Table 6's "without NMS" columns)."""
    return dict(PCC=float(per_object["pcc"].mean(skipna=True)), IoU=float(per_object["iou_top"].mean(skipna=True)),
                objects=int(len(per_object)))


# ----------------------------------------------------------------------------- drawings
def level_extent(size: tuple[int, int], stride: int) -> tuple[float, float, float, float]:
    """imshow extent that puts cell (row y, column x) on its anchor point (x·s, y·s)."""
    h, w = size
    return (-stride / 2, (w - 0.5) * stride, (h - 0.5) * stride, -stride / 2)


def _draw_box(ax, box, colour, style="-", width=2.0, label=None):
    x1, y1, x2, y2 = [float(v) for v in box]
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=style,
                           linewidth=width, label=label))


def _draw_anchor_patch(ax, point, stride, colour):
    x, y = [float(v) for v in point]
    ax.add_patch(Rectangle((x - stride / 2, y - stride / 2), stride, stride, facecolor=colour, alpha=0.6,
                           edgecolor="white", linewidth=1))


def plot_alignment_panel(image: np.ndarray, rows: dict[str, DensePrediction], gt_box: Tensor, gt_label: int,
                         class_name: str = "", level: int | None = None):
    """The paper's Fig. 1 for one object: per row (e.g. a model or a training stage), the "Result"
    (GT in yellow, best-classification anchor and its box in red, best-localisation anchor and its box
    in green, white arrows from those anchors to the object centre), the "Score" map and the "IoU" map.

    image (H, W, 3) uint8 of the resized image; rows {title: DensePrediction}. The maps are drawn on
    ``level`` (default: the level of the row's best-localisation anchor).
    """
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 4.4 * len(rows)), squeeze=False)
    centre = box_centers(gt_box).tolist()
    for r, (title, pred) in enumerate(rows.items()):
        best = best_anchors(pred, gt_box, gt_label)
        values = alignment_values(pred, gt_box, gt_label)
        lvl = best["loc_level"] if level is None else level
        stride = pred.strides[lvl]
        ax = axes[r, 0]
        ax.imshow(image)
        _draw_box(ax, gt_box, GT_COLOUR, width=2.5, label="ground truth")
        for name, colour, text in (("cls", CLS_COLOUR, "best classification"), ("loc", LOC_COLOUR, "best localisation")):
            if name == "loc" and best["same"]:
                continue  # as in the paper: only red when they coincide
            index = best[f"{name}_index"]
            _draw_anchor_patch(ax, pred.points[index].tolist(), pred.strides[best[f"{name}_level"]], colour)
            _draw_box(ax, best[f"{name}_box"], colour, width=2,
                      label=f"{text}: s={best[f'{name}_score']:.2f}, IoU={best[f'{name}_iou']:.2f}, "
                            f"{best[f'{name}_distance']:.0f} px off centre")
            ax.add_patch(FancyArrowPatch(pred.points[index].tolist(), centre, arrowstyle="->", color="white",
                                         mutation_scale=14, linewidth=1.8))
        # the frame holds the image and every box drawn, so that a predicted box reaching past the image
        # edge is seen whole (the part outside the image on white)
        drawn = torch.stack([torch.as_tensor(gt_box, dtype=torch.float32).cpu()] +
                            [torch.as_tensor(best[f"{n}_box"], dtype=torch.float32).cpu() for n in ("cls", "loc")])
        left, top = min(0.0, float(drawn[:, 0].min()) - 2), min(0.0, float(drawn[:, 1].min()) - 2)
        right = max(float(image.shape[1]), float(drawn[:, 2].max()) + 2)
        bottom = max(float(image.shape[0]), float(drawn[:, 3].max()) + 2)
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=9, frameon=False)
        ax.set_title(f"{title}\nresult ({class_name})", fontsize=10)
        ax.axis("off")
        for c, (key, cmap, label) in enumerate((("score", "magma", f"score s of '{class_name}'"),
                                               ("iou", "viridis", "IoU u of the predicted box"))):
            ax = axes[r, c + 1]
            ax.imshow(image, alpha=0.35)
            level_values = pred.level_map(values[key], lvl)
            # scores of a young model are small: scale the colours to the map (the colour bar says how far)
            vmax = 1.0 if key == "iou" else max(float(level_values.max()), 0.05)
            heat = ax.imshow(level_values, cmap=cmap, vmin=0, vmax=vmax, alpha=0.75,
                             extent=level_extent(pred.feature_sizes[lvl], stride), interpolation="nearest")
            _draw_box(ax, gt_box, GT_COLOUR, width=1.5)
            ax.set_xlim(0, image.shape[1])
            ax.set_ylim(image.shape[0], 0)
            ax.set_title(f"{title}\n{label}, P{lvl + 3} (stride {stride})", fontsize=10)
            ax.axis("off")
            fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    return fig


METRIC_DECADES = 4  # the t map shows max(t)·10^-4 .. max(t) on a log scale; smaller t is left transparent


def informative_levels(pred: DensePrediction, gt_box: Tensor, gt_label: int, alpha: float = 1.0, beta: float = 6.0,
                       share: float = 1e-3) -> list[int]:
    """The levels where the object has something to show: some t above ``share`` of its maximum over
    all levels (the others' panels would be empty). Never empty: the level of the largest t at least."""
    values = alignment_values(pred, gt_box, gt_label, alpha, beta)
    best = max(float(values["metric"].max()), 1e-12)
    levels = [l for l in range(len(pred.strides)) if float(pred.level_map(values["metric"], l).max()) >= share * best]
    return levels or [int(pred.level_of_all()[int(values["metric"].argmax())])]


def plot_level_maps(image: np.ndarray, pred: DensePrediction, gt_box: Tensor, gt_label: int, alpha: float = 1.0,
                    beta: float = 6.0, levels: list[int] | None = None, title: str = ""):
    """Score s, IoU u and metric t = s^α·u^β of one object per pyramid level: one row per quantity, one
    column per level (default: :func:`informative_levels`, so no panel is empty); the object's box in
    yellow. s on 0..its maximum, u on 0..1, and t on a log scale over ``METRIC_DECADES`` decades below
    its maximum (t spans orders of magnitude: on a linear scale all but its peak would look black)."""
    from matplotlib.colors import LogNorm

    values = alignment_values(pred, gt_box, gt_label, alpha, beta)
    levels = informative_levels(pred, gt_box, gt_label, alpha, beta) if levels is None else levels
    names = (("score", "magma", "score s"), ("iou", "viridis", "IoU u"),
             ("metric", "cividis", f"t = s^{alpha:g}·u^{beta:g} (log)"))
    fig, axes = plt.subplots(3, len(levels), figsize=(max(2.9 * len(levels) + 1.4, 4.6), 8.4), squeeze=False)
    for r, (key, cmap, label) in enumerate(names):
        top = max(float(values[key].max()), 1e-12)
        for c, lvl in enumerate(levels):
            ax = axes[r, c]
            ax.imshow(image, alpha=0.45)
            level_map = np.asarray(pred.level_map(values[key], lvl), dtype=float)
            if key == "metric":
                floor = top * 10 ** -METRIC_DECADES
                shown, norm = np.ma.masked_less(level_map, floor), LogNorm(vmin=floor, vmax=top)
            else:
                shown, norm = level_map, plt.Normalize(0, 1.0 if key == "iou" else top)
            heat = ax.imshow(shown, cmap=cmap, norm=norm, alpha=0.8, interpolation="nearest",
                             extent=level_extent(pred.feature_sizes[lvl], pred.strides[lvl]))
            _draw_box(ax, gt_box, GT_COLOUR, width=1.2)
            ax.set_xlim(0, image.shape[1])
            ax.set_ylim(image.shape[0], 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"P{lvl + 3} (stride {pred.strides[lvl]})", fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=10)
        fig.colorbar(heat, ax=axes[r, :].tolist(), fraction=0.03, pad=0.01)
    fig.suptitle(title or "score, IoU and alignment metric per pyramid level", fontsize=12)
    return fig


def plot_metric_surface(pairs: list[tuple[float, float]] = ((1, 6), (1, 1), (0, 1), (1, 0), (0.5, 6), (2, 2))):
    """Small multiples of t = s^α·u^β over the (score, IoU) square, one per (α, β), with contours.

    β > α makes t sensitive to localisation: a high score cannot make up for a poor box.
    """
    s = np.linspace(0, 1, 201)
    u = np.linspace(0, 1, 201)
    S, U = np.meshgrid(s, u)
    cols = 3
    rows = (len(pairs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.axis("off")
    for ax, (a, b) in zip(axes.flat, pairs):
        T = np.power(S, a) * np.power(U, b)
        im = ax.imshow(T, origin="lower", extent=(0, 1, 0, 1), cmap="cividis", vmin=0, vmax=1)
        cs = ax.contour(S, U, T, levels=[0.01, 0.05, 0.1, 0.25, 0.5, 0.75], colors="white", linewidths=0.8)
        ax.clabel(cs, fontsize=7, fmt="%.2f")
        ax.set_xlabel("classification score s")
        ax.set_ylabel("IoU u")
        ax.set_title(f"t = s^{a:g} · u^{b:g}" + ("  (TOOD default)" if (a, b) == (1, 6) else ""))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle("how α and β shape the alignment metric", fontsize=12)
    fig.tight_layout()
    return fig


def plot_normalised_targets(assignment_rows: pd.DataFrame, title: str = ""):
    """Bars of t, t̂ and u for the positives of each object (one panel per object).

    assignment_rows: columns object, prior, t, t_hat, iou (see ``positives_table``). The dashed line
    is the object's best IoU among its positives, which t̂'s maximum reaches by construction.
    """
    objects = list(dict.fromkeys(assignment_rows["object"]))
    fig, axes = plt.subplots(1, len(objects), figsize=(max(4.5, 3.2 * len(objects)), 3.6), squeeze=False)
    for ax, obj in zip(axes[0], objects):
        rows = assignment_rows[assignment_rows["object"] == obj].sort_values("t", ascending=False)
        x = np.arange(len(rows))
        ax.bar(x - 0.27, rows["t"], 0.27, label="t (metric)", color="#7f7f7f")
        ax.bar(x, rows["t_hat"], 0.27, label="t̂ (target)", color="#d62728")
        ax.bar(x + 0.27, rows["iou"], 0.27, label="u (IoU)", color="#1f77b4")
        ax.axhline(rows["iou"].max(), color="#1f77b4", linestyle="--", linewidth=1)
        ax.set_xticks(x, [str(p) for p in rows["prior"]], rotation=90, fontsize=7)
        ax.set_xlabel("positive prior (flat index)")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"object {obj}", fontsize=10)
    axes[0, 0].set_ylabel("value")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.suptitle(title or "metric t, normalised target t̂ and IoU u of each object's positives", fontsize=11)
    fig.tight_layout()
    return fig


def positives_table(assignment, image: int = 0) -> pd.DataFrame:
    """The positives of one image of an Assignment as a table: object, prior, t, t_hat, iou."""
    pos = assignment.positive[image].nonzero().squeeze(1)
    return pd.DataFrame(dict(object=assignment.gt_index[image, pos].tolist(), prior=pos.tolist(),
                             t=assignment.metric[image, pos].tolist(), t_hat=assignment.target[image, pos].tolist(),
                             iou=assignment.iou[image, pos].tolist()))


def plot_assigned_positives(image: np.ndarray, pred: DensePrediction, gt_boxes: Tensor, assignments: dict,
                            class_names: list[str] | None = None, gt_labels: Tensor | None = None):
    """Positive anchor points of several assignments of one image side by side (e.g. ATSS vs TAL):
    one panel per assignment, the points coloured by the object they are assigned to, marker size
    by pyramid level (larger = coarser), the objects' boxes in the same colours.

    assignments: {title: Assignment of a batch whose image 0 is this image}.
    """
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(assignments), figsize=(5.2 * len(assignments), 5.4), squeeze=False)
    levels = pred.level_of_all()
    for ax, (title, a) in zip(axes[0], assignments.items()):
        ax.imshow(image)
        for g, box in enumerate(gt_boxes):
            name = class_names[int(gt_labels[g])] if class_names is not None and gt_labels is not None else ""
            _draw_box(ax, box, colours[g % 10], width=1.8, label=f"object {g} {name}".strip())
        pos = a.positive[0].nonzero().squeeze(1).cpu()
        pts = pred.points[pos].cpu()
        owners = a.gt_index[0, pos].cpu()
        for lvl in range(len(pred.strides)):
            on = levels[pos] == lvl
            if on.any():
                ax.scatter(pts[on, 0], pts[on, 1], s=14 + 18 * lvl, c=[colours[int(o) % 10] for o in owners[on]],
                           edgecolors="white", linewidths=0.8, marker="o")
        counts = ", ".join(f"P{l + 3}:{int((levels[pos] == l).sum())}" for l in range(len(pred.strides))
                           if (levels[pos] == l).any())
        ax.set_title(f"{title}: {len(pos)} positives\n({counts})", fontsize=10)
        ax.set_xlim(0, image.shape[1])
        ax.set_ylim(image.shape[0], 0)
        ax.axis("off")
    axes[0, 0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), fontsize=7, ncol=3, frameon=False)
    used = sorted({int(levels[i]) for a in assignments.values() for i in a.positive[0].nonzero().squeeze(1).tolist()})
    sizes = (f"marker size: pyramid level ({', '.join(f'P{l + 3}' for l in used)} here; larger = coarser)"
             if len(used) > 1 else f"every positive on P{used[0] + 3}" if used else "no positive")
    fig.suptitle(f"positive anchor points (colour: object; {sizes})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # room for the title above the two-line panel titles
    return fig


def plot_positive_differences(image: np.ndarray, pred: DensePrediction, gt_box: Tensor, object_index: int,
                              assignments: dict, reference: str, margin: float = 0.6):
    """What changes between several assignments of one object: one panel, cropped to the object (its box
    grown by ``margin`` of its size on each side), the positives of ``assignments[reference]`` as dots
    and, for each other assignment, the anchors it adds (+) and drops (×) in its own colour. Where every
    setting picks the same anchors, the panel says so instead of repeating a picture four times.

    assignments: {title: Assignment of a batch whose image 0 is this image}; ``object_index`` selects
    the object's positives (gt_index). Returns a Figure.
    """
    colours = plt.get_cmap("Set1").colors
    chosen = {t: set((a.positive[0] & (a.gt_index[0] == object_index)).nonzero().squeeze(1).tolist())
              for t, a in assignments.items()}
    base = chosen[reference]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    ax.imshow(image)
    _draw_box(ax, gt_box, "white", width=1.8, label="the object")
    pts = pred.points.cpu()
    if base:
        idx = sorted(base)
        ax.scatter(pts[idx, 0], pts[idx, 1], s=42, c="white", edgecolors="black", linewidths=0.8,
                   label=f"{reference}: {len(base)} positives", zorder=3)
    others = [t for t in assignments if t != reference]
    spread = 0.18 * float(pred.strides[0])  # settings that change the same anchor get side-by-side markers
    notes = []
    for k, title in enumerate(others):
        added, dropped = sorted(chosen[title] - base), sorted(base - chosen[title])
        shift = (k - (len(others) - 1) / 2) * spread
        colour = colours[k % len(colours)]
        if added:
            ax.scatter(pts[added, 0] + shift, pts[added, 1], s=70, marker="+", c=[colour], linewidths=2, zorder=4)
        if dropped:
            ax.scatter(pts[dropped, 0] + shift, pts[dropped, 1], s=60, marker="x", c=[colour], linewidths=2, zorder=4)
        ax.plot([], [], marker="s", linestyle="none", color=colour, label=f"{title}: +{len(added)} / ×{len(dropped)}")
        notes.append(len(added) + len(dropped))
    x1, y1, x2, y2 = map(float, gt_box)
    w, h = x2 - x1, y2 - y1
    ax.set_xlim(max(0, x1 - margin * w), min(image.shape[1], x2 + margin * w))
    ax.set_ylim(min(image.shape[0], y2 + margin * h), max(0, y1 - margin * h))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="+ added, × dropped", title_fontsize=8)
    verdict = "every setting picks the same anchors" if not any(notes) else f"changes against {reference}"
    ax.set_title(f"TAL positives of one object: {verdict}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_alignment_statistics(per_object: dict[str, pd.DataFrame]):
    """Distributions of the per-object PCC and top-10 IoU for several models (e.g. epochs)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, df in per_object.items():
        for ax, key in zip(axes, ("pcc", "iou_top")):
            values = df[key].dropna()
            ax.hist(values, bins=np.linspace(-1 if key == "pcc" else 0, 1, 31), alpha=0.5, label=f"{name} (mean {values.mean():.3f})")
    axes[0].set_xlabel("rank correlation of score and IoU (top-50 predictions)")
    axes[1].set_xlabel("mean IoU of the top-10 predictions")
    for ax in axes:
        ax.set_ylabel("objects")
        ax.legend(fontsize=8)
    fig.suptitle("Table 6 statistics per object (higher = better aligned)", fontsize=11)
    fig.tight_layout()
    return fig


def resized_image(item: dict, data_cfg) -> np.ndarray:
    """The network's view of a data set item: its normalised (3, H, W) tensor back to (H, W, 3) uint8."""
    from tood_lib.analysis.head_internals import denormalize

    return denormalize(item["image"], data_cfg.mean, data_cfg.std)
