"""The dense predictions the ablation command keeps (``snapshots_{dataset}_cpu.pt`` in a grid's results
folder: ``results/`` for the active bench, ``results/v1_single_level/`` for the first bench's grid): a few
val images seen by the four Table 6 models after every epoch, enough to redraw Fig. 1 and Fig. 4 and the
assignment time-lapse without the checkpoints (which are not committed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from tood_lib.analysis.alignment import DensePrediction
from tood_lib.model.priors import multilevel_priors, valid_prior_mask

FIG4_ROWS = {"parallel + ATSS": "atss_parallel", "T-Head + ATSS": "atss_t_head",
             "parallel + TAL": "tal_parallel", "T-Head + TAL (TOOD)": "tood"}


def load_snapshots(dataset: str = "shapes", path: str | Path | None = None, bench: str | None = None,
                   results_dir: str | Path | None = None):
    """-> (predictions {experiment: {epoch: [DensePrediction per image]}}, batch of those val images,
    the val data set) of one built-in data set ("shapes" or "misaligned").

    The file is ``path``, else ``snapshots_{dataset}_cpu.pt`` in ``results_dir`` (default
    ``runs.RESULTS_DIR``, the active bench's grid). The file holds only scores and boxes: the images
    are re-read from ``bench``'s val split of the data set, transformed as that bench's TOOD config
    does (``experiment_config("tood", "cpu", dataset, bench)``), and the predictions get that
    config's priors (its canvas and anchor scale). ``bench`` must be the bench the snapshots were
    made on; default: "single_level" when the file lies in ``runs.V1_RESULTS_DIR`` (the first
    bench's grid), else ``bench.ACTIVE_BENCH``."""
    from tood_lib.ablations.bench import ACTIVE_BENCH, bench_data_root
    from tood_lib.ablations.grid import experiment_config
    from tood_lib.ablations.runs import RESULTS_DIR, V1_RESULTS_DIR
    from tood_lib.data.coco import CocoDetection

    path = Path(path or Path(results_dir or RESULTS_DIR) / f"snapshots_{dataset}_cpu.pt")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate it with: bash scripts/ablations.sh")
    if bench is None:
        bench = "single_level" if path.resolve().is_relative_to(V1_RESULTS_DIR.resolve()) else ACTIVE_BENCH
    raw = torch.load(path, weights_only=True)
    cfg = experiment_config("tood", "cpu", dataset, bench)
    dataset = CocoDetection(bench_data_root(dataset, bench), "val", cfg.data, train=False, verbose=False)
    out, batch = {}, None
    for name, snap in raw.items():
        if batch is None:
            batch, _ = dataset.collate([dataset[i] for i in snap["image_indices"]])
            h, w = batch.images.shape[-2:]
            strides = tuple(cfg.model.strides)
            sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in strides]
            priors = torch.cat(multilevel_priors(sizes, strides, anchor_scale=cfg.model.anchor_scale))
            valid = valid_prior_mask(sizes, strides, batch.pad_shapes)
        out[name] = {int(epoch): [DensePrediction(p["scores"].float(), p["boxes"].float(), priors, valid[i], sizes, strides)
                                  for i, p in enumerate(images)] for epoch, images in snap["snapshots"].items()}
        assert all(len(p.scores) == len(priors) for preds in out[name].values() for p in preds)
    return out, batch, dataset


def plot_timelapse(timelapse: pd.DataFrame, names: dict[str, str] | None = None):
    """Four panels against the epoch, one line per model (mean over seeds, band = min..max): the distance
    between the best-classification and best-localisation anchors, PCC, top-10 IoU and AP."""
    names = names or {v: k for k, v in FIG4_ROWS.items()}
    panels = (("best_anchor_gap", "distance between best-cls and best-loc anchors (px)"),
              ("PCC", "PCC of score and IoU ranks (top 50)"), ("IoU", "mean IoU of the top-10 predictions"),
              ("AP", "box AP (val)"))
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    colours = plt.get_cmap("tab10").colors
    for ax, (column, title) in zip(axes.flat, panels):
        for i, (experiment, label) in enumerate(names.items()):
            rows = timelapse[timelapse["experiment"] == experiment]
            if rows.empty:
                continue
            stats = rows.groupby("epoch")[column].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker="o", color=colours[i], label=label)
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colours[i], alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch (0 = untrained)")
        ax.grid(alpha=0.3)
    warmup = timelapse.attrs.get("warmup_epochs")
    if warmup:
        for ax in axes.flat:
            ax.axvspan(0, warmup, color="grey", alpha=0.08)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Assignment over training (shaded: the ATSS warm-up; band: the seeds' range)")
    fig.tight_layout()
    return fig

