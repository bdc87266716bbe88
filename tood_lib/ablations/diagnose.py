"""The grid's declared analyses of finished runs (issue 19): the ranking diagnosis and the per-level
layer attention, on every finished run of the experiments in :data:`DIAGNOSED` (Table 6's 2 x 2 and the
two ranking diagnostics, ``claims.py``), all seeds, both data sets.

``python -m tood_lib ablations diagnose`` loads each run's ``last.pth``, measures it on its data set's
val split (with the cached backbone features the run trained with) and keeps the answer in the run's
folder (``diagnosis.json``: a run is measured once; delete the file to measure it again). Then it
writes, for all of them:

* ``ranking_diagnosis_cpu.csv``: one row per run: its AP, AP50 and AP75, whether it settled, and
  ``analysis.ranking.ranking_summary`` (detections per image, the share of images at the cap, the
  score-IoU rank correlation, Table 6's categories);
* ``reliability_cpu.csv``: per run and score bin, the detections and their mean IoU with their object;
* ``layer_attention_cpu.csv``: per T-Head run, level, task and layer, the mean layer-attention weight
  over the val split, and ``layer_attention_summary_cpu.csv`` its gaps between levels and between tasks;
* ``layer_attention_parameters_cpu.csv``: per T-Head run and task, the size of the layer attention's
  two 1x1 convs against their init and how far the measured weights lie from its biases alone
  (``analysis.layer_attention.layer_attention_parameters``: why the weights can be level-independent);
* ``tal_level_course_cpu.csv``: for the time-lapse runs (seed 0) trained with TAL, where TAL puts its
  positives at epochs :data:`COURSE_EPOCHS` beside its candidate pool (``analysis.levels.tal_level_course``;
  kept per run as ``tal_level_course.json``);
* ``pcc_breakdown_cpu.csv``: per run of Table 6's 2 x 2, its Table 6 PCC broken down by where the anchors
  of each object's top-50 pool sit, inside or outside the object (``analysis.pcc_breakdown``; kept per
  run as ``pcc_breakdown.json``): the declared analysis of the PCC reversal of parallel + TAL.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from tood_lib.ablations.runs import RESULTS_DIR, RUNS_DIR, TABLE6, Run, feature_dir, read_result, run_dir
from tood_lib.engine.atomic import atomic_write_csv, atomic_write_text

DIAGNOSED = TABLE6 + ("atss_parallel_no_centerness", "atss_qfl_t_head")
COURSE_EPOCHS = (1, 2, 4, 8, 16, 24, 32)  # the TAL level course: the warm-up's end, TAL's first epochs, the LR drops


def _val_set(run: Run, model, cfg, out_root: Path, bench: str | None):
    """The run's val split as it was evaluated: its data set, with the cached features of the frozen
    backbone (the grid's cache; built again, and checked against the backbone, if it is missing)."""
    from tood_lib.ablations.runs import data_root
    from tood_lib.data.coco import CocoDetection
    from tood_lib.engine.feature_cache import cached_training_features

    dataset = CocoDetection(data_root(run.dataset, bench), "val", cfg.data, train=False, verbose=False)
    cached_training_features(model.backbone, dataset, feature_dir(run.dataset, out_root) / "val.pt", progress=False)
    return dataset


def diagnose_run(run: Run, out_root: str | Path = RUNS_DIR, bench: str | None = None) -> dict:
    """Measure one finished run (its ``last.pth``; ``bench``: the one it ran on, default the active
    bench) -> the record kept as its ``diagnosis.json``."""
    from tood_lib.analysis.layer_attention import layer_attention_by_level, layer_attention_summary
    from tood_lib.analysis.ranking import ranking_diagnosis
    from tood_lib.api import load_model

    folder = run_dir(run, out_root)
    model, cfg = load_model(folder / "last.pth")
    dataset = _val_set(run, model, cfg, Path(out_root), bench)
    summary, curve = ranking_diagnosis(model, dataset)
    attention = layer_attention_by_level(model, dataset) if cfg.model.head == "t_head" else pd.DataFrame()
    record = dict(ranking=summary, reliability=curve.to_dict("records"), layer_attention=attention.to_dict("records"),
                  layer_attention_summary=layer_attention_summary(attention))
    atomic_write_text(folder / "diagnosis.json", json.dumps(record, indent=2))
    return record


def _attention_parameters(run: Run, diagnosis: dict, out_root: Path) -> list[dict]:
    """The layer attention's parameters of a T-Head run (its ``last.pth``; cheap, not cached), with the
    gap of its measured weights (``diagnosis``) to the biases alone. The N bias-only weights become
    columns ``bias_only_1..N``."""
    from tood_lib.analysis.layer_attention import layer_attention_parameters
    from tood_lib.api import load_model

    path = run_dir(run, out_root) / "last.pth"
    if not path.is_file():
        tqdm.write(f"[diagnose] {path} is missing: {run} has no layer-attention parameters")
        return []
    model, _ = load_model(path)
    rows = layer_attention_parameters(model, pd.DataFrame(diagnosis["layer_attention"])).to_dict("records")
    for row in rows:
        row.update({f"bias_only_{k + 1}": v for k, v in enumerate(row.pop("bias_only"))})
    return rows


def _level_course(run: Run, out_root: Path, bench: str | None) -> list[dict]:
    """The TAL level course of a time-lapse run trained with TAL (measured once, kept as
    ``tal_level_course.json``); [] for any other run."""
    from tood_lib.ablations.grid import EXPERIMENTS

    folder = run_dir(run, out_root)
    path = folder / "tal_level_course.json"
    if path.is_file():
        return json.loads(path.read_text())
    if EXPERIMENTS[run.experiment].assigner != "tal" or not (folder / f"epoch_{COURSE_EPOCHS[0]}.pth").is_file():
        return []
    from tood_lib.analysis.levels import tal_level_course
    from tood_lib.api import load_model

    model, cfg = load_model(folder / "last.pth")
    rows = tal_level_course(folder, _val_set(run, model, cfg, out_root, bench), COURSE_EPOCHS).to_dict("records")
    atomic_write_text(path, json.dumps(rows, indent=2))
    return rows


def _pcc_breakdown(run: Run, out_root: Path, bench: str | None) -> dict | None:
    """The PCC breakdown of a Table 6 run (measured once, kept as ``pcc_breakdown.json``); None for
    any other run."""
    if run.experiment not in TABLE6:
        return None
    path = run_dir(run, out_root) / "pcc_breakdown.json"
    if path.is_file():
        return json.loads(path.read_text())
    if not (run_dir(run, out_root) / "last.pth").is_file():
        tqdm.write(f"[diagnose] {run_dir(run, out_root) / 'last.pth'} is missing: {run} has no PCC breakdown")
        return None
    from tood_lib.analysis.pcc_breakdown import pcc_breakdown, summarise_breakdown
    from tood_lib.api import load_model

    model, cfg = load_model(run_dir(run, out_root) / "last.pth")
    summary = summarise_breakdown(pcc_breakdown(model, _val_set(run, model, cfg, out_root, bench)))
    atomic_write_text(path, json.dumps(summary, indent=2))
    return summary


def diagnose_grid(out_root: str | Path = RUNS_DIR, results_dir: str | Path = RESULTS_DIR, progress: bool = True) -> pd.DataFrame:
    """Diagnose every finished run of :data:`DIAGNOSED` under ``out_root`` not yet diagnosed, then write
    the seven result files (module docstring) from all of them. -> the ranking table."""
    out_root, results_dir = Path(out_root), Path(results_dir)
    finished = sorted(out_root.glob("*/*/seed*/result.json"))
    runs = []
    for path in finished:
        r = read_result(path)
        if r["experiment"] in DIAGNOSED:
            runs.append((Run(r["dataset"], r["experiment"], int(r["seed"])), r))
    todo = [(run, r) for run, r in runs if not (run_dir(run, out_root) / "diagnosis.json").is_file()]
    for run, r in tqdm(todo, desc="diagnosing runs", disable=not progress):
        diagnose_run(run, out_root, r.get("bench"))
    ranking, reliability, attention, attention_summary, parameters, course, breakdown = [], [], [], [], [], [], []
    for run, r in runs:
        path = run_dir(run, out_root) / "diagnosis.json"
        try:
            d = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path} is not readable JSON ({err}); delete it and rerun to measure {run} again") from None
        key = dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed)
        ranking.append(dict(**key, AP=r["AP"], AP50=r["AP50"], AP75=r["AP75"], settled=bool(r["plateau"]["ok"]), **d["ranking"]))
        reliability += [dict(**key, **row) for row in d["reliability"]]
        attention += [dict(**key, **row) for row in d["layer_attention"]]
        if d["layer_attention"]:
            s = d["layer_attention_summary"]
            attention_summary.append(dict(**key, level_gap=s["level_gap"], task_gap_max=s["task_gap_max"],
                                          task_gap_mean=s["task_gap_mean"],
                                          **{f"task_gap_{k}": v for k, v in s["task_gap_by_level"].items()}))
            parameters += [dict(**key, **row) for row in _attention_parameters(run, d, out_root)]
        course += [dict(**key, **row) for row in _level_course(run, out_root, r.get("bench"))]
        pcc = _pcc_breakdown(run, out_root, r.get("bench"))
        if pcc is not None:
            breakdown.append(dict(**key, settled=bool(r["plateau"]["ok"]), **pcc))
    results_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(ranking)
    atomic_write_csv(table, results_dir / "ranking_diagnosis_cpu.csv", "%.4f")
    atomic_write_csv(pd.DataFrame(reliability), results_dir / "reliability_cpu.csv", "%.4f")
    atomic_write_csv(pd.DataFrame(attention), results_dir / "layer_attention_cpu.csv", "%.5f")
    atomic_write_csv(pd.DataFrame(attention_summary), results_dir / "layer_attention_summary_cpu.csv", "%.5f")
    atomic_write_csv(pd.DataFrame(parameters), results_dir / "layer_attention_parameters_cpu.csv", "%.6f")
    atomic_write_csv(pd.DataFrame(course), results_dir / "tal_level_course_cpu.csv", "%.3f")
    atomic_write_csv(pd.DataFrame(breakdown), results_dir / "pcc_breakdown_cpu.csv", "%.4f")
    return table
