"""Collect the finished runs of the grid into ``results/`` (committed): one row per settled run, the
AP curves, Table 6's numbers, the time-lapse, and the tables and verdicts built from them
(``tables.py``, ``claims.py``). Everything is recomputed from the runs' ``result.json`` files, so
collecting again gives the same files. Each file is written atomically (``engine/atomic.py``): a
collection killed half-way leaves every file either as it was or complete, and the next one
rewrites them all.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from tood_lib.ablations.runs import RESULTS_DIR, RUNS_DIR, Run, grid_runs, read_result, run_dir, run_outcomes
from tood_lib.engine.atomic import atomic_torch_save, atomic_write_csv, remove_stale_temps


def collect_results(runs: list[Run] | None = None, out_root: str | Path = RUNS_DIR,
                    results_dir: str | Path = RESULTS_DIR, with_complexity: bool = True) -> pd.DataFrame:
    """Gather the finished runs (``runs``; default: every run of the full grid, replacement runs
    included, found under ``out_root``)
    into ``results_dir``: ``ablation_runs_cpu.csv`` (one row per settled run),
    ``ap_curves_cpu.csv``, ``unsettled_runs_cpu.csv``, ``timelapse_cpu.csv``, ``table6_nms_cpu.csv``,
    ``snapshots_cpu.pt``, ``levels_runs_cpu.csv`` (each run's level audit: ATSS on the ground truth,
    TAL on its predictions, its detections; one row per run and kind), the paper-format tables and ``verdicts_cpu.csv``."""
    from tood_lib.ablations.tables import write_tables

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(results_dir)  # what a killed collection left, before a commit could pick it up
    rows, unsettled, curves, timelapse, nms, levels, snapshots = [], [], [], [], [], [], {}
    for run in runs if runs is not None else grid_runs("full", run_outcomes(out_root)):
        path = run_dir(run, out_root) / "result.json"
        if not path.is_file():
            continue
        r = read_result(path)
        curves += [dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, epoch=e, AP=ap) for e, ap in r["ap_curve"]]
        row = {k: v for k, v in r.items()
               if k not in ("timelapse", "nms", "alignment", "ap_curve", "plateau", "plateau_before_drop", "levels")}
        row.update({f"plateau_{k}": v for k, v in r["plateau"].items()})
        row.update({f"pre_drop_{k}": v for k, v in r.get("plateau_before_drop", {}).items()})
        for kind, summary in r.get("levels", {}).items():  # every finished run, settled or not
            levels.append(dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, kind=kind, **summary))
        if not r["plateau"]["ok"]:  # never in a table: its AP measures where training stopped, not where it settled
            unsettled.append(row)
            continue
        rows.append(row)
        if "nms" in r:
            nms.append(dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, **r["nms"],
                            **{f"final_{k}": v for k, v in r["alignment"].items()}))
        if "timelapse" in r:
            timelapse += [dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, **p) for p in r["timelapse"]]
            snap = path.parent / "snapshots.pt"
            if snap.is_file():
                snapshots.setdefault(run.dataset, {})[run.experiment] = torch.load(snap, weights_only=True)
    atomic_write_csv(pd.DataFrame(rows), results_dir / "ablation_runs_cpu.csv", "%.4f")
    atomic_write_csv(pd.DataFrame(unsettled), results_dir / "unsettled_runs_cpu.csv", "%.4f")
    atomic_write_csv(pd.DataFrame(curves), results_dir / "ap_curves_cpu.csv", "%.4f")
    atomic_write_csv(pd.DataFrame(timelapse), results_dir / "timelapse_cpu.csv", "%.4f")
    if levels:  # (the first bench's runs did not record it)
        atomic_write_csv(pd.DataFrame(levels), results_dir / "levels_runs_cpu.csv", "%.4f")
    atomic_write_csv(pd.DataFrame(nms), results_dir / "table6_nms_cpu.csv", "%.4f")
    for dataset, snaps in snapshots.items():
        atomic_torch_save(snaps, results_dir / f"snapshots_{dataset}_cpu.pt")
    if rows:
        write_tables(results_dir, with_complexity)
    return pd.DataFrame(rows)
