"""The grid's runs: what a run is, which runs each grid has (with the replacement-seed rule), where
a run's files live, and which runs have finished (their ``result.json``).

A run is one (data set, experiment, seed) of the CPU-scale grid. The grids (``grid_runs``): "core",
the runs of the claims ``claims.py`` declares core (Table 6's 2 x 2 on both data sets with 5 seeds;
Table 2's schemes, TAL vs ATSS+QFL and the T-Head's parts with 3), and "full", which adds every other
declared claim and every row of Tables 1-4. Running them: ``run_one.py`` (one run) and ``run_grid.py``
(the grid); collecting their results: ``collect.py``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tood_lib.ablations.bench import ACTIVE_BENCH
from tood_lib.ablations.grid import CPU_DATASETS, REPO_ROOT, experiments_in_tables

RUNS_ROOT = REPO_ROOT / "runs" / "ablations"


def bench_runs_dir(bench: str | None = None) -> Path:
    """A bench's run folder (default: the active bench's): ``runs/ablations/cpu`` for the first bench
    ("single_level", where its runs always were), ``runs/ablations/cpu_<bench>`` for any other, so
    that no bench ever finds another's finished runs."""
    bench = bench or ACTIVE_BENCH
    return RUNS_ROOT / ("cpu" if bench == "single_level" else f"cpu_{bench}")


RUNS_DIR = bench_runs_dir(ACTIVE_BENCH)
RESULTS_DIR = Path(os.environ.get("TOOD_RESULTS_DIR", REPO_ROOT / "results"))  # committed; the env var is for trying things out
# The first bench's grid (issue 19 moved it here when the grid was rerun on the multi-level bench):
# 128 px, 8-stride anchors, every positive on P3; results/v1_single_level/README.md says what it was.
V1_RESULTS_DIR = REPO_ROOT / "results" / "v1_single_level"
TABLE6 = ("atss_parallel", "atss_t_head", "tal_parallel", "tood")  # analysed, 5 seeds
SEEDS_TABLE6, SEEDS_OTHER = 5, 3


@dataclass(frozen=True)
class Run:
    dataset: str
    experiment: str
    seed: int

    def __str__(self) -> str:
        return f"{self.dataset}/{self.experiment}/seed{self.seed}"


def seeds_of(experiment: str) -> range:
    return range(SEEDS_TABLE6 if experiment in TABLE6 else SEEDS_OTHER)


def grid_runs(grid: str = "core", outcomes: dict[Run, bool] | None = None) -> list[Run]:
    """Every run of a grid, core first, in a stable order. "core": the experiments of the claims
    declared core on each data set (``claims.py``); "full": also every other claim's experiments on
    the data sets it is judged on, and every row of Tables 1-4 on the shapes.

    ``outcomes`` (finished run -> did it settle; :func:`run_outcomes`, :func:`result_outcomes`) adds
    the runs that the replacement-seed rule asks for (:func:`replacement_runs`); the core grid's
    replacements come right after its declared runs, so the core grid stays the full grid's start."""
    from tood_lib.ablations.claims import claim_experiments

    if grid not in ("core", "full"):
        raise ValueError(f"grid: expected 'core' or 'full', got {grid!r}")
    declared = [Run(d, e, s) for d in CPU_DATASETS for e in claim_experiments(d, core=True) for s in seeds_of(e)]
    runs = declared + (replacement_runs(declared, outcomes, "core") if outcomes else [])
    if grid == "full":
        extra = [Run(d, e, s) for d in CPU_DATASETS for e in claim_experiments(d, core=False) for s in seeds_of(e)]
        extra += [Run("shapes", e, s) for e in experiments_in_tables() for s in seeds_of(e)]
        declared += [r for r in dict.fromkeys(extra) if r not in set(declared)]
        runs += [r for r in declared if r not in set(runs)]
        if outcomes:
            runs += [r for r in replacement_runs(declared, outcomes, "full") if r not in set(runs)]
    return runs


# The replacement-seed rule. Declared 2026-12-02, after the core grid had run and two of its 61 runs
# had not settled (shapes/tal_parallel/seed1, shapes/tood_no_prob_map/seed1), and before any
# replacement run; the same for every experiment of either grid, whatever its runs scored:
# - a run that finished without meeting the plateau rule stays out of every table (as before), and
#   its experiment gets the next seed after the highest it has (a Table 6 experiment, seeds 0-4,
#   gets seed 5; another, seeds 0-2, gets seed 3), at most MAX_REPLACEMENT_SEEDS times per
#   experiment and data set;
# - claims are judged on paired seeds, so that seed is also run for every experiment the
#   replaced one is compared with in a claim on that data set (in the core grid, the core claims;
#   a partner that already has the seed keeps its run);
# - a replacement run that does not settle is itself replaced by the same rule.
MAX_REPLACEMENT_SEEDS = 2


