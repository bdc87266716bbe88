"""Does the trained T-Head's layer attention differ between pyramid levels and between the two tasks?

The task decomposition (Eq. 3 of the paper) gives each task its own weights w_k over the N
interactive layers, computed per level from that level's pooled features. TOOD's argument is that the
two tasks want different layers, and the weights are computed per level because objects of different
sizes may too. On the first CPU bench every positive sat on P3, and the trained weights were the same
on all five levels (issue 19). :func:`layer_attention_by_level` measures the weights of a trained
model over a val split; :func:`layer_attention_summary` reduces them to the two gaps in question.
:func:`plot_layer_attention` draws the same weights for a few images, from ``head_internals``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from tood_lib.analysis.levels import level_names

TASK_COLOURS = {"cls": "#4c72b0", "reg": "#dd8452"}


@torch.no_grad()
def layer_attention_by_level(model, dataset, images: int | None = None, batch_size: int = 16) -> pd.DataFrame:
    """The mean layer-attention weight over the first ``images`` (default all) of ``dataset`` (test mode,
    cached features allowed) -> one row per (level P3..P7, task "cls"/"reg", layer k = 1..N): ``weight``
    (mean over images) and ``std`` (over images). A model without layer attention gives an empty frame."""
    names = level_names(model.cfg.model.strides)
    count = len(dataset) if images is None else min(images, len(dataset))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    weights: dict[tuple[str, str], list[torch.Tensor]] = {}
    for start in range(0, count, batch_size):
        batch, _ = dataset.collate([dataset[i] for i in range(start, min(count, start + batch_size))])
        features = None if batch.features is None else [f.to(device) for f in batch.features]
        out = model(batch.images.to(device), return_internals=True, backbone_features=features)
        for level, internals in zip(names, out.internals):
            for task in ("cls", "reg"):
                w = internals.get(f"{task}_attention")
                if w is not None:
                    weights.setdefault((level, task), []).append(w.float().reshape(len(batch.images), -1).cpu())
    model.train(was_training)
    rows = []
    for (level, task), parts in weights.items():
        w = torch.cat(parts)  # (images, N)
        rows += [dict(level=level, task=task, layer=k + 1, weight=float(w[:, k].mean()), std=float(w[:, k].std()))
                 for k in range(w.shape[1])]
    return pd.DataFrame(rows, columns=["level", "task", "layer", "weight", "std"])


def layer_attention_summary(frame: pd.DataFrame) -> dict:
    """The two gaps of a :func:`layer_attention_by_level` frame, in units of the weight (0..1):
    ``level_gap`` (the largest difference between two levels' mean weight for the same task and
    layer), ``task_gap_max`` and ``task_gap_mean`` (the largest and the mean |w_cls - w_reg| over levels
    and layers), and ``task_gap_by_level`` (the mean |w_cls - w_reg| per level). NaN without weights."""
    if frame.empty:
        nan = float("nan")
        return dict(level_gap=nan, task_gap_max=nan, task_gap_mean=nan, task_gap_by_level={})
    by_level = frame.pivot_table(index=["task", "layer"], columns="level", values="weight")
    level_gap = float((by_level.max(axis=1) - by_level.min(axis=1)).max())
    tasks = frame.pivot_table(index=["level", "layer"], columns="task", values="weight")
    gap = (tasks["cls"] - tasks["reg"]).abs()
    return dict(level_gap=level_gap, task_gap_max=float(gap.max()), task_gap_mean=float(gap.mean()),
                task_gap_by_level={level: float(g.mean()) for level, g in gap.groupby(level="level")})


def plot_layer_attention_by_level(frame: pd.DataFrame, models: dict[str, tuple[str, str]]):
    """The trained layer attention per level: one panel per model ({label: (data set, experiment)}),
    w_cls - w_reg for each interactive layer (x) and level (one line each), mean over the model's
    seeds. Lines that lie apart say the levels weight their layers differently; a line away from 0
    says the two tasks do. ``frame``: ``results/layer_attention_cpu.csv``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.8), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, (label, (dataset, experiment)) in zip(axes[0], models.items()):
        rows = frame[(frame["dataset"] == dataset) & (frame["experiment"] == experiment)]
        if rows.empty:
            ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes)
        else:
            tasks = rows.pivot_table(index=["level", "layer", "seed"], columns="task", values="weight")
            gap = (tasks["cls"] - tasks["reg"]).groupby(level=["level", "layer"]).mean()
            for i, (level, g) in enumerate(gap.groupby(level="level")):
                ax.plot(g.index.get_level_values("layer"), g.to_numpy(), "o-", color=f"C{i}", label=level)
            ax.set_title(f"{label} ({dataset}, {rows['seed'].nunique()} seeds)", fontsize=10)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("interactive layer k")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("$w^{cls}_k - w^{reg}_k$ (mean over val images)")
    labelled = [ax for ax in axes[0] if ax.get_legend_handles_labels()[0]]
    if labelled:  # (a panel of a model without finished runs has no lines)
        labelled[-1].legend(title="level", fontsize=8)
    return fig


