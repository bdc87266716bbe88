"""The committed CPU-scale grid (results/): every row comes from a settled run of the current
protocol, and the tables and verdicts are what the rows say."""
import json

import pandas as pd
import pytest

from tood_lib.ablations.claims import verdict_table
from tood_lib.ablations.grid import CPU_EPOCHS
from tood_lib.ablations.run_one import PLATEAU_TOLERANCE, plateau
from tood_lib.ablations.runs import RESULTS_DIR, Run, grid_runs, result_outcomes

RUNS = RESULTS_DIR / "ablation_runs_cpu.csv"
pytestmark = pytest.mark.skipif(not RUNS.is_file() or RUNS.stat().st_size < 2,
                                reason="no committed grid yet (bash scripts/ablations.sh)")


def _runs():
    return pd.read_csv(RUNS)


def test_every_committed_row_meets_the_plateau_rule():
    runs, curves = _runs(), pd.read_csv(RESULTS_DIR / "ap_curves_cpu.csv")
    assert len(runs)
    for row in runs.itertuples():
        curve = curves[(curves.dataset == row.dataset) & (curves.experiment == row.experiment) & (curves.seed == row.seed)]
        points = list(zip(curve["epoch"].astype(int), curve["AP"]))
        check = plateau(points, CPU_EPOCHS)  # recomputed from the curve, not read from the row
        assert check["ok"], f"{row.dataset}/{row.experiment}/seed{row.seed} did not settle: {check}"
        assert abs(check["AP_final"] - check["AP_75"]) <= PLATEAU_TOLERANCE + 1e-6
        assert row.epochs == CPU_EPOCHS and points[-1][0] == CPU_EPOCHS
        assert row.AP == pytest.approx(points[-1][1], abs=1e-4)  # the row's AP is the curve's end


def test_committed_rows_belong_to_the_declared_grid():
    declared = set(grid_runs("full", result_outcomes(RESULTS_DIR)))  # replacement runs included
    for row in _runs().itertuples():
        assert Run(row.dataset, row.experiment, int(row.seed)) in declared


def test_verdicts_follow_from_the_rows():
    runs = _runs()
    nms = pd.read_csv(RESULTS_DIR / "table6_nms_cpu.csv").rename(columns={"final_PCC": "PCC", "final_IoU": "IoU"})
    runs = runs.merge(nms[["dataset", "experiment", "seed", "PCC", "IoU", "redundant", "error"]],
                      on=["dataset", "experiment", "seed"], how="left")
    committed = pd.read_csv(RESULTS_DIR / "verdicts_cpu.csv", keep_default_na=False, na_values=[""])
    for dataset in runs["dataset"].unique():
        fresh = verdict_table(runs[runs["dataset"] == dataset], dataset).set_index("claim")
        mine = committed[committed["dataset"] == dataset].set_index("claim")
        assert (fresh["verdict"] == mine.loc[fresh.index, "verdict"]).all()


def test_tood_reaches_the_protocol_floor_on_the_shapes():
    tood = _runs().query("dataset == 'shapes' and experiment == 'tood'")
    if len(tood):
        assert tood["AP"].mean() >= 0.35


def test_timing_is_recorded_without_bf16():
    timing = json.loads((RESULTS_DIR / "ablations_cpu_timing.json").read_text())
    assert timing["invocations"] and all(i["amp"] == "off" for i in timing["invocations"])
    assert timing["total_runs"] >= len(_runs())
