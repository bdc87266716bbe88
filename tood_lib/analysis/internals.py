"""Looking inside the T-Head (paper §3.1, Fig. 3): what notebook 01 draws.

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
(MMDetection's ``center_offset=0``, see ``model/priors.py``); every drawing places it there.

Drawings take ``image``, the (h, w, 3) uint8 picture *the network saw* (resized, see
:func:`network_inputs`), and boxes in that picture's pixels. Each returns a matplotlib Figure.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.patheffects as pe
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from torch import Tensor
from torchvision.ops import box_iou, nms

STRIDES = (8, 16, 32, 64, 128)
SIDES = ("left", "top", "right", "bottom")  # box channel c = x1, y1, x2, y2 reads O[2c] (dy), O[2c+1] (dx)
SIDE_COLOURS = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e")
TASK_COLOURS = {"cls": "#4c72b0", "reg": "#dd8452"}
_OUTLINE = [pe.withStroke(linewidth=3, foreground="black")]  # white lines stay visible on light pixels


# ----------------------------------------------------------------------------------------------
# getting the internals


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


# ----------------------------------------------------------------------------------------------
# drawing helpers


def _show_image(ax, image, gray: bool = False):
    """The picture in pixel coordinates: x in [0, w], y in [0, h] (pixel (0, 0) covers [0,1]²)."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    if gray:
        ax.imshow(img.mean(axis=2), cmap="gray", extent=(0, w, h, 0), vmin=0, vmax=255)
    else:
        ax.imshow(img, extent=(0, w, h, 0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)


def _show_level_map(ax, values: np.ndarray, stride: int, image_hw, **kwargs):
    """A (H, W) map of one level drawn so that cell (i, j) is centred on its anchor point (j·s, i·s)."""
    h, w = values.shape
    extent = (-stride / 2, w * stride - stride / 2, h * stride - stride / 2, -stride / 2)
    im = ax.imshow(values, extent=extent, interpolation="nearest", **kwargs)
    ax.set_xlim(0, image_hw[1])
    ax.set_ylim(image_hw[0], 0)
    return im


def _draw_gt(ax, gt_boxes, label: str | None = "ground truth"):
    for n, (x1, y1, x2, y2) in enumerate(np.asarray(gt_boxes if gt_boxes is not None else []).reshape(-1, 4)):
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linestyle=(0, (4, 2)), lw=1.3,
                         label=label if n == 0 else None)
        rect.set_path_effects(_OUTLINE)
        ax.add_patch(rect)


def _pixel_axes(ax):
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")


def _points_of_level(internals, level, k, image_index, points, strides):
    """(row, col) pairs: the given ``points``, or the k most confident distinct locations of ``level``."""
    if points is not None:
        return [(int(i), int(j)) for i, j in points]
    top = top_locations(internals, k, image_index, levels=[level], strides=strides)
    return list(zip(top["row"].tolist(), top["col"].tolist()))


# ----------------------------------------------------------------------------------------------
# the figures


def plot_interactive_features(image, internals: Sequence[Mapping], level: int, image_index: int = 0,
                              stride: int | None = None):
    """The six task-interactive feature maps X^1..X^6 of one level (Eq. 1) next to the image, and
    the two task-specific maps X^cls and X^reg they are decomposed into (Eq. 2-4).

    Each map is the L2 norm over its C channels, (H, W), on one shared colour scale so that the
    growth (or not) of the response through the stack is visible. Returns a 3x3 Figure.
    """
    d = internals[level]
    stride = stride or 8 * 2 ** level
    hw = np.asarray(image).shape[:2]
    maps = [(f"$X^{{{k + 1}}}$ (interactive layer {k + 1})", feature_energy(x)[image_index].cpu().numpy())
            for k, x in enumerate(d["inter_feats"])]
    maps += [("$X^{cls}$ (classification)", feature_energy(d["cls_feat"])[image_index].cpu().numpy()),
             ("$X^{reg}$ (localisation)", feature_energy(d["reg_feat"])[image_index].cpu().numpy())]
    vmax = max(float(np.percentile(m, 99.5)) for _, m in maps[:len(d["inter_feats"])]) or 1.0
    fig, axes = plt.subplots(3, 3, figsize=(11, 10.5), constrained_layout=True)
    _show_image(axes.flat[0], image)
    axes.flat[0].set_title("input image (as the network sees it)", fontsize=10)
    _pixel_axes(axes.flat[0])
    n = len(d["inter_feats"])
    for k, (ax, (title, values)) in enumerate(zip(axes.flat[1:], maps)):
        # the N interactive maps share one scale (how the response grows through the stack);
        # X^cls and X^reg come out of their own GroupNorm and get their own
        im = _show_level_map(ax, values, stride, hw, cmap="magma", vmin=0, vmax=vmax if k < n else None)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8, label="‖x‖₂ over channels")
    h, w = maps[0][1].shape
    fig.suptitle(f"T-Head on P{level + 3} (stride {stride}, {h}x{w} locations): the interactive stack and the "
                 f"two task branches", fontsize=12)
    return fig


