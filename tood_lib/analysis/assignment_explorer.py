"""An interactive anchor-assignment explorer for JupyterLab (ipywidgets), used by notebook 03.

Pick an image and an object, move α, β and m, switch between the ATSS warm-up assigner and TOOD's
task-aligned assigner (TAL) and between checkpoints of a training run, and see on every pyramid
level: the metric the assigner ranks by (t = s^α·u^β for TAL, the anchor IoU for ATSS), the
candidate anchors, the positives with their t, t̂ and u, the per-level counts, and the anchors an
object loses to a neighbour (its candidate passed every cut but a neighbour with a higher IoU took
the prior).

The assignment itself is one call to ``tood_lib.assign`` (:func:`run_assigner`): the widget only
chooses its arguments and draws its result, so what you see is exactly what training uses.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm, Normalize
from matplotlib.lines import Line2D
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tood_lib.analysis.alignment import (DensePrediction, _draw_box, alignment_values, dense_predictions,
                                         level_extent, resized_image)
from tood_lib.assign import Assignment, atss_assign, task_aligned_assign
from tood_lib.boxes import box_iou

ASSIGNERS = ("TAL", "ATSS")


def run_assigner(pred: DensePrediction, gt_boxes: Tensor, gt_labels: Tensor, assigner: str = "TAL",
                 alpha: float = 1.0, beta: float = 6.0, topk: int = 13, atss_topk: int = 9) -> Assignment:
    """Assign one image's priors: the same calls the training criterion makes (``criterion.assign``).

    gt_boxes (G, 4) pixels, gt_labels (G,) -> an Assignment of a batch of one image.
    TAL ranks the model's predictions by t = s^α·u^β and keeps the top ``topk`` (m) inside each
    object; ATSS ignores the predictions and uses the anchor boxes, ``atss_topk`` per level.
    """
    gt_boxes, gt_labels = gt_boxes[None].float(), gt_labels[None].long()
    gt_mask = torch.ones(gt_labels.shape, dtype=torch.bool)
    valid = pred.valid[None]
    if assigner == "TAL":
        return task_aligned_assign(pred.scores[None], pred.boxes[None], pred.priors, gt_boxes, gt_labels, gt_mask,
                                   valid, alpha=alpha, beta=beta, topk=topk)
    if assigner == "ATSS":
        sizes = [h * w for h, w in pred.feature_sizes]
        return atss_assign(pred.priors, sizes, gt_boxes, gt_labels, gt_mask, valid, topk=atss_topk)
    raise ValueError(f"assigner: expected one of {ASSIGNERS}, got {assigner!r}")


@dataclass
class ExplorerResult:
    """What the explorer shows for one setting. A priors, G objects.

    assignment: the Assignment (batch of one image); ranking: (A,) what the assigner ranks the
    selected object's priors by (t or anchor IoU); per_level: counts per pyramid level for the
    selected object; objects: per object, candidates / positives / anchors lost to neighbours;
    positives: the selected object's positives with level, cell, t, t̂ and u.
    """

    assignment: Assignment
    ranking: Tensor
    per_level: pd.DataFrame
    objects: pd.DataFrame
    positives: pd.DataFrame


def explain_assignment(pred: DensePrediction, gt_boxes: Tensor, gt_labels: Tensor, assignment: Assignment,
                       selected: int, assigner: str, alpha: float, beta: float) -> ExplorerResult:
    """Tabulate an Assignment of one image around the ``selected`` object (see ExplorerResult)."""
    a = assignment
    levels = pred.level_of_all()
    G = len(gt_boxes)
    if assigner == "TAL":
        ranking = alignment_values(pred, gt_boxes[selected], int(gt_labels[selected]), alpha, beta)["metric"]
    else:
        ranking = box_iou(pred.priors, gt_boxes[selected:selected + 1].to(pred.priors))[:, 0].masked_fill(~pred.valid, 0)

    def lost_of(g: int) -> tuple[Tensor, Tensor]:
        """Priors that passed every cut for object g but went to another object, and who took them."""
        cand = a.candidates[0, g]
        passed = cand[a.candidate_positive[0, g] & (cand >= 0)]
        owner = a.gt_index[0, passed]
        taken = owner != g
        return passed[taken], owner[taken]

    objects = []
    for g in range(G):
        lost, takers = lost_of(g)
        cand = a.candidates[0, g]
        objects.append(dict(object=g, label=int(gt_labels[g]), candidates=int((cand >= 0).sum()),
                            passed_cuts=int(a.candidate_positive[0, g].sum()),
                            positives=int((a.gt_index[0] == g).sum()), lost_to_neighbours=len(lost),
                            taken_by=", ".join(str(int(t)) for t in sorted(set(takers.tolist())))))
    objects = pd.DataFrame(objects)

    cand = a.candidates[0, selected]
    cand = cand[cand >= 0]
    mine = (a.gt_index[0] == selected).nonzero().squeeze(1)
    lost, _ = lost_of(selected)
    per_level = pd.DataFrame([dict(level=f"P{l + 3}", stride=pred.strides[l],
                                   candidates=int((levels[cand] == l).sum()), positives=int((levels[mine] == l).sum()),
                                   lost=int((levels[lost] == l).sum())) for l in range(len(pred.strides))])
    rows = []
    for p in mine.tolist():
        l = int(levels[p])
        h, w = pred.feature_sizes[l]
        local = p - pred.level_starts[l]
        rows.append(dict(prior=p, level=f"P{l + 3}", row=local // w, col=local % w, t=float(a.metric[0, p]),
                         t_hat=float(a.target[0, p]), iou=float(a.iou[0, p])))
    positives = pd.DataFrame(rows, columns=["prior", "level", "row", "col", "t", "t_hat", "iou"])
    positives = positives.sort_values("t", ascending=False).reset_index(drop=True)
    return ExplorerResult(a, ranking, per_level, objects, positives)


HEAT_FLOOR = 0.02  # ATSS: map cells below this fraction of the maximum are not drawn, so the image shows through
LOG_RANGE = 1e-3  # TAL: t is drawn on a log scale over three decades below its maximum; smaller t is not drawn


def plot_explorer(image: np.ndarray, pred: DensePrediction, gt_boxes: Tensor, result: ExplorerResult, selected: int,
                  assigner: str, title: str = "", levels: Sequence[int] | None = None):
    """One panel per pyramid level: the image, over it the selected object's ranking map (t or anchor
    IoU), its candidate anchors (hollow circles), its positives (filled), the other objects' positives
    (small dots) and the anchors it lost to a neighbour (crosses in the neighbour's colour).

    ``levels``: the panels to draw (0 = P3); default the levels that hold one of the selected object's
    candidates (the others are blank for it). t spans orders of magnitude, so TAL's map is drawn on a
    log scale from ``LOG_RANGE`` below its maximum; ATSS's anchor IoU on a linear one from 0. Cells under
    the scale's floor are left transparent, so the image shows through."""
    colours = plt.get_cmap("tab10").colors
    a = result.assignment
    level_of = pred.level_of_all()
    cand = a.candidates[0, selected]
    cand = cand[cand >= 0]
    if levels is None:
        levels = sorted({int(level_of[i]) for i in cand}) or list(range(len(pred.strides)))
    fig, axes = plt.subplots(1, len(levels), figsize=(3.1 * len(levels) + 0.9, 3.7), squeeze=False)
    passed = a.candidates[0, selected][a.candidate_positive[0, selected]]
    owner = a.gt_index[0]
    lost = passed[owner[passed] != selected]
    vmax = max(float(result.ranking.max()), 1e-12)
    tal = assigner == "TAL"
    norm = LogNorm(vmin=vmax * LOG_RANGE, vmax=vmax) if tal else Normalize(vmin=0, vmax=vmax)
    floor = vmax * (LOG_RANGE if tal else HEAT_FLOOR)
    label = "t = s^α·u^β (log scale)" if tal else "anchor IoU"
    heat = None
    for l, ax in zip(levels, axes[0]):
        ax.imshow(image)  # the image stays readable: the map covers only the anchors it ranks
        level_map = pred.level_map(result.ranking, l)
        heat = ax.imshow(np.ma.masked_less_equal(np.asarray(level_map, dtype=float), floor), cmap="cividis", norm=norm,
                         alpha=0.7, extent=level_extent(pred.feature_sizes[l], pred.strides[l]), interpolation="nearest")
        for g, box in enumerate(gt_boxes):
            _draw_box(ax, box, colours[g % 10], width=2.2 if g == selected else 1.0, style="-" if g == selected else "--")
        on = lambda idx: idx[level_of[idx] == l]  # noqa: E731
        pts = pred.points
        c = on(cand)
        ax.scatter(pts[c, 0], pts[c, 1], s=46, facecolors="none", edgecolors="white", linewidths=1.2)
        others = on((owner >= 0).nonzero().squeeze(1))
        others = others[owner[others] != selected]
        ax.scatter(pts[others, 0], pts[others, 1], s=10, c=[colours[int(owner[o]) % 10] for o in others])
        mine = on((owner == selected).nonzero().squeeze(1))
        ax.scatter(pts[mine, 0], pts[mine, 1], s=34, c=[colours[selected % 10]], edgecolors="black", linewidths=0.6)
        gone = on(lost)
        ax.scatter(pts[gone, 0], pts[gone, 1], s=90, marker="X", c=[colours[int(owner[o]) % 10] for o in gone],
                   edgecolors="white", linewidths=1.0, zorder=5)
        ax.set_xlim(0, image.shape[1])
        ax.set_ylim(image.shape[0], 0)
        ax.set_xticks([])
        ax.set_yticks([])
        n_pos, n_c = len(mine), len(c)
        ax.set_title(f"P{l + 3} (stride {pred.strides[l]}): {n_pos} pos / {n_c} cand", fontsize=9)
    colour = colours[selected % 10]
    marker = dict(linestyle="none", markersize=8)
    handles = [Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="grey", label="candidate", **marker),
               Line2D([], [], marker="o", color=colour, markeredgecolor="black", label="positive", **marker),
               Line2D([], [], marker="o", color="grey", markersize=4, linestyle="none", label="other objects' positives"),
               Line2D([], [], marker="X", color="grey", markeredgecolor="black", label="lost to a neighbour (its colour)",
                      **marker),
               Line2D([], [], color=colour, linewidth=2.2, label="selected object")]
    fig.legend(handles=handles, loc="lower center", ncol=3 if len(levels) < 3 else 5, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.2 if len(levels) < 3 else 0.14, top=0.8, left=0.01, right=0.86, wspace=0.05)
    fig.colorbar(heat, cax=fig.add_axes([0.88, 0.24, 0.015, 0.52]), label=label)
    fig.suptitle(title, fontsize=11)
    return fig


