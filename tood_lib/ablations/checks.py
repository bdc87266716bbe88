"""The checks of the protocol: do pairs of experiments keep their order under another protocol?

* The fine-tuning check (issue 11): the backbone fine-tuned, as the official recipe does (stage 1
  and BatchNorm frozen, no cache), instead of frozen whole with cached features.
  ``python -m tood_lib ablations finetune-check`` trains :data:`FINETUNE_PAIRS` again that way
  (``run_one.FINETUNE_OVERRIDES``) and :func:`finetune_check` compares the two protocols' orders.
* The schedule check (issue 19): Table 6's 2 x 2 trained for twice the bench's schedule.
  ``python -m tood_lib ablations schedule-check`` trains it (``results/schedule_x2/``) and
  :func:`schedule_check` compares the orders under both schedules.

Both compare with :func:`order_comparison`, the verdicts' own 2-SE rule.
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


def order_comparison(reference: pd.DataFrame, other: pd.DataFrame, pairs, names: tuple[str, str],
                     seeds=None) -> list[dict]:
    """Each (baseline, variant) of ``pairs`` under two protocols (``reference`` and ``other``: per-run
    rows of one data set, columns experiment, seed, AP): the paired Δ AP (points) and its SE under
    each, each protocol's order under the verdicts' 2-SE rule ("variant higher", "baseline higher",
    "not distinguishable"), and ``agreement``: "same", "opposite" (one puts the variant above, the
    other below) or "one not distinguishable"; None for a pair without two paired seeds under both.
    ``same_sign`` compares the signs of the two mean Δs only (a difference within noise has a sign
    too, which is why it is not the criterion). ``seeds``: only these seeds of ``reference``."""
    from tood_lib.ablations.claims import paired

    if seeds is not None:
        reference = reference[reference["seed"].isin(seeds)]
    rows = []
    for baseline, variant in pairs:
        row = dict(baseline=baseline, variant=variant)
        for name, runs in zip(names, (reference, other)):
            d = paired(runs, baseline, variant, "AP") * 100
            row.update({f"{name}_delta": d.mean() if len(d) else float("nan"),
                        f"{name}_se": d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan"),
                        f"{name}_seeds": len(d),
                        f"{name}_baseline_AP": 100 * runs[runs.experiment == baseline]["AP"].mean(),
                        f"{name}_variant_AP": 100 * runs[runs.experiment == variant]["AP"].mean()})
        both = all(row[f"{name}_seeds"] >= 2 for name in names)
        orders = [_order(row[f"{name}_delta"], row[f"{name}_se"], row[f"{name}_seeds"]) for name in names]
        row[f"{names[0]}_order"], row[f"{names[1]}_order"] = orders
        # a pair not run (with two seeds at least) under both protocols is not judged
        row["agreement"] = None if not both else "same" if orders[0] == orders[1] else \
            "one not distinguishable" if "not distinguishable" in orders else "opposite"
        row["same_sign"] = bool(math.copysign(1, row[f"{names[0]}_delta"]) == math.copysign(1, row[f"{names[1]}_delta"])) \
            if both else None
        rows.append(row)
    return rows


def finetune_check_dir(results_dir: str | Path = RESULTS_DIR) -> Path:
    """Where ``ablations finetune-check`` collects its runs (``ablation_runs_cpu.csv``, committed as they finish)."""
    return Path(results_dir) / "finetune"


def finetune_comparison(frozen: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """For each of :data:`FINETUNE_PAIRS` on the shapes: :func:`order_comparison` of the frozen, cached
    backbone (``frozen``, the grid's per-run rows; ``frozen_*`` columns, seeds 0-2) and the fine-tuned one
    (``tuned``; ``finetuned_*``). A pair without two paired seeds under both is not judged (``agreement``
    empty), so the check can be read while it runs."""
    frozen, tuned = frozen[frozen["dataset"] == "shapes"], tuned[tuned["dataset"] == "shapes"]
    return pd.DataFrame(order_comparison(frozen, tuned, FINETUNE_PAIRS, ("frozen", "finetuned"), FINETUNE_SEEDS))


def finetune_check(frozen_dir: str | Path = RESULTS_DIR, finetuned_dir: str | Path | None = None) -> pd.DataFrame:
    """:func:`finetune_comparison` of ``frozen_dir``'s runs and ``finetuned_dir``'s (default
    :func:`finetune_check_dir`), written to ``frozen_dir/finetune_check_cpu.csv``."""
    finetuned_dir = Path(finetuned_dir) if finetuned_dir is not None else finetune_check_dir(frozen_dir)
    out = finetune_comparison(pd.read_csv(Path(frozen_dir) / "ablation_runs_cpu.csv"),
                              pd.read_csv(finetuned_dir / "ablation_runs_cpu.csv"))
    atomic_write_csv(out, Path(frozen_dir) / "finetune_check_cpu.csv", "%.4f")
    return out


# The schedule check (issue 19): Table 6's 2 x 2 trained for twice the bench's schedule, seeds 0-2, on
# both data sets; every pair of the 2 x 2 that a declared claim compares, ordered under each schedule.
SCHEDULE_FACTOR = 2
SCHEDULE_SEEDS = (0, 1, 2)
SCHEDULE_PAIRS = (("atss_parallel", "atss_t_head"), ("atss_parallel", "tal_parallel"), ("tal_parallel", "tood"),
                  ("atss_parallel", "tood"), ("atss_t_head", "tood"))


def schedule_runs_dir() -> Path:
    return RUNS_DIR.parent / f"{RUNS_DIR.name}_x{SCHEDULE_FACTOR}"


def schedule_check_dir(results_dir: str | Path = RESULTS_DIR) -> Path:
    return Path(results_dir) / f"schedule_x{SCHEDULE_FACTOR}"


def schedule_comparison(base: pd.DataFrame, longer: pd.DataFrame) -> pd.DataFrame:
    """For each data set of ``base`` and each of :data:`SCHEDULE_PAIRS`: :func:`order_comparison` of the
    grid's runs (``base``, the per-run rows of ``ablation_runs_cpu.csv``; seeds 0-2) and the same runs
    trained :data:`SCHEDULE_FACTOR` times as long (``longer``): columns ``schedule_1x_*`` and
    ``schedule_2x_*``. A pair with fewer than two paired seeds under either schedule is not judged
    (``agreement`` empty): the check can be read while it runs."""
    names = ("schedule_1x", f"schedule_{SCHEDULE_FACTOR}x")
    rows = []
    for dataset in sorted(set(base["dataset"])):
        for row in order_comparison(base[base.dataset == dataset], longer[longer.dataset == dataset], SCHEDULE_PAIRS,
                                    names, SCHEDULE_SEEDS):
            rows.append(dict(dataset=dataset, **row))
    return pd.DataFrame(rows)


def schedule_plateaus(base: pd.DataFrame, longer: pd.DataFrame) -> pd.DataFrame:
    """The plateau rule of Table 6's runs (seeds 0-2) under both schedules, judged at the end
    (``plateau_ok``) and before the first LR drop (``pre_drop_ok``): one row per schedule and data set,
    with the number of runs finished and how many settled by each."""
    rows = []
    for name, frame in (("1x", base), (f"{SCHEDULE_FACTOR}x", longer)):
        for dataset in sorted(set(base["dataset"])):
            runs = frame[(frame.dataset == dataset) & frame.experiment.isin([e for pair in SCHEDULE_PAIRS for e in pair])
                         & frame.seed.isin(SCHEDULE_SEEDS)]
            rows.append(dict(schedule=name, dataset=dataset, runs=len(runs), settled_at_end=int(runs["plateau_ok"].sum()),
                             settled_before_first_drop=int(runs["pre_drop_ok"].sum())))
    return pd.DataFrame(rows)


def schedule_check(results_dir: str | Path = RESULTS_DIR, longer_dir: str | Path | None = None) -> pd.DataFrame:
    """:func:`schedule_comparison` of ``results_dir``'s runs and ``longer_dir``'s (default
    ``results_dir/schedule_x2``), written to ``results_dir/schedule_check_cpu.csv``; each run's rule
    before the first drop is in the two ``ablation_runs_cpu.csv`` (``pre_drop_ok``, see :func:`schedule_plateaus`)."""
    longer_dir = Path(longer_dir) if longer_dir is not None else schedule_check_dir(results_dir)
    base = pd.read_csv(Path(results_dir) / "ablation_runs_cpu.csv")
    longer = pd.read_csv(longer_dir / "ablation_runs_cpu.csv")
    out = schedule_comparison(base, longer)
    atomic_write_csv(out, Path(results_dir) / "schedule_check_cpu.csv", "%.4f")
    return out
