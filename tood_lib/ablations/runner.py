"""Run the ablation grid at CPU scale: resumable, two runs at a time, with a progress display.

``python -m tood_lib ablations run`` (``scripts/ablations.sh``) does, in order:

1. build the two built-in data sets (shapes, misaligned) and, per data set, cache the frozen
   backbone's outputs for every train and val image (``engine/feature_cache.py``);
2. train every (data set, experiment, seed) of the grid whose ``result.json`` is missing, each in
   its own process (``python -m tood_lib ablations run-one``) with one thread, two processes at
   once on two cores (the small convolutions here use one core badly, so two one-thread runs
   finish sooner than one two-thread run after another). An interrupted run continues from its
   ``last.pth``. Every run is evaluated after every epoch: its AP curve, and the plateau rule
   (final AP within :data:`PLATEAU_TOLERANCE` of the AP at 75 % of the schedule);
3. for the four Table 6 experiments, measure the alignment statistics and count the post-NMS boxes
   on the whole val split (every seed), and for seed 0 the time-lapse (the same statistics after
   every epoch) and the dense predictions of a few val images;
4. collect everything into ``results/`` (committed; with ``--commit``, one git commit per finished
   run) and build the tables and the verdicts (``tables.py``, ``claims.py``).

The grids (``grid_runs``): "core", the runs of the claims ``claims.py`` declares core (Table 6's
2 x 2 on both data sets with 5 seeds; Table 2's schemes, TAL vs ATSS+QFL and the T-Head's parts
with 3), and "full", which adds every other declared claim and every row of Tables 1-4. Finished runs are never redone; delete a run's folder to redo it.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tood_lib.ablations.grid import CPU_DATASETS, CPU_EVAL_EPOCHS, EXPERIMENTS, REPO_ROOT, experiment_config, experiments_in_tables

RUNS_DIR = REPO_ROOT / "runs" / "ablations" / "cpu"
RESULTS_DIR = Path(os.environ.get("TOOD_RESULTS_DIR", REPO_ROOT / "results"))  # committed; the env var is for trying things out
TABLE6 = ("atss_parallel", "atss_t_head", "tal_parallel", "tood")  # analysed, 5 seeds
SEEDS_TABLE6, SEEDS_OTHER = 5, 3
PLATEAU_TOLERANCE = 0.01  # AP (0-1): one AP point
PLATEAU_FRACTION = 0.75
SNAPSHOT_IMAGES = 6  # val images whose dense predictions are kept for the figures
TIMELAPSE_IMAGES = 100  # val images behind each time-lapse point
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The check of the frozen protocol (issue 11): pairs of experiments trained again with the backbone
# fine-tuned as the official recipe does (stage 1 and BatchNorm frozen, no cache), same recipe otherwise:
# the head (T-Head vs parallel), the assignment on the parallel head (TAL vs ATSS), and TOOD vs ATSS.
FINETUNE_OVERRIDES = ["model.frozen_stages=1"]
FINETUNE_PAIRS = (("atss_parallel", "atss_t_head"), ("atss_parallel", "tal_parallel"), ("atss_parallel", "tood"))
FINETUNE_SEEDS = (0, 1, 2)
FINETUNE_RUNS_DIR = REPO_ROOT / "runs" / "ablations" / "cpu_finetune"


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


def run_outcomes(out_root: str | Path = RUNS_DIR) -> dict[Run, bool]:
    """Every finished run under ``out_root`` -> whether it met the plateau rule (from its result.json)."""
    found = {}
    for path in sorted(Path(out_root).glob("*/*/seed*/result.json")):
        r = json.loads(path.read_text())
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


def bench_runs_dir(bench: str | None) -> Path:
    """The default run folder of a bench: RUNS_DIR for the active one, ``runs/ablations/cpu_<bench>`` otherwise."""
    from tood_lib.ablations.bench import ACTIVE_BENCH

    return RUNS_DIR if bench in (None, ACTIVE_BENCH) else RUNS_DIR.parent / f"cpu_{bench}"


# ------------------------------------------------------------------------------------ one run
def plateau(curve: list[tuple[int, float]], epochs: int) -> dict:
    """The plateau rule on an AP curve [(epoch, AP)]: the AP at 75 % of the schedule (the first
    evaluated epoch at or after it) against the final AP."""
    aps = dict(curve)
    target = math.ceil(PLATEAU_FRACTION * epochs)
    epoch_75 = min((e for e in aps if e >= target), default=None)
    if epoch_75 is None or epochs not in aps:
        return dict(epoch_75=epoch_75, AP_75=float("nan"), AP_final=aps.get(epochs, float("nan")), ok=False)
    return dict(epoch_75=epoch_75, AP_75=aps[epoch_75], AP_final=aps[epochs],
                ok=bool(abs(aps[epochs] - aps[epoch_75]) <= PLATEAU_TOLERANCE + 1e-9))


def timelapse_point(model, dataset, images: int) -> dict:
    """Alignment of a model on the first ``images`` val images: mean PCC and top-10 IoU (Table 6),
    and how far apart its best classification and best localisation anchors are."""
    from tood_lib.analysis.alignment import best_anchors, dense_predictions, instance_alignment

    pcc, iou, gap, same, cls_dist, loc_dist = [], [], [], [], [], []
    for start in range(0, min(images, len(dataset)), 8):
        batch, _ = dataset.collate([dataset[i] for i in range(start, min(images, start + 8))])
        for i, pred in enumerate(dense_predictions(model, batch)):
            boxes, labels = batch.gt_boxes[i][batch.gt_mask[i]], batch.gt_labels[i][batch.gt_mask[i]]
            for row in instance_alignment(pred, boxes, labels):
                pcc.append(row["pcc"])
                iou.append(row["iou_top"])
            points = pred.points
            for box, label in zip(boxes, labels):
                best = best_anchors(pred, box, int(label))
                gap.append(float((points[best["cls_index"]] - points[best["loc_index"]]).norm()))
                same.append(float(best["same"]))
                cls_dist.append(best["cls_distance"])
                loc_dist.append(best["loc_distance"])
    mean = lambda xs: float(pd.Series(xs, dtype=float).mean(skipna=True))  # noqa: E731
    return dict(PCC=mean(pcc), IoU=mean(iou), best_anchor_gap=mean(gap), same_anchor=mean(same),
                cls_centre_distance=mean(cls_dist), loc_centre_distance=mean(loc_dist), objects=len(gap))


def _snapshot(model, dataset, images: int) -> list[dict]:
    from tood_lib.analysis.alignment import dense_predictions

    batch, _ = dataset.collate([dataset[i] for i in range(images)])
    return [dict(scores=p.scores.half(), boxes=p.boxes.half()) for p in dense_predictions(model, batch)]


def analyse_run(out_dir: Path, cfg, val_set, timelapse: bool, progress: bool = True,
                images: int = TIMELAPSE_IMAGES) -> dict:
    """Table 6 for a finished run: {"nms": {...}, "alignment": {...}} on the whole val split; with
    ``timelapse`` also {"timelapse": [...]} over the epochs and ``snapshots.pt`` (dense predictions of
    the first val images after every epoch)."""
    from tood_lib.analysis.errors import nms_box_counts
    from tood_lib.engine.inference import predict_dataset
    from tood_lib.workbook import load_run_model, run_checkpoints

    out = {}
    if timelapse:
        evals = {r["epoch"]: r for r in _records(out_dir) if r.get("kind") == "eval"}
        points, snapshots = [], {}
        for epoch in tqdm([0] + list(run_checkpoints(out_dir)), desc="time-lapse", disable=not progress, leave=False):
            model, _ = load_run_model(out_dir, epoch)
            point = timelapse_point(model, val_set, images)
            point["epoch"] = epoch
            point["AP"] = evals[epoch]["AP"] if epoch in evals else float("nan")
            points.append(point)
            snapshots[epoch] = _snapshot(model, val_set, SNAPSHOT_IMAGES)
        torch.save(dict(snapshots=snapshots, image_indices=list(range(SNAPSHOT_IMAGES))), out_dir / "snapshots.pt")
        out["timelapse"] = points
    model, _ = load_run_model(out_dir)
    detections, _ = predict_dataset(model, val_set, progress=False)
    out["nms"] = nms_box_counts(detections, val_set)
    out["alignment"] = timelapse_point(model, val_set, len(val_set))
    return out


def _records(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def ap_curve(out_dir: Path) -> list[tuple[int, float]]:
    """[(epoch, AP)] of a run's evaluations (the last evaluation of an epoch wins)."""
    return sorted({r["epoch"]: r["AP"] for r in _records(out_dir) if r.get("kind") == "eval"}.items())