class AssignmentExplorer:
    """The widget. ``AssignmentExplorer(run_dir).widget`` is what a notebook displays.

    Controls (ipywidgets, also reachable as attributes for scripting and tests): ``image``,
    ``object``, ``assigner``, ``alpha``, ``beta``, ``topk`` (m), ``checkpoint``. After any change,
    ``result`` holds the ExplorerResult that is on screen.
    """

    def __init__(self, run_dir, dataset=None, num_images: int = 40, draw: bool = True):
        import ipywidgets as W

        from tood_lib.engine.run_folder import load_run_model, run_checkpoints
        from tood_lib.workbook import workbook_val_set

        self.run_dir, self.draw = run_dir, draw
        self.checkpoints = run_checkpoints(run_dir)
        if not self.checkpoints:
            raise FileNotFoundError(f"no epoch_N.pth checkpoints in {run_dir}")
        self._load = load_run_model
        last = max(self.checkpoints)
        _, self.cfg = load_run_model(run_dir, last)
        self.dataset = dataset if dataset is not None else workbook_val_set(self.cfg, run_dir)
        self._models, self._preds = {}, {}
        warm = self.cfg.tal.warmup_epochs
        epochs = [0] + list(self.checkpoints)
        describe = {0: "untrained"} | {e: f"epoch {e} ({'ATSS warm-up' if e <= warm else 'TAL'})" for e in self.checkpoints}

        style = dict(description_width="90px")
        wide = W.Layout(width="340px")
        n = min(num_images, len(self.dataset))
        self.image = W.Dropdown(options=[(self._image_label(i), i) for i in range(n)], value=0,
                                description="image", style=style, layout=wide)
        self.object = W.Dropdown(options=[], description="object", style=style, layout=wide)
        self.assigner = W.ToggleButtons(options=list(ASSIGNERS), value="TAL", description="assigner", style=style)
        self.alpha = W.FloatSlider(value=self.cfg.tal.alpha, min=0.0, max=3.0, step=0.1, description="α",
                                   continuous_update=False, style=style, layout=wide)
        self.beta = W.FloatSlider(value=self.cfg.tal.beta, min=0.0, max=10.0, step=0.5, description="β",
                                  continuous_update=False, style=style, layout=wide)
        self.topk = W.IntSlider(value=self.cfg.tal.topk, min=1, max=40, step=1, description="m (top-m)",
                                continuous_update=False, style=style, layout=wide)
        self.checkpoint = W.Dropdown(options=[(describe[e], e) for e in epochs], value=last,
                                     description="checkpoint", style=style, layout=wide)
        self.alpha.add_class("tood-alpha")
        self.beta.add_class("tood-beta")
        self.topk.add_class("tood-topk")
        self.summary = W.HTML()
        self.summary.add_class("tood-summary")
        self.tables = W.HTML()
        self.plot = W.Output()
        self.plot.add_class("tood-plot")
        self._busy = False
        self._set_object_options()
        for control in (self.object, self.assigner, self.alpha, self.beta, self.topk, self.checkpoint):
            control.observe(self._on_change, names="value")
        self.image.observe(self._on_image, names="value")
        self.widget = W.VBox([W.HBox([W.VBox([self.image, self.object, self.checkpoint, self.assigner]),
                                      W.VBox([self.alpha, self.beta, self.topk])]),
                              self.summary, self.plot, self.tables])
        self.result: ExplorerResult | None = None
        self.png: bytes | None = None  # the current view, drawn by refresh()
        self.refresh()

    # ------------------------------------------------------------------ data
    def _image_label(self, index: int) -> str:
        boxes, labels = self.dataset.ground_truth(index)
        return f"val image {self.dataset.image_ids[index]} ({len(labels)} objects)"

    def _set_object_options(self) -> None:
        _, labels = self.dataset.ground_truth(self.image.value)
        names = self.dataset.class_names
        self.object.options = [(f"{g}: {names[int(c)]}", g) for g, c in enumerate(labels.tolist())]
        self.object.value = 0 if len(labels) else None

    def model(self, epoch: int):
        if epoch not in self._models:
            self._models[epoch], _ = self._load(self.run_dir, epoch)
        return self._models[epoch]

    def prediction(self, epoch: int, index: int) -> tuple[DensePrediction, Tensor, Tensor, np.ndarray]:
        """(DensePrediction, gt_boxes (G, 4), gt_labels (G,), resized image) of a val image, cached."""
        key = (epoch, index)
        if key not in self._preds:
            item = self.dataset[index]
            batch, _ = self.dataset.collate([item])
            pred = dense_predictions(self.model(epoch), batch)[0]
            mask = batch.gt_mask[0]
            self._preds[key] = (pred, batch.gt_boxes[0][mask], batch.gt_labels[0][mask],
                                resized_image(item, self.dataset.data_cfg))
        return self._preds[key]

    # ------------------------------------------------------------------ events
    def _on_image(self, change) -> None:
        self._busy = True
        try:
            self._set_object_options()
        finally:
            self._busy = False
        self.refresh()

    def _on_change(self, change) -> None:
        if not self._busy:
            self.refresh()

    def compute(self) -> ExplorerResult:
        """The ExplorerResult of the current control values (no drawing)."""
        pred, gt_boxes, gt_labels, _ = self.prediction(self.checkpoint.value, self.image.value)
        a = run_assigner(pred, gt_boxes, gt_labels, self.assigner.value, self.alpha.value, self.beta.value,
                         self.topk.value, self.cfg.tal.atss_topk)
        return explain_assignment(pred, gt_boxes, gt_labels, a, self.object.value or 0, self.assigner.value,
                                  self.alpha.value, self.beta.value)

    def refresh(self) -> None:
        """Recompute and redraw everything for the current control values."""
        from IPython.display import Image

        tal = self.assigner.value == "TAL"
        for control in (self.alpha, self.beta, self.topk):
            control.disabled = not tal  # ATSS uses anchor boxes and its own k per level
        if self.object.value is None:
            self.summary.value = "<b>this image has no objects</b>"
            return
        self.result = r = self.compute()
        g = self.object.value
        row = r.objects.iloc[g]
        setting = (f"TAL, α = {self.alpha.value:.1f}, β = {self.beta.value:.1f}, m = {self.topk.value}" if tal
                   else f"ATSS, k = {self.cfg.tal.atss_topk} per level")
        levels = ", ".join(f"{p.level}: {p.positives}" for p in r.per_level.itertuples() if p.positives)
        self.summary.value = (
            f"<div style='font-size:13px'><b>{html.escape(self.checkpoint.label)}</b> | {setting} | "
            f"object {g} ({html.escape(self.object.label.split(': ', 1)[-1])}): <b>{row.positives} positives</b>"
            f" ({levels or 'none'}), {row.candidates} candidates, {row.lost_to_neighbours} lost to neighbours"
            f" | all objects: {int(r.assignment.num_positive[0])} positives</div>")
        self.tables.value = (
            "<div style='display:flex;gap:24px;font-size:12px'>"
            f"<div><b>selected object, per level</b>{r.per_level.to_html(index=False)}</div>"
            f"<div><b>its positives</b> (t̂ = t / max t · max u){r.positives.round(3).to_html(index=False)}</div>"
            f"<div><b>every object</b>{r.objects.to_html(index=False)}</div></div>")
        if self.draw:
            pred, gt_boxes, _, image = self.prediction(self.checkpoint.value, self.image.value)
            fig = plot_explorer(image, pred, gt_boxes, r, g, self.assigner.value,
                                title=f"{self.checkpoint.label}: {setting}, object {g}")
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)
            plt.close(fig)
            self.png = buffer.getvalue()
            # replace the Output's content directly: works from any thread and outside a kernel
            self.plot.outputs = ()
            self.plot.append_display_data(Image(data=self.png, format="png"))

    def _repr_mimebundle_(self, include=None, exclude=None):
        """What a notebook shows for ``explorer``: the live widget where widgets run (JupyterLab, trusted), and
        beside it a PNG of the current view for every place they do not (a static viewer, GitHub, an untrusted
        notebook), which picks the richest output it can render."""
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        if self.png is not None:
            bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        bundle["text/plain"] = ("Assignment explorer: run the notebook in JupyterLab for the live widget; the picture is "
                                "its current view")
        return bundle


