"""Command line: ``python -m tood_lib {presets,info,demo} ...``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tood_lib.config import PRESETS, get_preset
from tood_lib.engine.atomic import DiskFull
from tood_lib.engine.trainer import TrainingDiverged
from tood_lib.model.backbone import PretrainedWeightsUnavailable
from tood_lib.model.detector import build_model


def _fmt_m(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def model_info(preset: str, height: int = 800, width: int = 1280, with_macs: bool = True) -> dict:
    """Parameter counts and MACs of a preset, with the paper's Table 1 values where they exist."""
    from tood_lib.analysis.complexity import PAPER_TABLE1, count_macs, count_parameters

    cfg = get_preset(preset)
    model = build_model(cfg)
    params = count_parameters(model)
    info = dict(preset=preset, params_total=params["total"], params_trainable=params["trainable"],
                params_head=params["head"], params_backbone=params["backbone"], params_neck=params["neck"],
                input_hw=[height, width])
    if with_macs:
        macs = count_macs(model, height, width)
        info.update(macs_total=macs["total"], macs_backbone=macs["backbone"], macs_neck=macs["neck"],
                    macs_head=macs["head"])
    paper_ok = cfg.model.depth == 50 and cfg.model.groups == 1 and cfg.model.num_dcn_head == 0 and (height, width) == (800, 1280)
    if paper_ok and cfg.model.num_classes == 80:
        info["paper"] = PAPER_TABLE1[cfg.model.head]
    return info


def print_info(info: dict) -> None:
    rows = [("parameters, total", _fmt_m(info["params_total"]), f"{info['params_total']:,}"),
            ("parameters, trainable", _fmt_m(info["params_trainable"]), f"{info['params_trainable']:,}"),
            ("parameters, backbone", _fmt_m(info["params_backbone"]), f"{info['params_backbone']:,}"),
            ("parameters, neck (FPN)", _fmt_m(info["params_neck"]), f"{info['params_neck']:,}"),
            ("parameters, head", _fmt_m(info["params_head"]), f"{info['params_head']:,}")]
    h, w = info["input_hw"]
    if "macs_total" in info:
        for part in ("total", "backbone", "neck", "head"):
            value = info[f"macs_{part}"]
            rows.append((f"MACs at {w}x{h}, {part}", f"{value / 1e9:.2f} G", f"{value:,}"))
    paper = info.get("paper", {})
    paper_col = {"parameters, trainable": paper.get("total_params_m"), "parameters, head": paper.get("head_params_m"),
                 f"MACs at {w}x{h}, total": paper.get("total_gmacs"), f"MACs at {w}x{h}, head": paper.get("head_gmacs")}
    print(f"{info['preset']}")
    print(f"  {'':28s} {'ours':>10s} {'exact':>16s} {'paper (Table 1)':>16s}")
    for name, short, exact in rows:
        p = paper_col.get(name)
        unit = " M" if name.startswith("param") else " G"
        print(f"  {name:28s} {short:>10s} {exact:>16s} {(f'{p}{unit}' if p else ''):>16s}")
    if paper:
        print("  (the paper counts trainable parameters, and MACs as 'FLOPs'; see README: what the counter includes)")


def demo(preset: str = "tood_r50_fpn_1x_coco", seed: int = 0) -> None:
    """Build a model, run it on a built-in sample scene, print its size and its detections."""
    from tood_lib.batch import make_batch
    from tood_lib.data.synthetic import draw_scene
    from tood_lib.data.transforms import resize_and_normalize, to_tensor_image

    torch.manual_seed(seed)
    print_info(model_info(preset))
    cfg = get_preset(preset)
    model = build_model(cfg).eval()
    image, boxes, labels = draw_scene(seed, size=(480, 640))
    tensor, sx, sy = resize_and_normalize(to_tensor_image(image), cfg.data.img_scale, cfg.data.mean, cfg.data.std)
    batch = make_batch([tensor], original_sizes=[image.shape[:2]])
    start = time.perf_counter()
    dets = model.predict(batch, score_thr=0.0, max_per_img=5)[0]
    elapsed = time.perf_counter() - start
    print(f"\nbuilt-in sample: {image.shape[1]}x{image.shape[0]} scene with {len(boxes)} objects, "
          f"resized to {tensor.shape[2]}x{tensor.shape[1]}; forward + post-processing {elapsed:.1f} s")
    scores = model(batch.images).scores
    all_scores = torch.cat([s.flatten() for s in scores])
    print(f"untrained head: P_align spans {all_scores.min():.4f}..{all_scores.max():.4f} "
          f"(initialised so that every score starts near 0.01)")
    print("top-5 detections (score threshold lowered to 0 for an untrained model):")
    for box, score, label in zip(dets["boxes"], dets["scores"], dets["labels"]):
        x1, y1, x2, y2 = box.tolist()
        print(f"  class {int(label):2d}  score {score:.4f}  box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})")


