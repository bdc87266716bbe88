"""Reading the ablation tables: paper and ours side by side, trend checks, and plots (notebook 05)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tood_lib.ablations.grid import KEY_COLUMNS

PAPER_COLOUR, OURS_COLOUR = "#4c72b0", "#dd8452"


def row_labels(table: pd.DataFrame, number: int) -> list[str]:
    """One readable label per row from the table's key columns, e.g. 'FoveaBox / T-head'."""
    keys = KEY_COLUMNS[number]
    if number == 4:
        return [f"α={r.alpha:g}, β={r.beta:g}" for r in table.itertuples()]
    return [" / ".join(str(getattr(r, k)) for k in keys) if number != 2 else str(r.scheme) for r in table.itertuples()]


def _pm(mean, std, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "not run"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def side_by_side(table: pd.DataFrame, number: int, columns=("AP", "AP50", "AP75"), digits: int = 1) -> pd.DataFrame:
    """The paper's numbers and ours (CPU scale: mean ± standard deviation over seeds) as display strings."""
    out = pd.DataFrame(index=row_labels(table, number))
    out.index.name = " / ".join(KEY_COLUMNS[number]) if number != 4 else "exponents"
    for c in columns:
        paper = table.get(f"paper_{c}")
        if paper is not None:
            out[f"paper {c}"] = [f"{v:.{digits if c in ('AP', 'AP50', 'AP75') else 3}f}" if isinstance(v, float) else f"{v:,}"
                                 for v in paper]
        out[f"ours {c}"] = [_pm(m, s, digits if c in ("AP", "AP50", "AP75") else 0 if c in ("correct", "redundant", "error") else 3)
                            for m, s in zip(table[f"cpu_{c}"], table.get(f"cpu_{c}_std", [float("nan")] * len(table)))]
    out["seeds"] = table["cpu_seeds"].fillna(0).astype(int).to_numpy()
    return out


def grid_status(results_dir=None) -> pd.DataFrame:
    """How much of each grid is in ``results_dir`` (default ``runs.RESULTS_DIR``, the active bench's grid;
    ``runs.V1_RESULTS_DIR`` for the first bench's): per (grid, data set) runs declared, settled,
    unsettled, missing; with the wall time spent so far."""
    import json
    from pathlib import Path

    from tood_lib.ablations.runs import RESULTS_DIR, grid_runs, result_outcomes

    results_dir = Path(results_dir or RESULTS_DIR)
    def keys(name):
        path = results_dir / name
        if not path.is_file() or path.stat().st_size < 2:
            return set()
        frame = pd.read_csv(path)
        return set(zip(frame["dataset"], frame["experiment"], frame["seed"])) if len(frame) else set()
    settled, unsettled = keys("ablation_runs_cpu.csv"), keys("unsettled_runs_cpu.csv")
    outcomes = result_outcomes(results_dir)  # "declared" includes the replacement runs these ask for
    rows = []
    for grid in ("core", "full"):
        for dataset in ("shapes", "misaligned"):
            declared = {(r.dataset, r.experiment, r.seed) for r in grid_runs(grid, outcomes) if r.dataset == dataset}
            rows.append(dict(grid=grid, dataset=dataset, declared=len(declared), settled=len(declared & settled),
                             unsettled=len(declared & unsettled), missing=len(declared - settled - unsettled)))
    out = pd.DataFrame(rows)
    timing = results_dir / "ablations_cpu_timing.json"
    log = json.loads(timing.read_text()) if timing.is_file() else {}
    out.attrs["wall_minutes"] = log.get("total_wall_seconds", float("nan")) / 60  # every invocation
    out.attrs["core_wall_minutes"] = log.get("core_wall_seconds", float("nan")) / 60  # the core grid's only
    return out


def verdict_display(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdict table for reading: claim, paper Δ, ours Δ ± SE (seeds), verdict; one block per data set."""
    def fmt(row):
        if row["verdict"] == "not run" or pd.isna(row["delta"]):
            return "—"
        digits = 3 if row["metric"] in ("PCC", "IoU") else 0 if row["metric"] in ("redundant", "error") else 2
        se = "" if pd.isna(row["se"]) else f" ± {row['se']:.{digits}f}"
        return f"{row['delta']:+.{digits}f}{se} ({int(row['seeds'])} seeds)"
    def paper(row):
        if pd.isna(row["paper_delta"]):
            return "—"
        digits = 3 if row["metric"] in ("PCC", "IoU") else 0 if row["metric"] in ("redundant", "error") else 1
        return f"{row['paper_delta']:+.{digits}f}"
    out = pd.DataFrame({"data set": verdicts["dataset"], "table": verdicts["table"].map(lambda t: f"T{t}" if t else "—"),
                        "claim": verdicts["statement"], "metric": verdicts["metric"],
                        "paper Δ": verdicts.apply(paper, axis=1), "ours Δ ± SE": verdicts.apply(fmt, axis=1),
                        "verdict": verdicts["verdict"]})
    return out


def plot_ap_curves(curves: pd.DataFrame, experiments: dict[str, str], dataset: str, epochs: int, fraction: float = 0.75,
                   schedule=None):
    """AP against the epoch for each experiment on one data set (mean over seeds, band: the seeds'
    range). With ``schedule`` (``bench.Schedule``) its LR drops (dotted) and the epochs the plateau
    rules judge from (dashed); without it, the 75 % mark of the first bench's rule. The legend sits
    outside the axes, so that it hides no curve's end."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    colours = plt.get_cmap("tab20").colors  # up to 20 experiments without a repeated colour
    data = curves[curves["dataset"] == dataset]
    for i, (experiment, label) in enumerate(experiments.items()):
        rows = data[data["experiment"] == experiment]
        if rows.empty:
            continue
        stats = rows.groupby("epoch")["AP"].agg(["mean", "min", "max", "count"])
        seeds = rows["seed"].nunique()
        ax.plot(stats.index, stats["mean"], marker="o", markersize=3, color=colours[i % 20], label=f"{label} ({seeds} seeds)")
        ax.fill_between(stats.index, stats["min"], stats["max"], color=colours[i % 20], alpha=0.15)
    if schedule is None:
        marks = {math.ceil(fraction * epochs): " 75 % of the schedule"}
    else:
        marks = {schedule.settled_from: " plateau rule from here"}
        if schedule.pre_drop_from is not None:
            marks[schedule.pre_drop_from] = " rule before the LR drop from here"
        for step in schedule.lr_steps:
            ax.axvline(step + 0.5, color="grey", linestyle=":", linewidth=1)
    bottom = ax.get_ylim()[0]
    for epoch, text in marks.items():
        ax.axvline(epoch, color="grey", linestyle="--", linewidth=1)
        ax.text(epoch, bottom, text, color="grey", fontsize=8, va="bottom", rotation=90)
    ax.set_xlabel("epoch" + ("" if schedule is None else " (dotted: the LR divided by 10)"))
    ax.set_ylabel("box AP (val)")
    ax.set_title(f"AP curves on the {dataset} data set (band: the seeds' range)")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, "no run of this data set yet", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    return fig


def placeholder_figure(message: str):
    """A figure that says what is missing (a grid still running has tables without rows)."""
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_paper_vs_ours(table: pd.DataFrame, number: int, column: str = "AP", title: str = "", horizontal: bool = True):
    """Two panels, the paper's ``column`` (COCO) and ours (CPU scale, mean ± std over seeds), both bar
    charts from 0 on one shared axis (AP is a fraction of the same quantity in both; a bar starting
    elsewhere would exaggerate a difference). Each value is written just beyond its bar and error bar."""
    if table.empty or table[f"cpu_{column}"].isna().all():
        return placeholder_figure(f"Table {number}: no run of the grid yet")
    labels = row_labels(table, number)
    y = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(labels) + 1.6), sharey=True, sharex=True)
    paper = table[f"paper_{column}"].astype(float).to_numpy()
    ours = table[f"cpu_{column}"].astype(float).to_numpy()
    err = table.get(f"cpu_{column}_std", pd.Series([0.0] * len(table))).astype(float).fillna(0).to_numpy()
    reach = np.nanmax(np.concatenate([paper, ours + err]))
    for ax, values, colour, name, error in ((axes[0], paper, PAPER_COLOUR, "paper (COCO, R-50)", None),
                                            (axes[1], ours, OURS_COLOUR, "ours (built-in data, CPU scale)", err)):
        ax.barh(y, values, xerr=error, color=colour, alpha=0.85, capsize=3)
        ends = values + (error if error is not None else 0)
        for yi, v, end in zip(y, values, ends):
            if not math.isnan(v):
                ax.text(end + 0.01 * reach, yi, f"{v:.1f}", va="center", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(column)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_xlim(0, reach * 1.15)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    fig.suptitle(title or f"Table {number}: {column}, paper and ours (one axis from 0)")
    fig.tight_layout()
    return fig


def plot_table6(table: pd.DataFrame):
    """Table 6's four columns (PCC, top-10 IoU, redundant and error boxes), paper against ours; every
    bar from 0."""
    if table.empty or "cpu_PCC" not in table or table["cpu_PCC"].isna().all():
        return placeholder_figure("Table 6: no analysed run of the grid yet")
    labels = row_labels(table, 6)
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    x = np.arange(len(labels))
    for j, column in enumerate(("PCC", "IoU", "redundant", "error")):
        for i, (prefix, colour, name) in enumerate((("paper_", PAPER_COLOUR, "paper"), ("cpu_", OURS_COLOUR, "ours"))):
            ax = axes[i, j]
            values = table[f"{prefix}{column}"].astype(float).to_numpy()
            error = table[f"cpu_{column}_std"].astype(float).fillna(0).to_numpy() if prefix == "cpu_" else None
            ax.bar(x, values, yerr=error, color=colour, alpha=0.85, capsize=3)
            hi = np.nanmax(values + (error if error is not None else 0))
            ax.set_ylim(0, hi * 1.12 if hi > 0 else 1)  # bars from 0: a cut axis would exaggerate a difference
            ax.set_xticks(x, [label.replace(" / ", "\n") for label in labels], fontsize=8)
            ax.set_title(f"{name}: {column}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Table 6: alignment without NMS (PCC, top-10 IoU) and boxes after NMS (redundant, error)")
    fig.tight_layout()
    return fig


def plot_exponent_grid(table: pd.DataFrame):
    """Table 4 as two heat maps over (α, β): the paper's AP and ours."""
    alphas, betas = sorted(table["alpha"].unique()), sorted(table["beta"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, column, name in ((axes[0], "paper_AP", "paper AP"), (axes[1], "cpu_AP", "ours AP (mean of seeds)")):
        grid = np.full((len(alphas), len(betas)), np.nan)
        for r in table.itertuples():
            grid[alphas.index(r.alpha), betas.index(r.beta)] = getattr(r, column)
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        for i in range(len(alphas)):
            for j in range(len(betas)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", color="w", fontsize=10)
        ax.set_xticks(range(len(betas)), [f"β={b:g}" for b in betas])
        ax.set_yticks(range(len(alphas)), [f"α={a:g}" for a in alphas])
        ax.set_title(name)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("Table 4: the exponents of t = s^α · u^β (empty cells: not in the paper's table)")
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"reproduced": "#55a868", "reversed": "#c44e52", "not distinguishable": "#8c8c8c"}


SYMLOG_LINEAR = 3.0  # plot_verdicts: the x axis is linear within this many points of 0


def plot_verdicts(verdicts: pd.DataFrame, metric: str = "AP"):
    """Each claim's paired difference (ours, ± 2 SE, coloured by verdict) with the paper's Δ (black
    diamond), one panel per data set; claims of one ``metric`` only, unrun claims left out."""
    rows = verdicts[(verdicts["metric"] == metric) & verdicts["delta"].notna()]
    datasets = list(dict.fromkeys(rows["dataset"]))
    if not datasets:
        return placeholder_figure(f"no {metric} claim has been judged yet")
    claims = list(dict.fromkeys(rows["statement"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 0.42 * len(claims) + 1.8), sharey=True,
                             squeeze=False)
    y = {c: i for i, c in enumerate(claims)}
    for ax, dataset in zip(axes[0], datasets):
        for r in rows[rows["dataset"] == dataset].itertuples():
            colour = VERDICT_COLOURS.get(r.verdict, "#4c72b0")
            err = 2 * r.se if not math.isnan(r.se) else 0
            ax.errorbar(r.delta, y[r.statement], xerr=err, fmt="o", color=colour, capsize=3)
            if not math.isnan(r.paper_delta):
                ax.plot(r.paper_delta, y[r.statement], "D", color="k", markersize=4)
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_title(f"{dataset} data set", fontsize=10)
        ax.set_xlabel(f"Δ {metric} (variant − baseline; linear within ±{SYMLOG_LINEAR:g}, log beyond)")
        # Δs of 1-3 points (most of the paper's) and of 20-50 (some of ours) on one axis: linear near 0,
        # logarithmic beyond, so that neither squeezes the other
        ax.set_xscale("symlog", linthresh=SYMLOG_LINEAR)
        ax.margins(x=0.08)
        low, high = ax.get_xlim()
        ticks = [t for t in (-100, -30, -10, -3, -1, 0, 1, 3, 10, 30, 100) if low <= t <= high]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(claims)), claims, fontsize=8)
    axes[0][0].invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    handles.append(plt.Line2D([], [], marker="D", linestyle="", color="k", label="paper (COCO)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"Declared claims: our paired Δ {metric} ± 2 SE over seeds, against the paper's Δ")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
