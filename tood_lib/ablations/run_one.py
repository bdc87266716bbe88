"""One run of the grid at CPU scale: train it, evaluate it after every epoch, judge whether it
settled (the plateau rule), analyse it (Table 6), and write its ``result.json``.

``python -m tood_lib ablations run-one`` calls :func:`run_experiment` in a process of its own (the
grid, ``run_grid.py``, starts two at a time). An interrupted run continues from its ``last.pth``.
Every run is evaluated where its bench's schedule says (``bench.SCHEDULES``): its AP curve, and the
plateau rule (final AP within :data:`PLATEAU_TOLERANCE` of the AP at the schedule's ``settled_from``:
epoch 9 of the first bench's 12, epoch 28 of the multi-level bench's 32, where the rule before the
first LR drop is recorded too). For the four Table 6 experiments the
alignment statistics and the post-NMS boxes are measured on the whole val split (every seed), and
for seed 0 the time-lapse (the same statistics after every epoch) and the dense predictions of a
few val images. Every run with the frozen backbone also records its level audit (``levels``:
ATSS on the val ground truth, TAL on the trained model's predictions, and its post-NMS detections,
``analysis.levels.run_level_shares``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tood_lib.ablations.bench import bench_schedule, scaled_schedule, schedule_overrides
from tood_lib.ablations.grid import EXPERIMENTS, experiment_config
from tood_lib.ablations.runs import RUNS_DIR, TABLE6, Run, data_root, feature_dir, run_dir
from tood_lib.engine.atomic import atomic_torch_save, atomic_write_text, remove_stale_temps

PLATEAU_TOLERANCE = 0.01  # AP (0-1): one AP point
PLATEAU_FRACTION = 0.75
SNAPSHOT_IMAGES = 6  # val images whose dense predictions are kept for the figures
TIMELAPSE_IMAGES = 100  # val images behind each time-lapse point
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The backbone fine-tuned as the official recipe does (stage 1 and BatchNorm frozen, no cache), for the
# check of the frozen protocol (issue 11; ``checks.py``).
FINETUNE_OVERRIDES = ["model.frozen_stages=1"]


def plateau(curve: list[tuple[int, float]], epochs: int, settled_from: int | None = None) -> dict:
    """The plateau rule on an AP curve [(epoch, AP)]: the AP at ``settled_from`` (default: 75 % of the
    schedule; the first evaluated epoch at or after it) against the final AP."""
    aps = dict(curve)
    target = math.ceil(PLATEAU_FRACTION * epochs) if settled_from is None else settled_from
    epoch_75 = min((e for e in aps if e >= target), default=None)
    if epoch_75 is None or epochs not in aps:
        return dict(epoch_75=epoch_75, AP_75=float("nan"), AP_final=aps.get(epochs, float("nan")), ok=False)
    return dict(epoch_75=epoch_75, AP_75=aps[epoch_75], AP_final=aps[epochs],
                ok=bool(abs(aps[epochs] - aps[epoch_75]) <= PLATEAU_TOLERANCE + 1e-9))


def plateau_before_drop(curve: list[tuple[int, float]], first_drop: int, judged_from: int) -> dict:
    """The plateau rule before the first LR drop: the AP at ``first_drop`` (the last epoch at the
    constant LR) against the AP at ``judged_from``; not ok when either was not evaluated."""
    aps = dict(curve)
    if first_drop not in aps or judged_from not in aps:
        return dict(epoch_from=judged_from, epoch_drop=first_drop, ok=False)
    return dict(epoch_from=judged_from, AP_from=aps[judged_from], epoch_drop=first_drop, AP_drop=aps[first_drop],
                ok=bool(abs(aps[first_drop] - aps[judged_from]) <= PLATEAU_TOLERANCE + 1e-9))


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
    from tood_lib.engine.run_folder import load_run_model, run_checkpoints

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
        atomic_torch_save(dict(snapshots=snapshots, image_indices=list(range(SNAPSHOT_IMAGES))), out_dir / "snapshots.pt")
        out["timelapse"] = points
    model, _ = load_run_model(out_dir)
    detections, _ = predict_dataset(model, val_set, progress=False)
    out["nms"] = nms_box_counts(detections, val_set)
    out["alignment"] = timelapse_point(model, val_set, len(val_set))
    return out


def _records(out_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl; a line that is not JSON is refused with the file and line named."""
    path = out_dir / "metrics.jsonl"
    records = []
    for number, line in enumerate(path.read_text().splitlines() if path.is_file() else [], 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            raise ValueError(f"{path}, line {number}, is not a JSON record ({err}); delete that line and rerun") from None
    return records


def ap_curve(out_dir: Path) -> list[tuple[int, float]]:
    """[(epoch, AP)] of a run's evaluations (the last evaluation of an epoch wins)."""
    return sorted({r["epoch"]: r["AP"] for r in _records(out_dir) if r.get("kind") == "eval"}.items())


def run_experiment(run: Run, out_root: str | Path = RUNS_DIR, progress: bool = True,
                   overrides: list[str] | None = None, analysis_images: int = TIMELAPSE_IMAGES,
                   finetune: bool = False, bench: str | None = None, schedule_factor: int = 1,
                   analyse: bool = True) -> dict:
    """Train, evaluate after every epoch (and analyse) one run at CPU scale; writes and returns ``result.json``.
    ``bench``: ``bench.BENCHES`` entry (default: the active bench).

    ``overrides`` go on top of the CPU recipe (the tests use them to shrink a run); ``finetune``
    trains the backbone too (:data:`FINETUNE_OVERRIDES`, no feature cache, no analysis);
    ``schedule_factor`` trains the bench's schedule that many times as long (``bench.scaled_schedule``:
    the schedule check), evaluated and judged at the scaled epochs. ``analyse=False`` stops after training
    and the evaluations: no level audit, Table 6 numbers or time-lapse (the notebooks' copy of a grid run,
    ``workbook.workbook_run``, needs only its checkpoints and log; the grid's tables come from the grid)."""
    from tood_lib.analysis.complexity import count_parameters
    from tood_lib.config import apply_overrides
    from tood_lib.engine.trainer import Trainer

    exp = EXPERIMENTS[run.experiment]
    out_dir = run_dir(run, out_root)
    cfg = apply_overrides(experiment_config(exp, "cpu", run.dataset, bench),
                          (FINETUNE_OVERRIDES if finetune else []) + schedule_overrides(bench, schedule_factor)
                          + (overrides or []))
    root = data_root(run.dataset, bench)
    analysed = analyse and run.experiment in TABLE6 and not finetune
    timelapse = analysed and run.seed == 0 and schedule_factor == 1  # (the schedule check keeps no time-lapse)
    start = time.perf_counter()
    schedule = scaled_schedule(bench_schedule(bench), schedule_factor)
    on_schedule = cfg.train.epochs == schedule.epochs  # (shrunk test runs: every epoch, the 75 % rule)
    eval_epochs = schedule.eval_epochs if on_schedule else range(1, cfg.train.epochs + 1)
    if out_dir.is_dir():
        remove_stale_temps(out_dir)  # a checkpoint or result whose write was killed
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
                  ap_curve=curve, plateau=plateau(curve, cfg.train.epochs, schedule.settled_from if on_schedule else None),
                  backbone="fine-tuned (stage 1 frozen)" if finetune else "frozen (cached features)",
                  schedule_factor=schedule_factor)
    if on_schedule and schedule.pre_drop_from is not None:  # reported beside the end rule (issue 19)
        record["plateau_before_drop"] = plateau_before_drop(curve, schedule.lr_steps[0], schedule.pre_drop_from)
    if analyse and not finetune:  # the level audit of the run (issue 19): which levels its positives and detections use
        from tood_lib.analysis.levels import run_level_shares

        t0 = time.perf_counter()
        record["levels"] = run_level_shares(trainer.model, trainer.val_set, cfg)
        record["levels_seconds"] = round(time.perf_counter() - t0, 1)
    if analysed:
        t0 = time.perf_counter()
        val_set = trainer.val_set  # with the cached features of the frozen backbone
        record.update(analyse_run(out_dir, cfg, val_set, timelapse, progress, analysis_images))
        record["analysis_seconds"] = round(time.perf_counter() - t0, 1)
    record["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out_dir / "result.json", json.dumps(record, indent=2))  # last: it marks the run finished
    keep_checkpoints = timelapse or not analyse  # the notebooks read the epochs of these (time-lapse, workbook)
    for path in out_dir.glob("*.pth"):  # checkpoints are large; the others keep only last.pth
        if not keep_checkpoints and path.name != "last.pth":
            path.unlink()
    return record
