"""Drawing the T-Head's intermediate maps over the image (notebook 01, paper Fig. 3): the interactive
features, the probability map M, the offsets O, the boxes before and after alignment, and what training
changes. The maps come from ``head_internals.head_internals`` (its docstring lists them).

Location (row i, column j) of a level with stride s has its anchor point at pixel (x, y) = (j·s, i·s)
(MMDetection's ``center_offset=0``, see ``model/priors.py``); every drawing places it there. Drawings take
``image``, the (h, w, 3) uint8 picture *the network saw* (resized, see ``head_internals.network_inputs``),
and boxes in that picture's pixels. Each returns a matplotlib Figure.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.patheffects as pe
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from tood_lib.analysis.head_internals import STRIDES, SIDES, aligned_scores, feature_energy, offset_lengths, top_locations

SIDE_COLOURS = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e")
_OUTLINE = [pe.withStroke(linewidth=3, foreground="black")]  # white lines stay visible on light pixels


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
