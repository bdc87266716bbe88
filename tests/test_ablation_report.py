"""Reading the ablation tables: the trend verdicts, the side-by-side strings and the plots, on hand-made tables."""
import math

import matplotlib
import pandas as pd
import pytest

from tood_lib.ablations.report import plot_exponent_grid, plot_paper_vs_ours, plot_table6, side_by_side, trend_check

matplotlib.use("Agg")


def table(rows):
    return pd.DataFrame(rows, columns=["experiment", "paper_AP", "cpu_AP", "cpu_AP_std", "cpu_seeds"])


@pytest.mark.parametrize("ours, stds, verdict", [
    ((5.0, 7.0), (0.5, 0.5), "reproduced"),                        # +2 against the paper's +1, spread 0.5
    ((5.0, 5.3), (0.5, 0.4), "same sign, within seed noise"),
    ((5.0, 4.8), (0.5, 0.1), "opposite sign, within seed noise"),
    ((5.0, 3.0), (0.5, 0.5), "not reproduced"),
    ((5.0, 7.0), (math.nan, math.nan), "reproduced (one seed: no spread)"),
    ((5.0, math.nan), (0.5, math.nan), "not run"),
])
def test_trend_verdicts(ours, stds, verdict):
    t = table([("base", 40.0, ours[0], stds[0], 2), ("variant", 41.0, ours[1], stds[1], 2)])
    row = trend_check(t, 1, [("base", "variant")]).iloc[0]
    assert row["verdict"] == verdict and row["paper Δ"] == 1.0
    if not math.isnan(ours[1]):
        assert row["ours Δ"] == pytest.approx(ours[1] - ours[0])


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
