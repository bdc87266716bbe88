"""The paper's Tables 1-4 and 6 with our numbers beside theirs.

Each table is the paper's CSV (``paper_data/``) with, per row, the experiment of the grid that
reproduces it and our CPU-scale numbers: the mean over seeds and their spread (standard deviation),
in the paper's units (AP in %). COCO-scale columns say "not run" with the command that would produce
them until a ``results/ablation_runs_coco.csv`` exists. Table 1 also gets the parameter and MAC
counts of the full-size (R-50, 1280x800) models, computed from our networks.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tood_lib.ablations.grid import KEY_COLUMNS, PAPER_ROWS, coco_command, experiment_config
from tood_lib.ablations.runs import RESULTS_DIR
from tood_lib.analysis.paper_tables import paper_table
from tood_lib.engine.atomic import atomic_write_csv

TABLES = (1, 2, 3, 4, 6)
AP_COLUMNS = ("AP", "AP50", "AP75")
TABLE6_COLUMNS = ("PCC", "IoU", "correct", "redundant", "error")


def _key(row, table: int) -> tuple:
    return tuple(row[c] for c in KEY_COLUMNS[table])


def _summary(runs: pd.DataFrame, columns) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds of each experiment: columns ``X`` and ``X_std``."""
    grouped = runs.groupby("experiment")
    out = grouped[list(columns)].mean()
    std = grouped[list(columns)].std(ddof=1).add_suffix("_std")
    return pd.concat([out, std, grouped.size().rename("seeds")], axis=1)


def complexity_table(height: int = 800, width: int = 1280) -> pd.DataFrame:
    """Head and total trainable parameters (M) and MACs (G) of every Table 1 experiment at full size.

    MACs in mmcv's convention (what the paper's "FLOPs" count) and, as ``*_conv_gmacs``, convolutions
    and matrix products only."""
    import torch

    from tood_lib.analysis.complexity import count_macs, count_parameters
    from tood_lib.model.detector import build_model

    rows = []
    for key, name in PAPER_ROWS[1].items():
        torch.manual_seed(0)
        model = build_model(experiment_config(name, "coco"))
        params, macs = count_parameters(model), count_macs(model, height, width, convention="mmcv")
        conv = count_macs(model, height, width)
        rows.append(dict(experiment=name, head_params_m=params["head_trainable"] / 1e6,
                         total_params_m=params["trainable"] / 1e6, head_gmacs=macs["head"] / 1e9,
                         total_gmacs=macs["total"] / 1e9, head_conv_gmacs=conv["head"] / 1e9,
                         total_conv_gmacs=conv["total"] / 1e9))
    return pd.DataFrame(rows)


def comparison_table(table: int, runs: pd.DataFrame, complexity: pd.DataFrame | None = None,
                     coco_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paper table ``table`` with our CPU-scale numbers (``runs``: one row per run, AP as 0-1) beside it."""
    if table not in TABLES:
        raise ValueError(f"the ablation tables are {TABLES}, not {table!r}")
    paper = paper_table(table)
    mapping = PAPER_ROWS[table]
    paper = paper[[_key(r, table) in mapping for _, r in paper.iterrows()]].reset_index(drop=True)
    paper.insert(len(KEY_COLUMNS[table]), "experiment", [mapping[_key(r, table)] for _, r in paper.iterrows()])
    paper = paper.rename(columns={c: f"paper_{c}" for c in paper.columns if c not in KEY_COLUMNS[table] + ("experiment",)})
    ours = runs.copy()
    for c in AP_COLUMNS:
        ours[c] = ours[c] * 100
    columns = list(AP_COLUMNS) + ([c for c in TABLE6_COLUMNS if c in ours] if table == 6 else [])
    summary = _summary(ours, columns).add_prefix("cpu_").rename(columns={"cpu_seeds": "cpu_seeds"})
    out = paper.merge(summary, left_on="experiment", right_index=True, how="left")
    if table == 1 and complexity is not None:
        out = out.merge(complexity.add_prefix("ours_").rename(columns={"ours_experiment": "experiment"}), on="experiment", how="left")
    if coco_runs is not None and len(coco_runs):
        coco = coco_runs.copy()
        for c in AP_COLUMNS:
            coco[c] = coco[c] * 100
        out = out.merge(_summary(coco, AP_COLUMNS).add_prefix("coco_"), left_on="experiment", right_index=True, how="left")
    else:
        out["coco_AP"] = "not run"
    out["coco_command"] = [coco_command(e) for e in out["experiment"]]
    return out


def write_tables(results_dir: str | Path, with_complexity: bool = True) -> dict[int, Path]:
    """Write ``table{N}_cpu.csv`` for N in 1, 2, 3, 4, 6 (a ``dataset`` column: one block of rows per
    built-in data set that ran any of the table's experiments) and ``verdicts_cpu.csv`` (claims.py)
    from the collected runs in ``results_dir``."""
    from tood_lib.ablations.claims import verdict_table

    results_dir = Path(results_dir)
    runs = pd.read_csv(results_dir / "ablation_runs_cpu.csv")
    nms_path = results_dir / "table6_nms_cpu.csv"
    if nms_path.is_file() and nms_path.stat().st_size > 1:
        nms = pd.read_csv(nms_path).rename(columns={"final_PCC": "PCC", "final_IoU": "IoU"})
        runs = runs.merge(nms[["dataset", "experiment", "seed", *TABLE6_COLUMNS]], on=["dataset", "experiment", "seed"],
                          how="left")
    complexity_path = results_dir / "table1_complexity.csv"
    if with_complexity and not complexity_path.is_file():
        atomic_write_csv(complexity_table(), complexity_path, "%.4f")
    complexity = pd.read_csv(complexity_path) if complexity_path.is_file() else None
    coco_path = results_dir / "ablation_runs_coco.csv"
    coco = pd.read_csv(coco_path) if coco_path.is_file() else None
    written = {}
    datasets = list(dict.fromkeys(runs["dataset"]))
    for table in TABLES:
        blocks = []
        for dataset in datasets:
            subset = runs[runs["dataset"] == dataset]
            if not set(subset["experiment"]) & set(PAPER_ROWS[table].values()):
                continue
            block = comparison_table(table, subset, complexity, coco)
            block.insert(0, "dataset", dataset)
            blocks.append(block)
        path = results_dir / f"table{table}_cpu.csv"
        if blocks:
            atomic_write_csv(pd.concat(blocks, ignore_index=True), path, "%.3f")
            written[table] = path
        else:
            path.unlink(missing_ok=True)
    verdicts = pd.concat([verdict_table(runs[runs["dataset"] == d], d) for d in datasets], ignore_index=True)
    atomic_write_csv(verdicts, results_dir / "verdicts_cpu.csv", "%.4f")
    return written


def read_verdicts(results_dir: str | Path | None = None) -> pd.DataFrame:
    """The committed verdict of every declared claim on each data set (for the notebooks)."""
    path = Path(results_dir or RESULTS_DIR) / "verdicts_cpu.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate the ablations with: bash scripts/ablations.sh")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def read_table(table: int, results_dir: str | Path | None = None, dataset: str | None = None) -> pd.DataFrame:
    """A committed comparison table (for the notebooks); ``dataset`` keeps that data set's rows."""
    path = Path(results_dir or RESULTS_DIR) / f"table{table}_cpu.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate the ablations with: bash scripts/ablations.sh")
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return table if dataset is None else table[table["dataset"] == dataset].reset_index(drop=True)
