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


def trend_check(table: pd.DataFrame, number: int, pairs: list[tuple[str, str]], column: str = "AP") -> pd.DataFrame:
    """For each (baseline, variant) pair of experiments: the paper's change of ``column``, ours, and
    whether ours goes the same way by more than the seed noise (the larger of the two seeds' spreads)."""
    t = table.set_index("experiment")
    rows = []
    for base, variant in pairs:
        paper = float(t.at[variant, f"paper_{column}"]) - float(t.at[base, f"paper_{column}"])
        ours = float(t.at[variant, f"cpu_{column}"]) - float(t.at[base, f"cpu_{column}"])
        noise = max(float(t.at[variant, f"cpu_{column}_std"]), float(t.at[base, f"cpu_{column}_std"]))
        one_seed = math.isnan(noise)
        noise = 0.0 if one_seed else noise
        if math.isnan(ours):
            verdict = "not run"
        elif np.sign(ours) == np.sign(paper) and abs(ours) > noise:
            verdict = "reproduced"
        elif np.sign(ours) == np.sign(paper):
            verdict = "same sign, within seed noise"
        elif abs(ours) <= noise:
            verdict = "opposite sign, within seed noise"
        else:
            verdict = "not reproduced"
        if one_seed and not math.isnan(ours):
            verdict += " (one seed: no spread)"
        digits = 3 if column in ("PCC", "IoU") else 2
        rows.append({"baseline": base, "variant": variant, "metric": column, "paper Δ": round(paper, digits),
                     "ours Δ": round(ours, digits), "seed noise (std)": round(noise, digits), "verdict": verdict})
    return pd.DataFrame(rows)


def plot_paper_vs_ours(table: pd.DataFrame, number: int, column: str = "AP", title: str = "", horizontal: bool = True):
    """Two panels on their own scales: the paper's ``column`` (COCO) and ours (CPU scale, mean ± std)."""
    labels = row_labels(table, number)
    y = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(labels) + 1.6), sharey=True)
    paper = table[f"paper_{column}"].astype(float).to_numpy()
    ours = table[f"cpu_{column}"].astype(float).to_numpy()
    err = table.get(f"cpu_{column}_std", pd.Series([0.0] * len(table))).astype(float).fillna(0).to_numpy()
    for ax, values, colour, name, error in ((axes[0], paper, PAPER_COLOUR, "paper (COCO, R-50)", None),
                                            (axes[1], ours, OURS_COLOUR, "ours (built-in data, CPU scale)", err)):
        ax.barh(y, values, xerr=error, color=colour, alpha=0.85, capsize=3)
        lo = np.nanmin(values - (error if error is not None else 0))
        hi = np.nanmax(values + (error if error is not None else 0))
        pad = max((hi - lo) * 0.35, 0.5)
        ax.set_xlim(max(0.0, lo - pad), hi + pad * 0.6)
        for yi, v in zip(y, values):
            if not math.isnan(v):
                ax.text(v, yi, f" {v:.1f}", va="center", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(column)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    fig.suptitle(title or f"Table {number}: {column}, paper and ours (note the separate scales)")
    fig.tight_layout()
    return fig


def plot_table6(table: pd.DataFrame):
    """Table 6's four columns (PCC, top-10 IoU, redundant and error boxes), paper against ours."""
    labels = row_labels(table, 6)
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    x = np.arange(len(labels))
    for j, column in enumerate(("PCC", "IoU", "redundant", "error")):
        for i, (prefix, colour, name) in enumerate((("paper_", PAPER_COLOUR, "paper"), ("cpu_", OURS_COLOUR, "ours"))):
            ax = axes[i, j]
            values = table[f"{prefix}{column}"].astype(float).to_numpy()
            error = table[f"cpu_{column}_std"].astype(float).fillna(0).to_numpy() if prefix == "cpu_" else None
            ax.bar(x, values, yerr=error, color=colour, alpha=0.85, capsize=3)
            lo, hi = np.nanmin(values), np.nanmax(values)
            pad = max((hi - lo) * 0.6, 1e-3 if column in ("PCC", "IoU") else 1)
            ax.set_ylim(max(0, lo - pad), hi + pad)
            ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
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