INIT_STD = 0.001  # both 1x1 convs of the layer attention start at N(0, 0.001²), biases 0 (official init)


@torch.no_grad()
def layer_attention_parameters(model, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Why the trained weights can be the same on every level: the size of the layer attention's two
    1x1 convs against their init, per task.

    w = σ(W2 · relu(W1 · x̄ + b1) + b2) with x̄ the level's pooled features (Eq. 3). A change of x̄ moves
    the logit by at most ‖W2‖·‖W1‖·‖Δx̄‖, so while W1 and W2 stay near their N(0, 0.001²) init the
    weights hardly depend on the level, and what the training changes is the biases: ``bias_only``
    = σ(W2 · relu(b1) + b2) is the attention with x̄ = 0, the same for every image and level.

    ``frame`` (optional, :func:`layer_attention_by_level` of the same model) adds how far the measured
    mean weights lie from ``bias_only``. -> one row per task ("cls", "reg") with ``w1_mean_abs``,
    ``w2_mean_abs``, ``init_mean_abs`` (0.001·√(2/π), the mean |w| of the init), ``w1_growth`` and
    ``w2_growth`` (trained / init mean |w|), ``b2_spread`` (max - min of b2 over the N layers: what
    lets the two tasks differ), ``bias_only`` (list of N weights) and, with ``frame``,
    ``max_gap_to_bias_only``. Empty for a model without layer attention.
    """
    import math

    head = model.head
    init_mean_abs = INIT_STD * math.sqrt(2 / math.pi)
    rows = []
    for task in ("cls", "reg"):
        decomp = getattr(head, f"{task}_decomp", None)
        if decomp is None or decomp.layer_attention is None:
            continue
        conv1, conv2 = decomp.layer_attention[0], decomp.layer_attention[2]
        w1, w2 = conv1.weight.flatten(1).float(), conv2.weight.flatten(1).float()  # (hidden, N·C), (N, hidden)
        bias_only = torch.sigmoid(w2 @ torch.relu(conv1.bias.float()) + conv2.bias.float())  # (N,)
        row = dict(task=task, w1_mean_abs=float(w1.abs().mean()), w2_mean_abs=float(w2.abs().mean()),
                   init_mean_abs=init_mean_abs, w1_growth=float(w1.abs().mean()) / init_mean_abs,
                   w2_growth=float(w2.abs().mean()) / init_mean_abs,
                   b2_spread=float(conv2.bias.max() - conv2.bias.min()), bias_only=[float(v) for v in bias_only])
        if frame is not None and not frame.empty:
            measured = frame[frame["task"] == task]
            row["max_gap_to_bias_only"] = float((measured["weight"] - measured["layer"].map(
                lambda k: float(bias_only[int(k) - 1]))).abs().max())
        rows.append(row)
    return pd.DataFrame(rows)


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