def plot_layer_attention(internals_by_model: Mapping[str, Sequence[Mapping]], image_index: int | None = None):
    """What the layer attention (Eq. 3) varies: the difference w^cls_k − w^reg_k of the two branches'
    weights for every interactive layer k, one panel per model, the five levels as neighbouring bars of
    one colour scale (so a difference between levels shows as bars of different heights), all panels on
    one zoomed, symmetric axis (the weights all start at 0.5 and move by little, so bars of the raw
    weights on 0..1 would hide what changed). Above zero: the classification branch reads that layer
    more; below: the localisation branch.

    ``internals_by_model`` maps a name (e.g. "untrained", "trained") to a head's internals. The
    weights depend on the image (they come from its pooled features): with ``image_index=None``
    bars are the mean over the batch and whiskers its standard deviation. Returns a Figure; its axes
    hold, per model, the bars level by level (P3's six layers first).
    """
    names = list(internals_by_model)
    n_levels = len(next(iter(internals_by_model.values())))
    diffs = {name: [(d["cls_attention"] - d["reg_attention"]).float().cpu() for d in internals]
             for name, internals in internals_by_model.items()}
    if image_index is not None:
        diffs = {name: [w[image_index:image_index + 1] for w in ws] for name, ws in diffs.items()}
    reach = max(float((w.mean(0).abs() + (w.std(0) if len(w) > 1 else 0)).max()) for ws in diffs.values() for w in ws)
    reach = max(reach * 1.25, 1e-3)
    level_colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.85, n_levels))
    width = 0.8 / n_levels
    fig, axes = plt.subplots(1, len(names), figsize=(6.2 * len(names), 3.6), sharey=True, squeeze=False,
                             constrained_layout=True)
    for ax, name in zip(axes[0], names):
        for lvl, w in enumerate(diffs[name]):
            mean = w.mean(0).numpy()
            err = w.std(0).numpy() if len(w) > 1 else None
            x = np.arange(len(mean)) + 1 + (lvl - (n_levels - 1) / 2) * width
            ax.bar(x, mean, width, yerr=err, capsize=1.5, color=level_colours[lvl], label=f"P{lvl + 3}")
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xticks(np.arange(len(mean)) + 1)
        ax.set_ylim(-reach, reach)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("interactive layer k")
        ax.text(0.01, 0.98, "classification reads layer k more ↑", transform=ax.transAxes, va="top", fontsize=8,
                color=TASK_COLOURS["cls"])
        ax.text(0.01, 0.02, "localisation reads layer k more ↓", transform=ax.transAxes, va="bottom", fontsize=8,
                color=TASK_COLOURS["reg"])
    axes[0, 0].set_ylabel("$w^{cls}_k - w^{reg}_k$")
    axes[0, -1].legend(title="level", fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    batch = len(next(iter(internals_by_model.values()))[0]["cls_attention"])
    what = f"image {image_index}" if image_index is not None else f"mean ± std over {batch} image(s)"
    fig.suptitle(f"Layer attention: how differently the two tasks weight each interactive layer ({what})", fontsize=11)
    return fig


def attention_split(internals: Sequence[Mapping]) -> pd.DataFrame:
    """Per level (means over the batch): the layer the classification branch weights most *relative to*
    the localisation branch (largest w^cls_k − w^reg_k) and the reverse (smallest), and the largest and
    mean |w^cls_k − w^reg_k|: the numbers behind :func:`plot_layer_attention`."""
    rows = []
    for lvl, d in enumerate(internals):
        cls, reg = d["cls_attention"].float().mean(0), d["reg_attention"].float().mean(0)
        diff = cls - reg
        rows.append(dict(level=f"P{lvl + 3}", cls_leaning_layer=int(diff.argmax()) + 1,
                         reg_leaning_layer=int(diff.argmin()) + 1, cls_mean=float(cls.mean()), reg_mean=float(reg.mean()),
                         max_gap=float(diff.abs().max()), mean_gap=float(diff.abs().mean())))
    return pd.DataFrame(rows).set_index("level")


def plot_probability_map(image, internals: Sequence[Mapping], levels: Sequence[int] | None = None,
                         gt_boxes=None, image_index: int = 0, with_scores: bool = False, strides=STRIDES,
                         title: str | None = None):
    """The probability map M (Eq. 7) of each level, (H, W) cells laid over the (grey) image, with the
    ground-truth boxes. All panels share the colour scale 0..1, so models can be compared.

    ``with_scores=True`` adds two rows: max_k σ(Z_cls) (the classifier alone) and max_k P_align =
    sqrt(σ(Z_cls)·M) (the score the detector ranks by, Eq. 5). Returns a Figure.
    """
    levels = list(range(len(internals))) if levels is None else list(levels)
    hw = np.asarray(image).shape[:2]
    rows = [("M (Eq. 7)", lambda d: d["prob_map"][image_index, 0])]
    if with_scores:
        rows += [("max$_k$ σ($Z_{cls}$)", lambda d: d["cls_logits"][image_index].float().sigmoid().max(0).values),
                 ("max$_k$ $P_{align}$ = $\\sqrt{σ(Z)\\cdot M}$",
                  lambda d: aligned_scores(d)[image_index].max(0).values)]
    fig, axes = plt.subplots(len(rows), len(levels), figsize=(min(14, 3.1 * len(levels) + 1), 3.1 * len(rows) + 0.7),
                             squeeze=False, constrained_layout=True)
    for r, (name, get) in enumerate(rows):
        for c, lvl in enumerate(levels):
            ax = axes[r, c]
            _show_image(ax, image, gray=True)
            values = get(internals[lvl]).float().cpu().numpy()
            im = _show_level_map(ax, values, strides[lvl], hw, cmap="inferno", vmin=0, vmax=1, alpha=0.75)
            _draw_gt(ax, gt_boxes)
            ax.set_title(f"{name}, P{lvl + 3} (stride {strides[lvl]})\nvalues {values.min():.3g} to {values.max():.3g}",
                         fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=0.85, label="probability")
    axes[0, 0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.suptitle(title or "Where the head expects an object: the probability map M per level", fontsize=12)
    return fig


def plot_offset_arrows(image, internals: Sequence[Mapping], level: int | Sequence[int], stride: int | None = None,
                       points: Sequence[tuple[int, int]] | None = None, k: int = 6, image_index: int = 0,
                       gt_boxes=None, exaggerate: float = 1.0):
    """The offset map O (Eq. 8) as arrows: at each chosen location of ``level``, one arrow per box
    side, from the anchor point (j·s, i·s) to where that side of the box is read from,
    ((j + dx)·s, (i + dy)·s) px, with (dy, dx) = (O[2c], O[2c+1]) (Eq. 6).

    ``points`` are (row, col) locations; by default the k most confident distinct locations of
    that level (highest P_align, after NMS, see :func:`top_locations`). ``exaggerate`` multiplies
    the arrows' length (said in the title when ≠ 1). The box before alignment at each point is
    drawn thin, in gold. ``level`` may be a list (one panel each;
    ``stride`` then defaults per level). Returns a Figure; each panel holds one ``quiver`` per side.
    """
    levels = [level] if isinstance(level, int) else list(level)
    fig, axes = plt.subplots(1, len(levels), figsize=(min(14, 6 * len(levels)), 6.9), squeeze=False,
                             constrained_layout=True)
    for ax, lvl in zip(axes[0], levels):
        s = stride if (stride is not None and len(levels) == 1) else 8 * 2 ** lvl
        d = internals[lvl]
        pts = _points_of_level(internals, lvl, k, image_index, points, strides={lvl: s})
        _show_image(ax, image, gray=True)
        _draw_gt(ax, gt_boxes)
        rows, cols = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        offsets = d["offsets"][image_index].float().cpu().numpy()  # (8, H, W)
        for n, (i, j) in enumerate(pts):
            x1, y1, x2, y2 = d["boxes_before"][image_index, :, i, j].float().cpu().numpy() * s
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="gold", lw=0.9,
                                   alpha=0.8, label="box B at that location" if n == 0 else None))
        for c, (side, colour, coord) in enumerate(zip(SIDES, SIDE_COLOURS, ("x1", "y1", "x2", "y2"))):
            dy, dx = offsets[2 * c, rows, cols], offsets[2 * c + 1, rows, cols]
            # angles/scale_units "xy" with scale 1: an arrow of (U, V) data units ends at (X + U, Y + V) px
            ax.quiver(cols * s, rows * s, dx * s * exaggerate, dy * s * exaggerate, color=colour, angles="xy",
                      scale_units="xy", scale=1, width=0.006, headwidth=3.5, minlength=0.5,
                      label=f"{side} side ({coord})")
        ax.scatter(cols * s, rows * s, s=14, c="white", edgecolors="black", zorder=3, label="anchor point")
        size = "true length" if exaggerate == 1 else f"length x{exaggerate:g}"
        mean_len = float(np.abs(offset_lengths(d)[image_index].cpu().numpy()[:, rows, cols]).mean()) if len(pts) else 0
        ax.set_title(f"O on P{lvl + 3} (stride {s}) at {len(pts)} locations, {size}\n"
                     f"mean |offset| there: {mean_len:.2f} cells = {mean_len * s:.1f} px", fontsize=10)
        _pixel_axes(ax)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)  # below, off the picture
    fig.suptitle("Offsets O: where each side of the box is sampled from (Eq. 6, 8)", fontsize=12)
    return fig