def run_experiment(run: Run, out_root: str | Path = RUNS_DIR, progress: bool = True,
                   overrides: list[str] | None = None, analysis_images: int = TIMELAPSE_IMAGES,
                   finetune: bool = False, bench: str | None = None) -> dict:
    """Train, evaluate after every epoch (and analyse) one run at CPU scale; writes and returns ``result.json``.
    ``bench``: ``bench.BENCHES`` entry (default: the active bench).

    ``overrides`` go on top of the CPU recipe (the tests use them to shrink a run); ``finetune``
    trains the backbone too (:data:`FINETUNE_OVERRIDES`, no feature cache, no analysis)."""
    from tood_lib.analysis.complexity import count_parameters
    from tood_lib.config import apply_overrides
    from tood_lib.engine.trainer import Trainer

    exp = EXPERIMENTS[run.experiment]
    out_dir = run_dir(run, out_root)
    cfg = apply_overrides(experiment_config(exp, "cpu", run.dataset, bench),
                          (FINETUNE_OVERRIDES if finetune else []) + (overrides or []))
    root = data_root(run.dataset, bench)
    analysed = run.experiment in TABLE6 and not finetune
    timelapse = analysed and run.seed == 0
    start = time.perf_counter()
    eval_epochs = [e for e in CPU_EVAL_EPOCHS if e <= cfg.train.epochs] if cfg.train.epochs >= max(CPU_EVAL_EPOCHS) \
        else range(1, cfg.train.epochs + 1)  # (shrunk test runs: every epoch)
    trainer = Trainer(cfg, root, out_dir, seed=run.seed, num_workers=0, amp="off", eval_epochs=eval_epochs,
                      progress=progress, feature_cache=None if finetune else feature_dir(run.dataset, out_root))
    if (out_dir / "last.pth").is_file():
        trainer.resume()
    result = trainer.fit()
    curve = ap_curve(out_dir)
    from tood_lib.ablations.bench import ACTIVE_BENCH

    record = dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, description=exp.describe(),
                  bench=bench or ACTIVE_BENCH, data_root=root.name,
                  **{k: float(result.stats[k]) for k in STAT_KEYS}, steps=trainer.state.global_step,
                  epochs=cfg.train.epochs, params=count_parameters(trainer.model)["trainable"],
                  threads=torch.get_num_threads(), train_eval_seconds=round(time.perf_counter() - start, 1),
                  ap_curve=curve, plateau=plateau(curve, cfg.train.epochs),
                  backbone="fine-tuned (stage 1 frozen)" if finetune else "frozen (cached features)")
    if analysed:
        t0 = time.perf_counter()
        val_set = trainer.val_set  # with the cached features of the frozen backbone
        record.update(analyse_run(out_dir, cfg, val_set, timelapse, progress, analysis_images))
        record["analysis_seconds"] = round(time.perf_counter() - t0, 1)
    record["seconds"] = round(time.perf_counter() - start, 1)
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out_dir / "result.json")
    for path in out_dir.glob("*.pth"):  # checkpoints are large; the time-lapse runs keep theirs for the notebooks
        if not timelapse and path.name != "last.pth":
            path.unlink()
    return record