def replacement_runs(runs: list[Run], outcomes: dict[Run, bool], grid: str = "full") -> list[Run]:
    """The runs the replacement-seed rule adds to ``runs`` (a grid's declared runs), given the
    ``outcomes`` known so far (finished run -> settled), in a stable order. Applied until nothing
    changes, so replacement runs that finished unsettled are replaced in turn. For the full grid
    the core grid's replacements are made first (with the core claims' partners, exactly as
    ``grid="core"`` makes them), then given the partners of the other claims too."""
    from tood_lib.ablations.claims import CLAIMS, claim_experiments

    seeds: dict[tuple[str, str], set[int]] = {}
    for r in runs:
        seeds.setdefault((r.dataset, r.experiment), set()).add(r.seed)
    own = dict.fromkeys(seeds, 0)  # replacements each experiment has had for unsettled runs of its own
    replaced: list[tuple[str, str, int]] = []  # (data set, experiment, new seed)
    added: list[Run] = []

    def partners(dataset: str, experiment: str, mode: str) -> list[str]:
        names = [experiment]
        for claim in CLAIMS:
            members = (claim.baseline, claim.variant, *claim.others)
            if experiment in members and dataset in (claim.core if mode == "core" else claim.datasets):
                names += [m for m in members if m not in names and (dataset, m) in seeds]
        return names

    def give(dataset: str, names: list[str], seed: int) -> None:
        for name in names:
            if seed not in seeds[(dataset, name)]:
                seeds[(dataset, name)].add(seed)
                added.append(Run(dataset, name, seed))

    for mode in ("core",) if grid == "core" else ("core", "full"):
        core = {(d, e) for d in CPU_DATASETS for e in claim_experiments(d, core=True)}
        eligible = [key for key in seeds if mode == "full" or key in core]
        for dataset, experiment, seed in replaced:  # an earlier pass's replacements get this pass's partners
            give(dataset, partners(dataset, experiment, mode), seed)
        changed = True
        while changed:
            changed = False
            for key in eligible:
                unsettled = sum(outcomes.get(Run(*key, s)) is False for s in seeds[key])
                if unsettled > own[key] and own[key] < MAX_REPLACEMENT_SEEDS:
                    own[key] += 1
                    seed = max(seeds[key]) + 1
                    replaced.append((*key, seed))
                    give(key[0], partners(*key, mode), seed)
                    changed = True
    return added


def read_result(path: str | Path) -> dict:
    """A run's ``result.json``; one that cannot be read is refused by name (deleting it redoes the run)."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not readable JSON ({err}); delete it and rerun the grid to redo that run "
                         "(it resumes from its last.pth)") from None


def run_outcomes(out_root: str | Path = RUNS_DIR) -> dict[Run, bool]:
    """Every finished run under ``out_root`` -> whether it met the plateau rule (from its result.json)."""
    found = {}
    for path in sorted(Path(out_root).glob("*/*/seed*/result.json")):
        r = read_result(path)
        found[Run(r["dataset"], r["experiment"], int(r["seed"]))] = bool(r["plateau"]["ok"])
    return found


def result_outcomes(results_dir: str | Path = RESULTS_DIR) -> dict[Run, bool]:
    """The same from the collected results (committed): settled rows and ``unsettled_runs_cpu.csv``."""
    found = {}
    for name, ok in (("ablation_runs_cpu.csv", True), ("unsettled_runs_cpu.csv", False)):
        path = Path(results_dir) / name
        if path.is_file() and path.stat().st_size > 1:
            frame = pd.read_csv(path)
            found.update({Run(d, e, int(s)): ok for d, e, s in zip(frame["dataset"], frame["experiment"], frame["seed"])}
                         if len(frame) else {})
    return found


def run_dir(run: Run, root: str | Path = RUNS_DIR) -> Path:
    return Path(root) / run.dataset / run.experiment / f"seed{run.seed}"


def feature_dir(dataset: str, root: str | Path = RUNS_DIR) -> Path:
    return Path(root) / dataset / "features"


def data_root(dataset: str, bench: str | None = None) -> Path:
    """A bench's data set of a grid data-set name ("shapes" or "misaligned"; default: the active bench's)."""
    from tood_lib.ablations.bench import bench_data_root

    return bench_data_root(dataset, bench)


def pending_runs(runs: list[Run], out_root=RUNS_DIR) -> list[Run]:
    """The runs of ``runs`` that have not finished: no ``result.json`` in their folder under ``out_root``."""
    return [r for r in runs if not (run_dir(r, out_root) / "result.json").is_file()]


def grid_of(runs: list[Run], outcomes: dict[Run, bool] | None = None) -> str:
    """Which grid a list of runs belongs to: "core" if every run is in the core grid, else "full" if
    every run is in the full grid (its rest included), else "other" (e.g. the fine-tuning check).
    ``outcomes``: as for :func:`grid_runs` (replacement runs belong to their grid)."""
    for name in ("core", "full"):
        if set(runs) <= set(grid_runs(name, outcomes)):
            return name
    return "other"