def plot_boxes_before_after(image, internals: Sequence[Mapping], k: int = 4, image_index: int = 0, gt_boxes=None,
                            strides=STRIDES, class_names=None, iou_thr: float = 0.6):
    """Boxes before (B, dashed) and after (B_align, solid) the offset resampling at the k most
    confident distinct locations (see :func:`top_locations`), over the image with the ground truth,
    plus one zoomed panel per location with the IoU to the best-matching ground truth.
    Returns a Figure."""
    top = top_locations(internals, k, image_index, strides=strides, gt_boxes=gt_boxes, iou_thr=iou_thr)
    hw = np.asarray(image).shape[:2]
    n = len(top)
    cols = max(1, (n + 1) // 2)  # the zoomed panels, two rows of them right of the full image
    mosaic = [["full", "full"] + [f"z{c}" for c in range(cols)],
              ["full", "full"] + [f"z{cols + c}" for c in range(cols)]]
    fig, axd = plt.subplot_mosaic(mosaic, figsize=(min(14, 6.5 + 3.2 * cols), 6.8), constrained_layout=True)
    for name in (f"z{i}" for i in range(n, 2 * cols)):  # an odd k leaves one panel empty
        axd[name].axis("off")
    def draw(ax, lw):
        _show_image(ax, image, gray=True)
        _draw_gt(ax, gt_boxes)
        for r, row in top.iterrows():
            colour = plt.get_cmap("tab10")(r % 10)
            for key, ls in (("before", "--"), ("after", "-")):
                x1, y1, x2, y2 = row[key]
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=lw, linestyle=ls))
            ax.plot(row["x"], row["y"], "o", ms=4, mfc=colour, mec="black")

    draw(axd["full"], 1.6)
    axd["full"].set_aspect("equal")
    _pixel_axes(axd["full"])
    for r, row in top.iterrows():
        colour = plt.get_cmap("tab10")(r % 10)
        name = class_names[row["label"]] if class_names is not None else str(row["label"])
        axd["full"].text(row["after"][0], row["after"][1] - 2, f"{r + 1}: {name} {row['score']:.2f}", color="white",
                         fontsize=8, va="bottom", bbox=dict(facecolor=colour, alpha=0.8, pad=1, lw=0))
    handles = [Line2D([], [], color="k", ls="--", label="B, before alignment"),
               Line2D([], [], color="k", ls="-", label="$B_{align}$, after alignment"),
               Line2D([], [], color="k", marker="o", ls="", label="anchor point of the location"),
               Line2D([], [], color="white", ls=(0, (4, 2)), path_effects=_OUTLINE, label="ground truth")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    axd["full"].set_title(f"the {n} most confident distinct locations (all levels)", fontsize=10)
    for r, row in top.iterrows():
        ax = axd[f"z{r}"]
        draw(ax, 2.2)
        x1 = min(row["before"][0], row["after"][0])
        y1 = min(row["before"][1], row["after"][1])
        x2 = max(row["before"][2], row["after"][2])
        y2 = max(row["before"][3], row["after"][3])
        pad = 0.15 * max(x2 - x1, y2 - y1) + 4
        ax.set_xlim(max(0, x1 - pad), min(hw[1], x2 + pad))  # the crop, clipped to the picture
        ax.set_ylim(min(hw[0], y2 + pad), max(0, y1 - pad))
        ax.set_xticks([])
        ax.set_yticks([])
        iou = f"\nIoU with GT {row['iou_before']:.2f} → {row['iou_after']:.2f}" if "iou_before" in row else ""
        ax.set_title(f"{r + 1}: P{row['level'] + 3} ({row['row']}, {row['col']}){iou}", fontsize=9)
    fig.suptitle("Boxes before (dashed) and after (solid) the per-side resampling of Eq. 6", fontsize=12)
    return fig


def plot_training_change(image, internals_by_model: Mapping[str, Sequence[Mapping]], level: int = 0,
                         gt_boxes=None, image_index: int = 0, strides=STRIDES):
    """What training changes in the head's outputs on one level: one row per model, columns
    M, max_k σ(Z_cls), max_k P_align (colour scale 0..1) and the mean offset length |O| over the
    four sides (in cells, colour scale shared by the rows). Returns a Figure."""
    names = list(internals_by_model)
    s, hw = strides[level], np.asarray(image).shape[:2]
    lengths = {n: offset_lengths(internals_by_model[n][level])[image_index].mean(0).cpu().numpy() for n in names}
    vmax_len = max(float(v.max()) for v in lengths.values()) or 1.0
    columns = [("M", lambda d: d["prob_map"][image_index, 0], "inferno", 1.0, "probability"),
               ("max$_k$ σ($Z_{cls}$)", lambda d: d["cls_logits"][image_index].float().sigmoid().max(0).values,
                "inferno", 1.0, "probability"),
               ("max$_k$ $P_{align}$", lambda d: aligned_scores(d)[image_index].max(0).values, "inferno", 1.0,
                "probability"),
               ("mean |O| over the 4 sides", None, "viridis", vmax_len, "offset length (cells)")]
    fig, axes = plt.subplots(len(names), len(columns), figsize=(13.5, 3.3 * len(names) + 0.6), squeeze=False,
                             constrained_layout=True)
    for r, name in enumerate(names):
        d = internals_by_model[name][level]
        for c, (title, get, cmap, vmax, label) in enumerate(columns):
            ax = axes[r, c]
            values = lengths[name] if get is None else get(d).float().cpu().numpy()
            _show_image(ax, image, gray=True)
            im = _show_level_map(ax, values, s, hw, cmap=cmap, vmin=0, vmax=vmax, alpha=0.75)
            _draw_gt(ax, gt_boxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {title}\nmax {values.max():.3g}", fontsize=9)
            if r == len(names) - 1:
                fig.colorbar(im, ax=axes[:, c].tolist(), orientation="horizontal", shrink=0.8, label=label)
    fig.suptitle(f"What training changes on P{level + 3} (stride {s})", fontsize=12)
    return fig


# ----------------------------------------------------------------------------------------------
# Table 1: T-Head vs parallel head


def measure_head_complexity(presets: Mapping[str, str] | None = None, height: int = 800, width: int = 1280) -> dict:
    """Build each preset (random weights, no download) and count it: {head: dict(head_params,
    total_params (trainable, as the paper counts), head_macs, total_macs)} at height x width.
    ``presets`` maps the head kind ("t_head", "parallel") to a preset name; default: the R-50 pair
    of Table 1. A few seconds per model on a CPU (one real forward pass at 1280x800)."""
    from tood_lib.analysis.complexity import count_macs, count_parameters
    from tood_lib.config import build_model, get_preset

    presets = presets or {"t_head": "tood_r50_fpn_1x_coco", "parallel": "atss_parallel_r50_fpn_1x_coco"}
    measured = {}
    for head, preset in presets.items():
        model = build_model(get_preset(preset))
        params, macs = count_parameters(model), count_macs(model, height, width)
        measured[head] = dict(head_params=params["head"], total_params=params["trainable"],
                              head_macs=macs["head"], total_macs=macs["total"])
    return measured


def complexity_table(measured: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """Counts from :func:`measure_head_complexity` beside the paper's Table 1 (ATSS rows = TOOD).

    One row per head; columns in pairs, ours then the paper's: head params (M), total params (M,
    trainable), head GMACs, total GMACs (the paper calls MACs "FLOPs")."""
    from tood_lib.analysis.complexity import PAPER_TABLE1

    labels = {"t_head": "T-Head (TOOD)", "parallel": "parallel head (ATSS)"}
    rows = {}
    for head, m in measured.items():
        paper = PAPER_TABLE1[head]
        rows[labels.get(head, head)] = {
            "head params (M)": m["head_params"] / 1e6, "head params (M), paper": paper["head_params_m"],
            "total params (M)": m["total_params"] / 1e6, "total params (M), paper": paper["total_params_m"],
            "head GMACs": m["head_macs"] / 1e9, "head GMACs, paper": paper["head_gmacs"],
            "total GMACs": m["total_macs"] / 1e9, "total GMACs, paper": paper["total_gmacs"]}
    return pd.DataFrame.from_dict(rows, orient="index").round(2)


def head_complexity_table(height: int = 800, width: int = 1280) -> pd.DataFrame:
    """Table 1's size columns for the full R-50 models, counted by us and quoted from the paper."""
    return complexity_table(measure_head_complexity(height=height, width=width))
