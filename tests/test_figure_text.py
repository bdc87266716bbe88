"""No text drawn over other text: each figure function, rendered on the committed results or on small
synthetic data, is checked with matplotlib's own text extents (issue 20). A title over a tick label, two
bar labels on one spot, a legend over an axis label: each fails here, naming the two texts."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tood_lib.ablations.bench import bench_schedule  # noqa: E402
from tood_lib.ablations.report import plot_ap_curves, plot_paper_vs_ours, plot_table6, plot_verdicts  # noqa: E402
from tood_lib.ablations.runs import RESULTS_DIR  # noqa: E402
from tood_lib.ablations.tables import read_table, read_verdicts  # noqa: E402

NAMES = {"atss_parallel": "parallel + ATSS", "atss_t_head": "T-Head + ATSS", "tal_parallel": "parallel + TAL",
         "tood": "T-Head + TAL (TOOD)"}


def drawn_texts(fig) -> list:
    """The texts ``fig`` draws: figure texts and titles, and per axes its titles, axis labels, the tick
    labels of the ticks in view (``Axis._update_ticks``: the tick pool also holds stale ticks outside
    it), its texts and its legend's; and the figure's legends."""
    texts = list(fig.texts) + [t for t in (getattr(fig, "_suptitle", None), getattr(fig, "_supxlabel", None),
                                           getattr(fig, "_supylabel", None)) if t is not None]
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():  # e.g. the hidden x axis of a twinx
                continue
            texts += [axis.label, axis.offsetText]
            for tick in axis._update_ticks():
                texts += [label for label in (tick.label1, tick.label2) if label.get_visible()]
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    for legend in legends:
        texts += [*legend.get_texts(), legend.get_title()]
    unique = {id(t): t for t in texts}  # the suptitle is also among fig.texts
    return [t for t in unique.values() if t.get_visible() and t.get_text().strip()]


def overlapping_texts(fig, tolerance: float = 1.0) -> list[str]:
    """Pairs of drawn, non-empty texts of ``fig`` whose extents overlap by more than ``tolerance`` pixels
    each way (a shared edge is not an overlap)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for text in drawn_texts(fig):
        box = text.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            boxes.append((text.get_text().strip()[:40], box))
    found = []
    for (a, p), (b, q) in itertools.combinations(boxes, 2):
        dx = min(p.x1, q.x1) - max(p.x0, q.x0)
        dy = min(p.y1, q.y1) - max(p.y0, q.y0)
        if dx > tolerance and dy > tolerance:
            found.append(f"{a!r} over {b!r}")
    return found


def test_the_check_sees_two_texts_on_one_spot():
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "first label")
    ax.text(0.5, 0.5, "second label")
    assert overlapping_texts(fig)
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.text(0.1, 0.1, "apart")
    ax.text(0.7, 0.8, "far apart")
    assert not overlapping_texts(fig)
    plt.close(fig)


def _records(steps=60):
    rng = np.random.default_rng(0)
    out = [dict(kind="step", step=s, epoch=1 + s // 20, lr=0.01, loss=1.5 - s / 80 + rng.normal(0, 0.02),
                loss_cls=0.6 - s / 200, loss_bbox=0.9 - s / 120, phase="atss-warmup" if s < 20 else "tal",
                images_per_s=10.0, memory_mb=900.0) for s in range(steps)]
    return out + [dict(kind="eval", epoch=e, step=20 * e, AP=0.1 * e, AP50=0.2 * e) for e in (1, 2, 3)]


def _figures():
    """(name, function drawing a figure) for every figure function checked."""
    from tood_lib.analysis.alignment import plot_alignment_statistics
    from tood_lib.analysis.assignment_explorer import plot_exponent_sweep
    from tood_lib.analysis.layer_attention import plot_layer_attention_by_level
    from tood_lib.analysis.levels import plot_level_shares
    from tood_lib.analysis.plots import plot_loss_curves, plot_run_overview
    from tood_lib.analysis.ranking import plot_reliability
    from tood_lib.analysis.snapshots import plot_timelapse

    schedule = bench_schedule()
    levels = pd.read_csv(RESULTS_DIR / "levels_bench.csv")
    sweep = pd.DataFrame([dict(alpha=a, beta=b, mean_iou=0.7 + 0.01 * b, mean_score=0.3 - 0.02 * a)
                          for a in (0.0, 0.5, 1.0, 2.0) for b in (0.0, 1.0, 6.0)])
    per_object = {f"epoch {e}": pd.DataFrame({"pcc": np.linspace(-0.5, 0.9, 50) * e / 3,
                                              "iou_top": np.linspace(0.1, 0.9, 50)}) for e in (1, 3)}
    return [
        ("verdicts", lambda: plot_verdicts(read_verdicts(RESULTS_DIR))),
        ("table 2", lambda: plot_paper_vs_ours(read_table(2, RESULTS_DIR, dataset="shapes").dropna(subset=["cpu_AP"]), 2)),
        ("table 6", lambda: plot_table6(read_table(6, RESULTS_DIR, dataset="shapes"))),
        ("AP curves", lambda: plot_ap_curves(pd.read_csv(RESULTS_DIR / "ap_curves_cpu.csv"), NAMES, "shapes",
                                             schedule.epochs, schedule=schedule)),
        ("level shares", lambda: plot_level_shares(levels[levels["split"] == "val"].head(6))),
        ("reliability", lambda: plot_reliability(pd.read_csv(RESULTS_DIR / "reliability_cpu.csv"),
                                                 {v: k for k, v in NAMES.items()}, "shapes")),
        ("time-lapse", lambda: plot_timelapse(pd.read_csv(RESULTS_DIR / "timelapse_cpu.csv").query("dataset == 'shapes'"))),
        ("layer attention per level", lambda: plot_layer_attention_by_level(
            pd.read_csv(RESULTS_DIR / "layer_attention_cpu.csv"), {"TOOD": ("shapes", "tood")})),
        ("exponent sweep", lambda: plot_exponent_sweep(sweep)),
        ("loss curves", lambda: plot_loss_curves(_records())),
        ("run overview", lambda: plot_run_overview(_records())),
        ("alignment statistics", lambda: plot_alignment_statistics(per_object)),
    ]


def _layer_attention():
    from tood_lib.analysis.head_internals import head_internals
    from tood_lib.analysis.layer_attention import plot_layer_attention
    from tood_lib.config import get_preset
    from tood_lib.model.detector import build_model

    torch.manual_seed(0)
    internals = head_internals(build_model(get_preset("tood_small")), torch.randn(2, 3, 64, 64)).internals
    return plot_layer_attention({"untrained": internals})


@pytest.mark.parametrize("name, draw", _figures() + [("layer attention", _layer_attention)], ids=lambda x: x if isinstance(x, str) else "")
def test_figure_has_no_overlapping_text(name, draw):
    fig = draw()
    overlaps = overlapping_texts(fig)
    plt.close(fig)
    assert not overlaps, f"{name}: " + "; ".join(overlaps[:8])
