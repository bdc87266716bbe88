"""Reading the ablation tables: the verdict display, the AP curves, the side-by-side strings and the plots, on hand-made tables."""
import math

import matplotlib
import pandas as pd

from tood_lib.ablations.report import (plot_ap_curves, plot_exponent_grid, plot_paper_vs_ours, plot_table6, side_by_side,
                                      verdict_display)

matplotlib.use("Agg")


def test_verdict_display_and_ap_curves():
    verdicts = pd.DataFrame([
        dict(dataset="shapes", table=1, statement="T-Head > parallel", metric="AP", paper_delta=1.9, delta=2.345,
             se=0.5, seeds=3, verdict="reproduced"),
        dict(dataset="shapes", table=6, statement="PCC up", metric="PCC", paper_delta=0.032, delta=-0.01234, se=0.002,
             seeds=5, verdict="reversed"),
        dict(dataset="misaligned", table=0, statement="M adds AP", metric="AP", paper_delta=math.nan, delta=math.nan,
             se=math.nan, seeds=0, verdict="not run")])
    shown = verdict_display(verdicts)
    assert shown["ours Δ ± SE"].tolist() == ["+2.35 ± 0.50 (3 seeds)", "-0.012 ± 0.002 (5 seeds)", "—"]
    assert shown["paper Δ"].tolist() == ["+1.9", "+0.032", "—"] and shown["table"].tolist() == ["T1", "T6", "—"]
    curves = pd.DataFrame([dict(dataset="shapes", experiment=e, seed=s, epoch=ep, AP=0.1 * ep + 0.01 * s)
                           for e in ("a", "b") for s in range(3) for ep in (3, 6, 9, 12)])
    fig = plot_ap_curves(curves, {"a": "model a", "b": "model b", "c": "absent"}, "shapes", 12)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["model a (3 seeds)", "model b (3 seeds)"]
    # with a bench's schedule: its LR drops dotted, the two rules' epochs dashed and named
    from tood_lib.ablations.bench import bench_schedule

    schedule = bench_schedule("multi_level")
    fig = plot_ap_curves(curves, {"a": "model a"}, "shapes", schedule.epochs, schedule=schedule)
    ax = fig.axes[0]
    dashed = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")
    dotted = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":")
    assert dashed == sorted([schedule.settled_from, schedule.pre_drop_from])
    assert dotted == [step + 0.5 for step in schedule.lr_steps]
    assert {" plateau rule from here", " rule before the LR drop from here"} <= {t.get_text() for t in ax.texts}


def test_side_by_side_strings_and_plots():
    t = pd.DataFrame(dict(alpha=[0.5, 1.0], beta=[2.0, 6.0], experiment=["a", "b"], paper_AP=[42.4, 42.5],
                          cpu_AP=[5.123, math.nan], cpu_AP_std=[0.456, math.nan], cpu_seeds=[2, math.nan]))
    shown = side_by_side(t, 4, columns=("AP",))
    assert list(shown.index) == ["α=0.5, β=2", "α=1, β=6"]
    assert shown["ours AP"].tolist() == ["5.1 ± 0.5", "not run"] and shown["paper AP"].tolist() == ["42.4", "42.5"]
    assert shown["seeds"].tolist() == [2, 0]
    assert plot_paper_vs_ours(t, 4).axes and plot_exponent_grid(t).axes
    t6 = pd.DataFrame(dict(head=["parallel", "T-head"], assignment=["ATSS", "TAL"], experiment=["a", "b"],
                           **{f"{p}{c}": [1.0, 2.0] for p in ("paper_", "cpu_") for c in ("PCC", "IoU", "redundant", "error")},
                           **{f"cpu_{c}_std": [0.1, 0.1] for c in ("PCC", "IoU", "redundant", "error")}))
    assert len(plot_table6(t6).axes) == 8