def _train(args) -> None:
    from tood_lib.config import apply_overrides
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import find_coco_root
    from tood_lib.engine.trainer import Trainer

    if args.config:
        from tood_lib.ablations.grid import load_config_file

        cfg = apply_overrides(load_config_file(args.config), args.set or [])
    else:
        cfg = apply_overrides(get_preset(args.preset), args.set or [])
    root = build_builtin_dataset() if args.data_root == "builtin" else find_coco_root(args.data_root)
    trainer = Trainer(cfg, root, args.out, images_per_process=args.images_per_process, accumulate=args.accumulate,
                      amp=args.amp, device=args.device, seed=args.seed, num_workers=args.workers,
                      checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
                      deterministic=args.deterministic, eval_every=args.eval_every,
                      evaluate_at_end=not args.no_eval, load_backbone_weights=not args.no_pretrained and None)
    if args.resume:
        print(f"resumed from {args.out}/last.pth" if trainer.resume() else "nothing to resume: starting afresh")
    result = trainer.fit()
    if result is not None and trainer.is_main:
        print(result.summary_text)
        print(f"box AP: {result.box_ap:.3f}")


def _ablations(args) -> int:
    from tood_lib.ablations import checks, grid, run_one, runs
    from tood_lib.ablations.collect import collect_results
    from tood_lib.ablations.grid_lock import GridBusy
    from tood_lib.ablations.run_grid import RunsFailed, git_commit_results, run_grid

    out_root = args.out_root or runs.bench_runs_dir(args.bench)
    results = args.results or runs.RESULTS_DIR
    if args.experiments and args.action in ("run", "tables"):
        datasets = args.datasets or ["shapes"]
        selected = [runs.Run(d, e, s) for d in datasets for e in args.experiments
                    for s in (args.seeds if args.seeds is not None else runs.seeds_of(e))]
    else:
        selected = runs.grid_runs(args.grid, runs.run_outcomes(out_root))  # with the replacement runs known so far
        if args.datasets:
            selected = [r for r in selected if r.dataset in args.datasets]
    try:
        if args.action == "run":
            # (tables.py is imported only when the runs are collected, so a long grid tabulates with current code)
            run_grid(selected, jobs=args.jobs, out_root=out_root, results_dir=results, overrides=args.set,
                     analysis_images=args.analysis_images, commit=args.commit,
                     grid=None if args.experiments else args.grid, bench=args.bench)
            print(f"[ablations] results, tables and verdicts in {results}")
        elif args.action == "run-one":
            if len(args.experiments) != 1:
                raise ValueError("run-one takes exactly one experiment name")
            run = runs.Run(args.dataset, args.experiments[0], args.seed)
            record = run_one.run_experiment(run, out_root, overrides=args.set, analysis_images=args.analysis_images,
                                            finetune=args.finetune, bench=args.bench,
                                            schedule_factor=args.schedule_factor)
            print(f"box AP: {record['AP']:.3f}")
        elif args.action == "finetune-check":
            # the frozen protocol's pairs again with the backbone fine-tuned (official freezing), shapes data set
            tuned = checks.finetune_check_dir(args.results or runs.RESULTS_DIR)
            names = sorted({e for pair in checks.FINETUNE_PAIRS for e in pair})
            check = [runs.Run("shapes", e, s) for e in names for s in checks.FINETUNE_SEEDS]
            run_grid(check, jobs=args.jobs, out_root=args.out_root or checks.FINETUNE_RUNS_DIR, results_dir=tuned,
                     with_complexity=False, commit=args.commit, finetune=True)
            print(checks.finetune_check(results, tuned).to_string(index=False))
            if args.commit:
                git_commit_results(Path(results) / "finetune_check_cpu.csv", "ablations: the fine-tuning check's orders")
        elif args.action == "schedule-check":
            # Table 6's 2 x 2 for twice the bench's schedule, seeds 0-2, both data sets (issue 19)
            longer = checks.schedule_check_dir(results)
            check = [runs.Run(d, e, s) for d in args.datasets or ("shapes", "misaligned") for e in runs.TABLE6
                     for s in checks.SCHEDULE_SEEDS]
            run_grid(check, jobs=args.jobs, out_root=args.out_root or checks.schedule_runs_dir(), results_dir=longer,
                     with_complexity=False, commit=args.commit, analysis_images=args.analysis_images,
                     schedule_factor=checks.SCHEDULE_FACTOR)
            if (Path(results) / "ablation_runs_cpu.csv").is_file():
                print(checks.schedule_check(results, longer).to_string(index=False))
                if args.commit:
                    git_commit_results(Path(results) / "schedule_check_cpu.csv", "ablations: the schedule check's orders")
        elif args.action == "diagnose":
            # the ranking diagnosis and the per-level layer attention of every finished Table 6 run (issue 19)
            from tood_lib.ablations.diagnose import diagnose_grid

            print(diagnose_grid(out_root, results).to_string(index=False))
        elif args.action == "tables":
            # an explicit list of experiments tabulates those; otherwise every finished run of the full grid
            collect_results(selected if args.experiments else None, out_root, results)
            print(f"[ablations] tables written to {results}")
        elif args.action == "write-configs":
            for path in grid.write_coco_configs():
                print(path)
        else:
            for row in grid.experiment_table():
                print(f"{row['experiment']:28s} {row['description']:55s} {row['tables']}")
    except (GridBusy, RunsFailed) as err:  # another command on the folder; runs that failed (each named)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _check_data(args) -> int:
    """Check every split of a COCO-format folder; exit 1 when any has a problem that stops training."""
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.check import POLICIES, check_split
    from tood_lib.data.coco import find_coco_root

    root = build_builtin_dataset() if args.data_root == "builtin" else find_coco_root(args.data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root not found: {root}")
    stops = 0
    for split in args.splits:
        report = check_split(root, split, check_images=not args.no_images)
        print(f"[{split}] {report.table(max_examples=args.examples)}")
        stops += len(report.stops)
    if args.policies:
        print("\npolicies:")
        for defect, (policy, what) in POLICIES.items():
            print(f"  {defect:44s} {policy:7s} {what}")
    if stops:
        print(f"error: {stops} problem(s) with policy 'stop': training and evaluation refuse this data "
              "until the annotation file is fixed", file=sys.stderr)
        return 1
    return 0


def _levels(args) -> None:
    """Print the share of positives (and, with a checkpoint, of TAL's positives and of the detections) per level."""
    from pathlib import Path

    from tood_lib.ablations.bench import bench_data_root, bench_level_table
    from tood_lib.analysis.levels import assignment_audit, detection_audit, format_level_table, level_summary
    from tood_lib.config import apply_overrides, get_preset
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import CocoDetection, find_coco_root

    if args.table:
        table = bench_level_table()
        from tood_lib.ablations.grid import REPO_ROOT

        out = Path(args.out) if args.out else REPO_ROOT / "results" / "levels_bench.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False, float_format="%.4g")
        print(format_level_table(table.to_dict("records")))
        print("[levels] meets the bench's target (P3-P5 >= 10 %, P6 > 0, P3 <= 60 %): "
              + ", ".join(f"{r['data']}: {'yes' if r['meets_target'] else 'no'}" for r in table.to_dict("records")
                          if r["role"] in ("bench", "first bench")))
        print(f"[levels] written to {out}")
        return
    named = {"builtin": lambda: build_builtin_dataset(progress=False),
             "misaligned": lambda: bench_data_root("misaligned", "single_level"),
             "bench-shapes": lambda: bench_data_root("shapes", "multi_level"),
             "bench-misaligned": lambda: bench_data_root("misaligned", "multi_level")}
    root = named[args.data_root]() if args.data_root in named else find_coco_root(args.data_root)
    if args.checkpoint:
        from tood_lib.api import load_model

        model, cfg = load_model(args.checkpoint, args.preset)
    else:
        model, cfg = None, get_preset(args.preset or "tood_small")
    overrides = ([f"data.img_scale={args.size[0]},{args.size[1]}"] if args.size else []) + \
                ([f"model.anchor_scale={args.anchor_scale:g}"] if args.anchor_scale else [])
    cfg = apply_overrides(cfg, overrides)
    dataset = CocoDetection(root, args.split, cfg.data, train=False, verbose=False, max_images=args.images)
    where = f"{root.name} {args.split}, {cfg.data.img_scale[0]}x{cfg.data.img_scale[1]}, anchor {cfg.model.anchor_scale:g} strides"
    rows = [dict(data=f"{where}, {args.assigner} on ground truth",
                 **level_summary(assignment_audit(dataset, cfg, args.assigner, progress=True), cfg.model.strides))]
    if model is not None:
        # (the overrides change the ground-truth row only: the trained model keeps its own anchors)
        rows.append(dict(data=f"{where}, TAL on the model's predictions",
                         **level_summary(assignment_audit(dataset, cfg, "tal", model=model, progress=True), cfg.model.strides)))
        rows.append(dict(data=f"{where}, post-NMS detections",
                         **level_summary(detection_audit(model, dataset, progress=True), cfg.model.strides)))
    print(format_level_table(rows, cfg.model.strides))
    if args.out:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.out, index=False, float_format="%.4g")
        print(f"[levels] written to {args.out}")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _eval(args) -> None:
    from tood_lib.api import load_model
    from tood_lib.data.coco import CocoDetection, find_coco_root
    from tood_lib.engine.inference import evaluate_dataset

    model, cfg = load_model(args.checkpoint, args.preset, args.device or _default_device())
    root = find_coco_root(args.data_root)
    dataset = CocoDetection(root, args.split, cfg.data, train=False)
    result = evaluate_dataset(model, dataset, out_dir=args.out)
    print(result.summary_text)
    print(result.per_class.to_string(index=False))
    print(f"box AP: {result.box_ap:.3f}")


