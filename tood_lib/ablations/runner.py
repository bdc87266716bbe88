"""Run the ablation grid at CPU scale: resumable, two runs at a time, with a progress display.

``python -m tood_lib ablations run`` (``scripts/ablations.sh``) does, in order:

1. pretrain the CPU-scale backbone once (``pretrain.py``; kept in ``runs/ablations/``);
2. train every (experiment, seed) whose ``result.json`` is missing, each in its own process
   (``python -m tood_lib ablations run-one``) with one thread, two processes at once on two cores
   (the small convolutions here use one core badly, so two one-thread runs finish ~1.3x sooner than
   one two-thread run after another). An interrupted run continues from its ``last.pth``;
3. for the four Table 6 experiments, measure the alignment statistics after every epoch (the
   time-lapse), count the post-NMS boxes, and keep the dense predictions of a few val images;
4. collect everything into ``results/`` (committed) and build the tables (``tables.py``).

Finished runs are never redone; delete a run's folder (or ``--fresh``) to redo it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tood_lib.ablations.grid import CPU_BACKBONE, EXPERIMENTS, REPO_ROOT, experiment_config

RUNS_DIR = REPO_ROOT / "runs" / "ablations" / "cpu"
RESULTS_DIR = Path(os.environ.get("TOOD_RESULTS_DIR", REPO_ROOT / "results"))  # committed; the env var is for trying things out
SEEDS = (0, 1)
SNAPSHOT_IMAGES = 6  # val images whose dense predictions are kept for the figures
TIMELAPSE_IMAGES = 100  # val images behind each time-lapse point
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def run_dir(name: str, seed: int, root: str | Path = RUNS_DIR) -> Path:
    return Path(root) / name / f"seed{seed}"


# ------------------------------------------------------------------------------------ one run
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


def analyse_run(out_dir: Path, cfg, progress: bool = True, images: int = TIMELAPSE_IMAGES) -> dict:
    """Table 6 and the time-lapse for a finished run: -> {"timelapse": [...], "nms": {...}}; also
    writes ``snapshots.pt`` (dense predictions of the first val images after every epoch)."""
    from tood_lib.analysis.errors import nms_box_counts
    from tood_lib.engine.inference import predict_dataset
    from tood_lib.workbook import builtin_val_set, load_run_model, run_checkpoints

    dataset = builtin_val_set(cfg)
    epochs = [0] + list(run_checkpoints(out_dir))
    evals = {r["epoch"]: r for r in _records(out_dir) if r.get("kind") == "eval"}
    timelapse, snapshots = [], {}
    for epoch in tqdm(epochs, desc="time-lapse", disable=not progress, leave=False):
        model, _ = load_run_model(out_dir, epoch)
        point = timelapse_point(model, dataset, images)
        point["epoch"] = epoch
        point["AP"] = evals[epoch]["AP"] if epoch in evals else float("nan")
        timelapse.append(point)
        snapshots[epoch] = _snapshot(model, dataset, SNAPSHOT_IMAGES)
    detections, _ = predict_dataset(model, dataset, progress=False)
    nms = nms_box_counts(detections, dataset)
    final = timelapse_point(model, dataset, len(dataset) if images >= TIMELAPSE_IMAGES else images)
    torch.save(dict(snapshots=snapshots, image_indices=list(range(SNAPSHOT_IMAGES))), out_dir / "snapshots.pt")
    return dict(timelapse=timelapse, nms=nms, alignment=final)


def _records(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_experiment(name: str, seed: int, out_root: str | Path = RUNS_DIR, progress: bool = True,
                   overrides: list[str] | None = None, backbone: str | Path | None = None,
                   analysis_images: int = TIMELAPSE_IMAGES) -> dict:
    """Train, evaluate (and analyse) one (experiment, seed) at CPU scale; writes and returns ``result.json``.

    ``overrides`` go on top of the CPU recipe (the tests use them to shrink a run); ``backbone`` replaces
    the shape-pretrained ResNet-18."""
    from tood_lib.config import apply_overrides
    from tood_lib.analysis.complexity import count_parameters
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.engine.trainer import Trainer

    exp = EXPERIMENTS[name]
    out_dir = run_dir(name, seed, out_root)
    cfg = apply_overrides(experiment_config(exp, "cpu", backbone), overrides or [])
    start = time.perf_counter()
    trainer = Trainer(cfg, build_builtin_dataset(), out_dir, seed=seed, num_workers=0, amp="off",
                      eval_every=1 if exp.analyse else 0, progress=progress)
    if (out_dir / "last.pth").is_file():
        trainer.resume()
    result = trainer.fit()
    record = dict(experiment=name, seed=seed, description=exp.describe(),
                  **{k: float(result.stats[k]) for k in STAT_KEYS}, steps=trainer.state.global_step,
                  params=count_parameters(trainer.model)["trainable"], threads=torch.get_num_threads(),
                  train_eval_seconds=round(time.perf_counter() - start, 1))
    if exp.analyse:
        t0 = time.perf_counter()
        record.update(analyse_run(out_dir, cfg, progress, analysis_images))
        record["analysis_seconds"] = round(time.perf_counter() - t0, 1)
    record["seconds"] = round(time.perf_counter() - start, 1)
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out_dir / "result.json")
    for path in out_dir.glob("*.pth"):  # checkpoints are large; the analysed runs keep theirs for the notebooks
        if not exp.analyse and path.name != "last.pth":
            path.unlink()
    return record


# ------------------------------------------------------------------------------------ the grid
def pending_runs(experiments, seeds, out_root=RUNS_DIR) -> list[tuple[str, int]]:
    return [(n, s) for n in experiments for s in seeds if not (run_dir(n, s, out_root) / "result.json").is_file()]


def _launch(name: str, seed: int, out_root: Path, threads: int, extra: list[str]) -> dict:
    out_dir = run_dir(name, seed, out_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(out_dir / "log.txt", "a") as log:
        code = subprocess.call([sys.executable, "-m", "tood_lib", "ablations", "run-one", name, "--seed", str(seed),
                                "--out-root", str(out_root), *extra], stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RuntimeError(f"{name} seed {seed} failed (exit {code}); see {out_dir / 'log.txt'}")
    return json.loads((out_dir / "result.json").read_text())


def run_grid(experiments=None, seeds=SEEDS, jobs: int = 2, out_root: str | Path = RUNS_DIR,
             results_dir: str | Path = RESULTS_DIR, progress: bool = True, overrides: list[str] | None = None,
             backbone: str | Path | None = None, analysis_images: int = TIMELAPSE_IMAGES,
             with_complexity: bool = True) -> Path:
    """Run every pending (experiment, seed), then collect results and tables into ``results_dir``.

    ``overrides``, ``backbone`` and ``analysis_images`` are passed to every run (see ``run_experiment``)."""
    from tood_lib.engine.pretrain import pretrain_backbone
    from tood_lib.data.builtin import build_builtin_dataset

    start = time.time()
    experiments = list(experiments or EXPERIMENTS)
    unknown = [n for n in experiments if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}")
    out_root, results_dir = Path(out_root), Path(results_dir)
    root = build_builtin_dataset()
    backbone = Path(backbone or CPU_BACKBONE)
    if not backbone.is_file():
        print(f"[ablations] pretraining the CPU-scale backbone -> {backbone}")
        stats = pretrain_backbone(root, backbone, progress=progress)
        print(f"[ablations] backbone: val accuracy {stats['val_accuracy']:.3f} in {stats['seconds']:.0f} s")
    todo = pending_runs(experiments, seeds, out_root)
    total = len(experiments) * len(seeds)
    print(f"[ablations] {total - len(todo)} of {total} runs done; {len(todo)} to go, {jobs} at a time -> {out_root}")
    threads = max(1, (os.cpu_count() or 2) // jobs)
    extra = ["--backbone", str(backbone), "--analysis-images", str(analysis_images)]
    extra += ["--set", *overrides] if overrides else []
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=total, initial=total - len(todo), desc="ablation runs",
                                                            disable=not progress, dynamic_ncols=True) as bar:
        futures = {pool.submit(_launch, n, s, out_root, threads, extra): (n, s) for n, s in todo}
        for future in as_completed(futures):
            name, seed = futures[future]
            try:
                r = future.result()
                tqdm.write(f"[ablations] {name} seed {seed}: AP {r['AP']:.3f} (AP50 {r['AP50']:.3f}) in {r['seconds']:.0f} s")
            except RuntimeError as err:
                failures.append(str(err))
                tqdm.write(f"[ablations] {err}")
            bar.update(1)
    _log_invocation(results_dir, start, len(todo) - len(failures))
    collect_results(experiments, seeds, out_root, results_dir, with_complexity, backbone)
    if failures:
        raise RuntimeError("some runs failed (rerun the command to retry them):\n" + "\n".join(failures))
    return results_dir


def _log_invocation(results_dir: Path, start: float, runs: int) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "ablations_cpu_timing.json"
    log = json.loads(path.read_text()) if path.is_file() else dict(invocations=[])
    if runs:
        log["invocations"].append(dict(started=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)),
                                       wall_seconds=round(time.time() - start), runs=runs, cpus=os.cpu_count()))
    log["total_wall_seconds"] = sum(i["wall_seconds"] for i in log["invocations"])
    path.write_text(json.dumps(log, indent=2) + "\n")


def collect_results(experiments=None, seeds=SEEDS, out_root: str | Path = RUNS_DIR,
                    results_dir: str | Path = RESULTS_DIR, with_complexity: bool = True,
                    backbone: str | Path | None = None) -> pd.DataFrame:
    """Gather the finished runs into ``results_dir``: ``ablation_runs_cpu.csv`` (one row per run),
    ``timelapse_cpu.csv``, ``table6_nms_cpu.csv``, ``snapshots_cpu.pt``, and the paper-format tables."""
    from tood_lib.ablations.tables import write_tables

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows, timelapse, nms, snapshots = [], [], [], {}
    for name in experiments or EXPERIMENTS:
        for seed in seeds:
            path = run_dir(name, seed, out_root) / "result.json"
            if not path.is_file():
                continue
            r = json.loads(path.read_text())
            rows.append({k: v for k, v in r.items() if k not in ("timelapse", "nms", "alignment")})
            if "timelapse" in r:
                timelapse += [dict(experiment=name, seed=seed, **p) for p in r["timelapse"]]
                nms.append(dict(experiment=name, seed=seed, **r["nms"], **{f"final_{k}": v for k, v in r["alignment"].items()}))
                snap = path.parent / "snapshots.pt"
                if snap.is_file() and seed == min(seeds):
                    snapshots[name] = torch.load(snap, weights_only=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(results_dir / "ablation_runs_cpu.csv", index=False, float_format="%.4f")
    pd.DataFrame(timelapse).to_csv(results_dir / "timelapse_cpu.csv", index=False, float_format="%.4f")
    pd.DataFrame(nms).to_csv(results_dir / "table6_nms_cpu.csv", index=False, float_format="%.4f")
    if snapshots:
        torch.save(snapshots, results_dir / "snapshots_cpu.pt")
    backbone_stats = Path(backbone or CPU_BACKBONE).with_suffix(".json")
    if backbone_stats.is_file():
        (results_dir / "backbone_pretraining_cpu.json").write_text(backbone_stats.read_text())
    write_tables(results_dir, with_complexity)
    return runs