# ------------------------------------------------------------------------------------ the grid
def pending_runs(runs: list[Run], out_root=RUNS_DIR) -> list[Run]:
    return [r for r in runs if not (run_dir(r, out_root) / "result.json").is_file()]


def prepare_features(datasets, out_root: str | Path = RUNS_DIR, progress: bool = True,
                     overrides: list[str] | None = None, bench: str | None = None) -> None:
    """Build each data set and its feature caches once, before runs start in parallel."""
    from tood_lib.config import apply_overrides, build_model
    from tood_lib.data.coco import CocoDetection
    from tood_lib.engine.feature_cache import cached_training_features

    for dataset in datasets:
        cfg = apply_overrides(experiment_config("tood", "cpu", dataset, bench), overrides or [])
        root = data_root(dataset, bench)
        folder = feature_dir(dataset, out_root)
        if all((folder / f"{split}.pt").is_file() for split in ("train", "val")):
            continue
        print(f"[ablations] caching the frozen backbone's features of the {dataset} data set -> {folder}")
        backbone = build_model(cfg, load_backbone_weights=True).backbone
        for split in ("train", "val"):
            data = CocoDetection(root, split, cfg.data, train=split == "train", max_images=cfg.data.train_images
                                 if split == "train" else None, verbose=False)
            cached_training_features(backbone, data, folder / f"{split}.pt", progress=progress)