def _predict(args) -> int:
    """Draw detections on each image; a bad image is reported by name and skipped, and the exit
    status is 1 when any failed."""
    from pathlib import Path

    from tood_lib.analysis.plots import draw_detections
    from tood_lib.api import Detector
    from tood_lib.data.decode import DECODE_ERRORS, SIXTEEN_BIT_MODES, read_image

    detector = Detector.from_checkpoint(args.checkpoint, args.preset, device=args.device or _default_device())
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in args.images:
        try:
            if Path(path).is_dir():
                raise IsADirectoryError("is a folder, not an image")
            image, mode = read_image(path)  # the full decode: truncated files fail here
        except DECODE_ERRORS as err:  # missing, folder, not an image, truncated, over Pillow's pixel limit
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            print(f"error: {path}: cannot read it as an image ({type(err).__name__}: {reason})", file=sys.stderr)
            failed.append(path)
            continue
        det = detector(image, score_thr=args.score_thr)
        drawn = draw_detections(image, det["boxes"], det["labels"], det["scores"], detector.class_names)
        target = out_dir / f"{Path(path).stem}_detections.png"
        drawn.save(target)
        scaled = f" (16-bit image, mode {mode}: scaled to 8 bits)" if mode in SIXTEEN_BIT_MODES else ""
        print(f"{path}: {len(det['boxes'])} detections -> {target}{scaled}")
    if failed:
        print(f"error: {len(failed)} of {len(args.images)} images could not be read: {', '.join(map(str, failed))}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tood_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the model presets")
    info = sub.add_parser("info", help="parameter and MAC counts of a preset")
    info.add_argument("--preset", default="tood_r50_fpn_1x_coco")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--height", type=int, default=800)
    info.add_argument("--width", type=int, default=1280)
    info.add_argument("--no-macs", action="store_true", help="skip the forward pass that counts MACs")
    info.add_argument("--list", action="store_true", help="list the presets and exit")
    dem = sub.add_parser("demo", help="build a TOOD, run it on a built-in sample, print sizes and detections")
    dem.add_argument("--preset", default="tood_r50_fpn_1x_coco")
    dem.add_argument("--seed", type=int, default=0)
    qs = sub.add_parser("quickstart", help="the main job: train the small preset on the built-in data, evaluate")
    qs.add_argument("--out", default=None, help="run folder (default runs/quickstart)")
    qs.add_argument("--set", nargs="*", metavar="SECTION.FIELD=VALUE", help="config overrides")
    qs.add_argument("--fresh", action="store_true", help="do not resume an earlier quickstart run")
    qs.add_argument("--smoke", action="store_true",
                    help="the short mode: the same steps on a few dozen training steps (about a minute); "
                         "run folder runs/quickstart_smoke, figures in it")
    qs.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                    help="auto: bf16 autocast where the CPU has bf16 kernels, else fp32; off: fp32 everywhere")
    fg = sub.add_parser("figures", help="run the notebooks in place (with outputs) and rewrite figures/")
    fg.add_argument("--only", nargs="*", metavar="NN", help="only the notebooks whose names start with these, e.g. 01 02")
    fg.add_argument("--no-browser", action="store_true", help="skip the browser screenshot of the explorer")
    tr = sub.add_parser("train", help="train a preset (COCO or the built-in data set)")
    tr.add_argument("--preset", default="tood_small")
    tr.add_argument("--config", default=None, help="a JSON config file (preset + overrides), e.g. configs/ablations/tood.json")
    tr.add_argument("--data-root", default="builtin", help="'builtin' (default) or a COCO-format folder")
    tr.add_argument("--out", default="runs/train")
    tr.add_argument("--set", nargs="*", metavar="SECTION.FIELD=VALUE", help="config overrides, e.g. train.epochs=1")
    tr.add_argument("--images-per-process", type=int, default=None)
    tr.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimiser step")
    tr.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto")
    tr.add_argument("--device", default=None)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--workers", type=int, default=2)
    tr.add_argument("--checkpoint-every", type=int, default=0, help="also write last.pth every N steps")
    tr.add_argument("--max-steps", type=int, default=None)
    tr.add_argument("--eval-every", type=int, default=0, help="evaluate every N epochs (0: at the end only)")
    tr.add_argument("--no-eval", action="store_true")
    tr.add_argument("--no-pretrained", action="store_true", help="do not load ImageNet backbone weights")
    tr.add_argument("--deterministic", action="store_true")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")
    ab = sub.add_parser("ablations", help="the paper's ablation grid: run it at CPU scale, build tables, write COCO configs")
    ab.add_argument("action", nargs="?", default="run", choices=("run", "run-one", "tables", "finetune-check", "schedule-check",
                                                              "diagnose", "write-configs", "list"))
    ab.add_argument("experiments", nargs="*", help="experiment names (default: every experiment of --grid)")
    ab.add_argument("--grid", default="core", choices=("core", "full"),
                    help="core: the declared core claims on both data sets (about 4 h on 2 cores: 237 min measured); full: also the "
                         "rest of Tables 1-4 on the shapes")
    ab.add_argument("--datasets", nargs="*", choices=("shapes", "misaligned"), default=None,
                    help="only these built-in data sets (with experiment names: default shapes)")
    ab.add_argument("--seeds", type=int, nargs="*", default=None, help="with experiment names: these seeds")
    ab.add_argument("--dataset", default="shapes", choices=("shapes", "misaligned"), help="run-one: the data set")
    ab.add_argument("--seed", type=int, default=0, help="run-one: the seed")
    ab.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2, one thread each on 2 cores)")
    ab.add_argument("--out-root", default=None, help="run folders (default: the bench's, runs/ablations/cpu_multi_level; the first bench's runs/ablations/cpu)")
    ab.add_argument("--results", default=None, help="where the collected results go (default results/)")
    ab.add_argument("--set", nargs="*", metavar="SECTION.FIELD=VALUE", help="overrides on top of the CPU recipe")
    ab.add_argument("--analysis-images", type=int, default=100, help="val images behind each time-lapse point")
    ab.add_argument("--commit", action="store_true", help="git-commit results/ after every finished run")
    ab.add_argument("--finetune", action="store_true", help="run-one: train the backbone too (the fine-tuning check)")
    ab.add_argument("--schedule-factor", type=int, default=1,
                    help="run-one: train the bench's schedule this many times as long (the schedule check)")
    ab.add_argument("--bench", default=None, choices=("single_level", "multi_level"),
                    help="run, run-one: the bench (ablations/bench.py; default: the grid's, multi_level); each bench's "
                         "runs go to its own folder (single_level: runs/ablations/cpu, else runs/ablations/cpu_<bench>) "
                         "unless --out-root says otherwise")
    lv = sub.add_parser("levels", help="share of positives and detections per pyramid level (the level audit)")
    lv.add_argument("--data-root", default="builtin",
                    help="'builtin' (the main job's shapes), 'misaligned' (the first bench's), 'bench-shapes', "
                         "'bench-misaligned' (the multi-level bench's) or a COCO-format folder")
    lv.add_argument("--size", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                    help="the resize (img_scale); default: the preset's (1333 800 for COCO presets, 160 160 for tood_small)")
    lv.add_argument("--anchor-scale", type=float, default=None, help="anchor side in strides (default: the preset's, 8)")
    lv.add_argument("--preset", default=None, help="default: tood_small, or the checkpoint's")
    lv.add_argument("--split", default="val", choices=("train", "val"))
    lv.add_argument("--images", type=int, default=None, help="only the first N images")
    lv.add_argument("--assigner", default="atss", choices=("atss", "fcos", "max_iou", "fovea"),
                    help="the scheme run on the ground truth (default atss, k = 9)")
    lv.add_argument("--checkpoint", default=None, help="also TAL on this model's predictions, and its detections' levels")
    lv.add_argument("--table", action="store_true", help="the committed table: COCO Tiny beside the bench's data sets "
                                                         "(writes results/levels_bench.csv)")
    lv.add_argument("--out", default=None, help="also write the rows as CSV")
    pb = sub.add_parser("pretrain-backbone", help="make the small preset's shape-pretrained ResNet-18 again (about 5 min)")
    pb.add_argument("--out", default=None, help="default: weights/resnet18_builtin_shapes.pth (the shipped file)")
    cd = sub.add_parser("check-data", help="check a COCO-format data set: ids, categories, boxes, image files")
    cd.add_argument("--data-root", default=None, help="a COCO-format folder, or 'builtin' (default: $COCO_ROOT or data/coco)")
    cd.add_argument("--splits", nargs="+", default=["train", "val"], choices=("train", "val"))
    cd.add_argument("--no-images", action="store_true", help="check the annotation files only (do not decode the images)")
    cd.add_argument("--policies", action="store_true", help="also print every check and its policy")
    cd.add_argument("--examples", type=int, default=20, help="examples shown per problem (default 20)")
    ev = sub.add_parser("eval", help="COCO evaluation of a checkpoint (ours or official)")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--preset", default=None, help="the preset of an official checkpoint")
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--split", default="val")
    ev.add_argument("--out", default=None, help="folder for the detections JSON and tables")
    ev.add_argument("--device", default=None, help="default: cuda when there is a GPU, else cpu")
    pr = sub.add_parser("predict", help="draw a checkpoint's detections on images")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--preset", default=None)
    pr.add_argument("--out", default="predictions")
    pr.add_argument("--score-thr", type=float, default=0.3)
    pr.add_argument("--device", default=None)
    pr.add_argument("images", nargs="+")
    args = parser.parse_args(argv)

    try:
        if args.command == "presets" or (args.command == "info" and args.list):
            for name in PRESETS:
                print(name)
        elif args.command == "info":
            result = model_info(args.preset, args.height, args.width, with_macs=not args.no_macs)
            print(json.dumps(result, indent=2) if args.json else "", end="\n" if args.json else "")
            if not args.json:
                print_info(result)
        elif args.command == "demo":
            demo(args.preset, args.seed)
        elif args.command == "quickstart":
            from tood_lib.quickstart import run_quickstart

            run_quickstart(args.out, overrides=args.set, resume=not args.fresh, amp=args.amp, smoke=args.smoke)
        elif args.command == "figures":
            from tood_lib.notebook_runner import regenerate_figures

            regenerate_figures(args.only, browser=not args.no_browser)
        elif args.command == "train":
            _train(args)
        elif args.command == "ablations":
            return _ablations(args)
        elif args.command == "pretrain-backbone":
            from tood_lib.engine.pretrain import SHIPPED, make_shapes_backbone

            stats = make_shapes_backbone(args.out or SHIPPED)
            print(json.dumps(stats, indent=2))
            print(f"saved {args.out or SHIPPED}")
        elif args.command == "levels":
            _levels(args)
        elif args.command == "check-data":
            return _check_data(args)
        elif args.command == "eval":
            _eval(args)
        elif args.command == "predict":
            return _predict(args)
    except (ValueError, FileNotFoundError, PretrainedWeightsUnavailable, TrainingDiverged, DiskFull) as err:
        # bad input, missing data or weights, a diverged run, a full disk: say what happened, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
