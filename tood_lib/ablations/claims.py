"""The paper's claims, declared before the grid runs, and how a claim is judged from seeds.

Each :class:`Claim` is one comparison a table of the paper makes: a baseline experiment, a variant,
a metric, and the direction the paper reports (with its Δ). The grid is run, and only then is each
claim judged, on each data set, from the *paired* per-seed differences (seed s of the variant
against seed s of the baseline: the same data order and the same shared initialisation):

    Δ_s = metric(variant, s) − metric(baseline, s),  mean Δ̄,  SE = sd(Δ_s) / √n.

- **reproduced**: Δ̄ has the paper's sign and |Δ̄| > 2 SE;
- **reversed**: Δ̄ has the opposite sign and |Δ̄| > 2 SE;
- **not distinguishable**: |Δ̄| ≤ 2 SE (the seeds cannot tell the two apart).

A "near the best" claim (Table 4: α = 1, β = 6) compares the declared setting with the best other
setting of its table: reproduced unless some other setting beats it by more than 2 SE.

Nothing here is tuned per variant: every experiment shares one recipe (``grid.CPU_RECIPE``). This
file is the declaration; changing a claim after seeing the results would defeat its purpose, so
its git history is the record of when each was written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Declared 2026-12-02, before any run of the converged grid (issue 11).
DATASETS = ("shapes", "misaligned")


@dataclass(frozen=True)
class Claim:
    name: str
    table: int
    statement: str  # what the paper says, in words
    baseline: str  # experiment names (grid.EXPERIMENTS)
    variant: str
    paper_delta: float  # variant − baseline in the paper (AP in points; PCC/IoU as numbers; boxes as counts)
    metric: str = "AP"  # a column of the per-run results
    kind: str = "greater"  # "greater": the paper's sign of Δ; "near_best": variant within 2 SE of the best of `others`
    others: tuple[str, ...] = ()  # near_best: the other settings of the table
    datasets: tuple[str, ...] = ("shapes",)  # where it is judged (runs: the full grid)
    core: tuple[str, ...] = ()  # where its runs are in the core grid (≤ 150 min on 2 cores)


BOTH = DATASETS
SHAPES = ("shapes",)

CLAIMS: list[Claim] = [
    # Table 1: the T-Head beats the parallel head on every detector, at fewer parameters
    Claim("t_head_atss_af", 1, "T-Head > parallel head (ATSS, anchor-free)", "atss_parallel", "atss_t_head", 1.9,
          datasets=BOTH, core=BOTH),
    Claim("t_head_atss_ab", 1, "T-Head > parallel head (ATSS, anchor-based)", "atss_parallel_anchor_based",
          "atss_t_head_anchor_based", 1.8),
    Claim("t_head_fcos", 1, "T-Head > parallel head (FCOS w/ imprv)", "fcos_parallel", "fcos_t_head", 1.9),
    Claim("t_head_fovea", 1, "T-Head > parallel head (FoveaBox)", "fovea_parallel", "fovea_t_head", 0.7),
    # Table 2: the steps of the assignment ladder on the parallel head
    Claim("center_sampling_vs_iou", 2, "centre sampling > IoU thresholds", "max_iou_parallel", "fcos_parallel", 0.8,
          core=SHAPES),
    Claim("atss_vs_center_sampling", 2, "ATSS > centre sampling", "fcos_parallel", "atss_parallel", 1.9, core=SHAPES),
    Claim("qfl_vs_atss", 2, "ATSS+QFL > ATSS", "atss_parallel", "atss_qfl_parallel", 0.7, core=SHAPES),
    Claim("tal_vs_atss_qfl", 2, "TAL > ATSS+QFL (parallel head)", "atss_qfl_parallel", "tal_parallel", 0.4,
          datasets=BOTH, core=BOTH),
    Claim("tal_vs_atss_parallel", 2, "TAL > ATSS (parallel head)", "atss_parallel", "tal_parallel", 1.1,
          datasets=BOTH, core=BOTH),
    Claim("tap_vs_tal", 2, "TAL+TAP (TOOD) > TAL on the parallel head", "tal_parallel", "tood", 2.2,
          datasets=BOTH, core=BOTH),
    # Table 3: TOOD beats ATSS for both anchor types
    Claim("tood_vs_atss_af", 3, "TOOD > ATSS (anchor-free)", "atss_parallel", "tood", 3.3, datasets=BOTH, core=BOTH),
    Claim("tood_vs_atss_ab", 3, "TOOD > ATSS (anchor-based)", "atss_parallel_anchor_based", "tood_anchor_based", 3.1),
    # Table 4: α = 1, β = 6 is (near) the best exponent pair
    Claim("alpha1_beta6_near_best", 4, "α = 1, β = 6 is near the best of Table 4", "tood", "tood", 0.0,
          kind="near_best", others=("tood_alpha0.5_beta2", "tood_alpha0.5_beta4", "tood_alpha0.5_beta6",
                                    "tood_alpha1_beta8", "tood_alpha1.5_beta8")),
    # the T-Head's parts (the paper's §3.1 design; not a table of its own): each adds AP
    Claim("prob_map_helps", 0, "the probability map M adds AP", "tood_no_prob_map", "tood", float("nan"),
          datasets=BOTH, core=SHAPES),
    Claim("offsets_help", 0, "the offsets O add AP", "tood_no_offsets", "tood", float("nan"), datasets=BOTH, core=SHAPES),
    Claim("layer_attention_helps", 0, "layer attention adds AP", "tood_no_layer_attention", "tood", float("nan"),
          datasets=BOTH, core=SHAPES),
    # diagnostics (ours, not the paper's): why parallel + TAL trails parallel + ATSS here (issue 11)
    Claim("no_centerness_helps_tal_parallel", 0, "diagnostic: parallel + TAL scores higher without the centerness branch",
          "tal_parallel", "tal_parallel_no_centerness", float("nan")),
    Claim("tal_vs_atss_parallel_no_centerness", 0, "diagnostic: TAL > ATSS on the parallel head without centerness "
          "under TAL", "atss_parallel", "tal_parallel_no_centerness", float("nan")),
    # diagnostics declared 2026-12-06, before any run of the multi-level grid (issue 19): is T-Head + ATSS's
    # deficit one of ranking? If so, the parallel head loses AP without the centerness it ranks by, and
    # the T-Head gains AP from targets that carry each box's IoU (QFL) instead of binary ones
    Claim("centerness_helps_atss_parallel", 0, "diagnostic: the centerness branch adds AP to parallel + ATSS",
          "atss_parallel_no_centerness", "atss_parallel", float("nan"), datasets=BOTH),
    Claim("qfl_helps_atss_t_head", 0, "diagnostic: IoU-aware (QFL) targets add AP to T-Head + ATSS",
          "atss_t_head", "atss_qfl_t_head", float("nan"), datasets=BOTH),
    # Table 6: alignment without NMS rises, redundant and error boxes after NMS fall
    Claim("t_head_atss_vs_atss_AP", 6, "T-Head + ATSS > parallel + ATSS (AP)", "atss_parallel", "atss_t_head", 1.9,
          datasets=BOTH, core=BOTH),
    Claim("tal_t_head_vs_atss_t_head_AP", 6, "TOOD > T-Head + ATSS (AP)", "atss_t_head", "tood", 1.4,
          datasets=BOTH, core=BOTH),
]
for _metric, _sign, _paper in (("PCC", 1, (0.408, 0.440, 0.415, 0.452)), ("IoU", 1, (0.637, 0.644, 0.643, 0.661)),
                               ("redundant", -1, (25428, 21838, 15927, 15242)), ("error", -1, (92677, 79189, 72320, 69013))):
    pa, ta, pt, tt = _paper  # parallel+ATSS, T-Head+ATSS, parallel+TAL, T-Head+TAL
    word = "higher" if _sign > 0 else "fewer"
    CLAIMS += [
        Claim(f"t6_{_metric}_t_head_atss", 6, f"{_metric}: T-Head + ATSS {word} than parallel + ATSS",
              "atss_parallel", "atss_t_head", ta - pa, metric=_metric, datasets=BOTH, core=BOTH),
        Claim(f"t6_{_metric}_tal_parallel", 6, f"{_metric}: parallel + TAL {word} than parallel + ATSS",
              "atss_parallel", "tal_parallel", pt - pa, metric=_metric, datasets=BOTH, core=BOTH),
        Claim(f"t6_{_metric}_tood", 6, f"{_metric}: TOOD {word} than parallel + ATSS", "atss_parallel", "tood",
              tt - pa, metric=_metric, datasets=BOTH, core=BOTH),
    ]
CLAIMS_BY_NAME = {c.name: c for c in CLAIMS}


def claim_experiments(dataset: str, core: bool = True) -> list[str]:
    """Every experiment the claims judged on ``dataset`` need (``core``: only those in its core grid),
    in declaration order."""
    names: list[str] = []
    for claim in CLAIMS:
        if dataset in (claim.core if core else claim.datasets):
            for name in (claim.baseline, claim.variant, *claim.others):
                if name not in names:
                    names.append(name)
    return names


def paired(runs: pd.DataFrame, baseline: str, variant: str, metric: str) -> pd.Series:
    """Δ_s = metric(variant, s) − metric(baseline, s) for every seed both have."""
    if metric not in runs or runs.empty:
        return pd.Series(dtype=float)
    table = runs.pivot_table(index="seed", columns="experiment", values=metric)
    if baseline not in table or variant not in table:
        return pd.Series(dtype=float)
    return (table[variant] - table[baseline]).dropna()


def verdict(mean: float, se: float, paper_sign: float, n: int) -> str:
    if n < 2 or math.isnan(mean) or math.isnan(se):
        return "not run" if n == 0 else "one seed: no verdict"
    if abs(mean) <= 2 * se:
        return "not distinguishable"
    return "reproduced" if np.sign(mean) == np.sign(paper_sign) else "reversed"


def judge(claim: Claim, runs: pd.DataFrame) -> dict:
    """One claim against the runs of one data set (one row per (experiment, seed); AP as 0–1)."""
    scale = 100.0 if claim.metric.startswith("AP") else 1.0  # AP in points, like the paper
    if claim.kind == "near_best":
        # Δ = best other − the declared setting; reproduced unless some other setting is better by > 2 SE
        rows = []
        for other in claim.others:
            d = paired(runs, claim.variant, other, claim.metric) * scale
            if len(d) >= 2:
                rows.append((other, d.mean(), d.std(ddof=1) / math.sqrt(len(d)), len(d)))
        if not rows:
            return dict(claim=claim.name, table=claim.table, statement=claim.statement, metric=claim.metric,
                        paper_delta=claim.paper_delta, delta=float("nan"), se=float("nan"), seeds=0,
                        verdict="not run", detail="")
        other, mean, se, n = max(rows, key=lambda r: r[1])
        beaten = mean > 2 * se
        return dict(claim=claim.name, table=claim.table, statement=claim.statement, metric=claim.metric,
                    paper_delta=claim.paper_delta, delta=-mean, se=se, seeds=n,
                    verdict="reversed" if beaten else "reproduced",
                    detail=f"best other setting: {other} ({'+' if mean >= 0 else ''}{mean:.2f} vs α=1, β=6)")
    d = paired(runs, claim.baseline, claim.variant, claim.metric) * scale
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    se = float(d.std(ddof=1) / math.sqrt(n)) if n >= 2 else float("nan")
    sign = claim.paper_delta if not math.isnan(claim.paper_delta) else 1.0  # the parts: "adds AP"
    return dict(claim=claim.name, table=claim.table, statement=claim.statement, metric=claim.metric,
                paper_delta=claim.paper_delta, delta=mean, se=se, seeds=n, verdict=verdict(mean, se, sign, n), detail="")


def verdict_table(runs: pd.DataFrame, dataset: str, claims=None) -> pd.DataFrame:
    """Every claim declared for ``dataset``, judged on its runs."""
    rows = [dict(dataset=dataset, **judge(c, runs)) for c in (claims or CLAIMS) if dataset in c.datasets]
    return pd.DataFrame(rows)
