"""The check of the frozen protocol (issue 11): do pairs of experiments keep their order when the
backbone is fine-tuned, as the official recipe does (stage 1 and BatchNorm frozen, no cache), instead
of frozen whole with cached features? ``python -m tood_lib ablations finetune-check`` trains
:data:`FINETUNE_PAIRS` again that way (``run_one.FINETUNE_OVERRIDES``) and :func:`finetune_check`
compares the two protocols' orders.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tood_lib.ablations.runs import RESULTS_DIR, RUNS_DIR
from tood_lib.engine.atomic import atomic_write_csv

# The pairs: the head (T-Head vs parallel), the assignment on the parallel head (TAL vs ATSS), and TOOD
# vs ATSS; same recipe otherwise.
FINETUNE_PAIRS = (("atss_parallel", "atss_t_head"), ("atss_parallel", "tal_parallel"), ("atss_parallel", "tood"))
FINETUNE_SEEDS = (0, 1, 2)
FINETUNE_RUNS_DIR = RUNS_DIR.parent / f"{RUNS_DIR.name}_finetune"  # cpu_finetune for the first bench


def _order(delta: float, se: float, seeds: int) -> str | None:
    """A pair's order under the verdicts' own rule (claims.verdict, with "variant higher" as the claim):
    beyond 2 SE one way or the other, else a tie; None with fewer than two seeds."""
    from tood_lib.ablations.claims import verdict

    return {"reproduced": "variant higher", "reversed": "baseline higher",
            "not distinguishable": "not distinguishable"}.get(verdict(delta, se, 1.0, seeds))


def finetune_check(frozen_dir: str | Path = RESULTS_DIR, finetuned_dir: str | Path = RESULTS_DIR / "finetune") -> pd.DataFrame:
    """For each of :data:`FINETUNE_PAIRS` on the shapes: the paired Δ AP (± SE) with the frozen, cached
    backbone and with the fine-tuned one, each protocol's order of the pair under the verdicts' 2-SE rule
    ("variant higher", "baseline higher" or "not distinguishable"), and ``agreement``: "same" (the same
    order), "opposite" (one protocol puts the variant above, the other below) or "one not distinguishable";
    empty for a pair not run under both. ``same_sign`` compares the signs of the two mean Δs only (a
    difference within noise has a sign too, which is why it is not the criterion).
    Written to ``frozen_dir/finetune_check_cpu.csv``."""
    from tood_lib.ablations.claims import paired

    frozen = pd.read_csv(Path(frozen_dir) / "ablation_runs_cpu.csv").query("dataset == 'shapes'")
    tuned = pd.read_csv(Path(finetuned_dir) / "ablation_runs_cpu.csv").query("dataset == 'shapes'")
    rows = []
    for baseline, variant in FINETUNE_PAIRS:
        row = dict(baseline=baseline, variant=variant)
        for name, runs in (("frozen", frozen[frozen["seed"].isin(FINETUNE_SEEDS)]), ("finetuned", tuned)):
            d = paired(runs, baseline, variant, "AP") * 100
            row.update({f"{name}_delta": d.mean() if len(d) else float("nan"),
                        f"{name}_se": d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan"),
                        f"{name}_seeds": len(d),
                        f"{name}_baseline_AP": 100 * runs[runs.experiment == baseline]["AP"].mean(),
                        f"{name}_variant_AP": 100 * runs[runs.experiment == variant]["AP"].mean()})
        both = all(row[f"{name}_seeds"] >= 2 for name in ("frozen", "finetuned"))
        orders = [_order(row[f"{name}_delta"], row[f"{name}_se"], row[f"{name}_seeds"]) for name in ("frozen", "finetuned")]
        row["frozen_order"], row["finetuned_order"] = orders
        # a pair not run (with two seeds at least) under both protocols is not judged
        row["agreement"] = None if not both else "same" if orders[0] == orders[1] else \
            "one not distinguishable" if "not distinguishable" in orders else "opposite"
        row["same_sign"] = bool(math.copysign(1, row["frozen_delta"]) == math.copysign(1, row["finetuned_delta"])) \
            if both else None
        rows.append(row)
    out = pd.DataFrame(rows)
    atomic_write_csv(out, Path(frozen_dir) / "finetune_check_cpu.csv", "%.4f")
    return out