def sweep_exponents(explorer: AssignmentExplorer, alphas, betas, images=range(20), epoch: int | None = None,
                    topk: int | None = None) -> pd.DataFrame:
    """TAL over a grid of (α, β) on several images -> one row per (α, β): mean IoU u and mean score s
    of the positives, positives per object, and how many objects end with no positive at all."""
    epoch = max(explorer.checkpoints) if epoch is None else epoch
    topk = explorer.cfg.tal.topk if topk is None else topk
    preds = [explorer.prediction(epoch, i) for i in images if i < len(explorer.dataset)]
    rows = []
    for alpha in alphas:
        for beta in betas:
            ious, scores, per_object, empty, objects = [], [], [], 0, 0
            for pred, gt_boxes, gt_labels, _ in preds:
                if len(gt_boxes) == 0:
                    continue
                a = run_assigner(pred, gt_boxes, gt_labels, "TAL", alpha, beta, topk)
                pos = a.positive[0]
                ious.append(a.iou[0, pos])
                scores.append(pred.scores[pos, a.labels[0, pos]])
                counts = torch.bincount(a.gt_index[0, pos], minlength=len(gt_boxes))
                per_object.append(counts.float())
                empty += int((counts == 0).sum())
                objects += len(gt_boxes)
            iou, score, count = torch.cat(ious), torch.cat(scores), torch.cat(per_object)
            rows.append(dict(alpha=alpha, beta=beta, mean_iou=float(iou.mean()) if len(iou) else float("nan"),
                             mean_score=float(score.mean()) if len(score) else float("nan"),
                             positives_per_object=float(count.mean()), objects_without_positives=empty,
                             objects=objects))
    return pd.DataFrame(rows)


def plot_exponent_sweep(sweep: pd.DataFrame, title: str = ""):
    """Heat maps over (α, β) of the positives' mean IoU and mean score, from ``sweep_exponents``, both on
    the fixed scale 0..1 (each cell is labelled with its value)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label, cmap in ((axes[0], "mean_iou", "mean IoU u of the positives", "viridis"),
                                 (axes[1], "mean_score", "mean score s of the positives", "magma")):
        table = sweep.pivot(index="beta", columns="alpha", values=key).sort_index(ascending=False)
        # both are in 0..1: a fixed scale, so that a difference of 0.01 looks like one
        im = ax.imshow(table.to_numpy(), cmap=cmap, aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(len(table.columns)), [f"{a:g}" for a in table.columns])
        ax.set_yticks(range(len(table.index)), [f"{b:g}" for b in table.index])
        for (i, j), v in np.ndenumerate(table.to_numpy()):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white" if v < 0.55 else "black")
        ax.set_xlabel("α (weight of the score)")
        ax.set_ylabel("β (weight of the IoU)")
        ax.set_title(label, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(title or "what TAL's positives look like for each (α, β)", fontsize=11)
    fig.tight_layout()
    return fig