def _launch(run: Run, out_root: Path, threads: int, extra: list[str]) -> dict:  # noqa: D103
    out_dir = run_dir(run, out_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(out_dir / "log.txt", "a") as log:
        code = subprocess.call([sys.executable, "-m", "tood_lib", "ablations", "run-one", run.experiment,
                                "--dataset", run.dataset, "--seed", str(run.seed), "--out-root", str(out_root), *extra],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RuntimeError(f"{run} failed (exit {code}); see {out_dir / 'log.txt'}")
    return json.loads((out_dir / "result.json").read_text())


def git_commit_results(results_dir: Path, message: str) -> None:
    """Commit ``results_dir`` (only it) so that a finished run survives the end of a session."""
    try:
        subprocess.run(["git", "add", "-A", str(results_dir)], cwd=REPO_ROOT, check=True, capture_output=True)
        staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", str(results_dir)], cwd=REPO_ROOT)
        if staged.returncode:
            subprocess.run(["git", "commit", "-q", "-m", message, "--", str(results_dir)], cwd=REPO_ROOT, check=True,
                           capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        tqdm.write(f"[ablations] could not commit {results_dir}: {err}")


def run_grid(runs: list[Run], jobs: int = 2, out_root: str | Path = RUNS_DIR, results_dir: str | Path = RESULTS_DIR,
             progress: bool = True, overrides: list[str] | None = None, analysis_images: int = TIMELAPSE_IMAGES,
             with_complexity: bool = True, commit: bool = False, finetune: bool = False,
             grid: str | None = None, bench: str | None = None) -> Path:
    """Run every pending run, collecting (and with ``commit``, committing) the results after each one.
    ``finetune``: the runs train their backbone (see :func:`run_experiment`). ``grid`` ("core" or
    "full", when ``runs`` are that grid's): once they have finished, also run the replacement runs
    the replacement-seed rule asks for (on the same data sets), until it asks for none."""
    start = time.time()
    unknown = sorted({r.experiment for r in runs if r.experiment not in EXPERIMENTS})
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}")
    out_root, results_dir = Path(out_root), Path(results_dir)
    if not finetune:
        prepare_features(sorted({r.dataset for r in runs}), out_root, progress, overrides, bench)
    todo = pending_runs(runs, out_root)
    print(f"[ablations] {len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to go, {jobs} at a time -> {out_root}")
    threads = max(1, (os.cpu_count() or 2) // jobs)
    extra = ["--analysis-images", str(analysis_images)] + (["--finetune"] if finetune else []) \
        + (["--bench", bench] if bench else []) \
        + (["--set", *overrides] if overrides else [])
    label = "finetune" if finetune else grid_of(runs, run_outcomes(out_root))
    datasets = {r.dataset for r in runs}
    failures, finished = [], 0
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(runs), initial=len(runs) - len(todo),
                                                            desc="ablation runs", disable=not progress,
                                                            dynamic_ncols=True) as bar:
        while todo:
            futures = {pool.submit(_launch, r, out_root, threads, extra): r for r in todo}
            for future in as_completed(futures):
                run = futures[future]
                try:
                    r = future.result()
                    finished += 1
                    p = r["plateau"]
                    tqdm.write(f"[ablations] {run}: AP {r['AP']:.3f} (at 75 %: {p['AP_75']:.3f}, "
                               f"{'settled' if p['ok'] else 'NOT settled'}) in {r['seconds']:.0f} s")
                    _log_invocation(results_dir, start, finished, label)
                    collect_results(None, out_root, results_dir, with_complexity)
                    if commit:
                        git_commit_results(results_dir, f"ablations: {run} AP {r['AP']:.3f}")
                except RuntimeError as err:
                    failures.append(str(err))
                    tqdm.write(f"[ablations] {err}")
                bar.update(1)
            todo = []
            if grid and not failures:
                todo = [r for r in grid_runs(grid, run_outcomes(out_root)) if r.dataset in datasets and r not in set(runs)]
                if todo:
                    tqdm.write(f"[ablations] the replacement-seed rule adds {len(todo)} runs: "
                               + ", ".join(map(str, todo)))
                    runs = runs + todo
                    bar.total = len(runs)
                    bar.refresh()
    collect_results(None, out_root, results_dir, with_complexity)  # every declared run on disk, not only these
    if failures:
        raise RuntimeError("some runs failed (rerun the command to retry them):\n" + "\n".join(failures))
    return results_dir


def grid_of(runs: list[Run], outcomes: dict[Run, bool] | None = None) -> str:
    """Which grid a list of runs belongs to: "core" if every run is in the core grid, else "full" if
    every run is in the full grid (its rest included), else "other" (e.g. the fine-tuning check).
    ``outcomes``: as for :func:`grid_runs` (replacement runs belong to their grid)."""
    for name in ("core", "full"):
        if set(runs) <= set(grid_runs(name, outcomes)):
            return name
    return "other"


def _log_invocation(results_dir: Path, start: float, runs: int, grid: str = "other") -> None:
    """Record this invocation's wall time so far (updated after every run, so a killed session keeps it).
    ``grid``: what the invocation was asked to run (:func:`grid_of`); the core grid's time is the sum
    over the invocations that ran core runs only (``core_wall_seconds``)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "ablations_cpu_timing.json"
    log = json.loads(path.read_text()) if path.is_file() else dict(invocations=[])
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start))
    entry = dict(started=started, wall_seconds=round(time.time() - start), runs=runs, grid=grid,
                 cpus=os.cpu_count(), amp="off")
    log["invocations"] = [i for i in log.get("invocations", []) if i.get("started") != started] + [entry]
    # An invocation marked "superseded" (its runs were deleted and redone later, e.g. because the
    # machine was shared while it ran) stays on record but is not counted in the totals.
    counted = [i for i in log["invocations"] if not i.get("superseded")]
    log["total_wall_seconds"] = sum(i["wall_seconds"] for i in counted)
    log["total_runs"] = sum(i["runs"] for i in counted)
    log["core_wall_seconds"] = sum(i["wall_seconds"] for i in counted if i.get("grid") == "core")
    log["core_runs"] = sum(i["runs"] for i in counted if i.get("grid") == "core")
    path.write_text(json.dumps(log, indent=2) + "\n")


def collect_results(runs: list[Run] | None = None, out_root: str | Path = RUNS_DIR,
                    results_dir: str | Path = RESULTS_DIR, with_complexity: bool = True) -> pd.DataFrame:
    """Gather the finished runs (``runs``; default: every run of the full grid, replacement runs
    included, found under ``out_root``)
    into ``results_dir``: ``ablation_runs_cpu.csv`` (one row per settled run),
    ``ap_curves_cpu.csv``, ``unsettled_runs_cpu.csv``, ``timelapse_cpu.csv``, ``table6_nms_cpu.csv``,
    ``snapshots_cpu.pt``, the paper-format tables and ``verdicts_cpu.csv``."""
    from tood_lib.ablations.tables import write_tables

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows, unsettled, curves, timelapse, nms, snapshots = [], [], [], [], [], {}
    for run in runs if runs is not None else grid_runs("full", run_outcomes(out_root)):
        path = run_dir(run, out_root) / "result.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        curves += [dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, epoch=e, AP=ap) for e, ap in r["ap_curve"]]
        row = {k: v for k, v in r.items() if k not in ("timelapse", "nms", "alignment", "ap_curve", "plateau")}
        row.update({f"plateau_{k}": v for k, v in r["plateau"].items()})
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
    pd.DataFrame(rows).to_csv(results_dir / "ablation_runs_cpu.csv", index=False, float_format="%.4f")
    pd.DataFrame(unsettled).to_csv(results_dir / "unsettled_runs_cpu.csv", index=False, float_format="%.4f")
    pd.DataFrame(curves).to_csv(results_dir / "ap_curves_cpu.csv", index=False, float_format="%.4f")
    pd.DataFrame(timelapse).to_csv(results_dir / "timelapse_cpu.csv", index=False, float_format="%.4f")
    pd.DataFrame(nms).to_csv(results_dir / "table6_nms_cpu.csv", index=False, float_format="%.4f")
    for dataset, snaps in snapshots.items():
        torch.save(snaps, results_dir / f"snapshots_{dataset}_cpu.pt")
    if rows:
        write_tables(results_dir, with_complexity)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ the fine-tuning check
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
    out.to_csv(Path(frozen_dir) / "finetune_check_cpu.csv", index=False, float_format="%.4f")
    return out
