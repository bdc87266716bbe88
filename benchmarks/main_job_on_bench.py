"""Can the main command move to the multi-level shapes? (issue 19, item 2)

The bar: the main command's recipe on the bench's multi-level shapes trains in at most 10 minutes of
fp32 on 2 cores and reaches box AP >= 0.45 on their val split. This trains that recipe (``tood_small``:
the shape-pretrained ResNet-18 fine-tuned with stage 1 and BatchNorm frozen, batch 8, LR 0.02, the
main command's 10 epochs) on ``data/bench_shapes`` at a canvas with the bench's proportions (anchor
side / image as at 128 px with 2-stride anchors: ``bench.CANDIDATES``), evaluates it, and records the
result in ``results/main_job_on_bench.json`` (one entry per canvas and schedule; a later run of the same
key replaces it).

    python benchmarks/main_job_on_bench.py                   # 160 px, 10 epochs, fp32, 2 threads
    python benchmarks/main_job_on_bench.py --size 128 --epochs 14
    python benchmarks/main_job_on_bench.py --note "shared the machine with the grid"

The wall time counts only when the machine was otherwise quiet: say so with ``--note`` when it was not.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tood_lib.ablations.bench import CANDIDATES, bench_data_root  # noqa: E402
from tood_lib.config import apply_overrides, get_preset  # noqa: E402
from tood_lib.engine.atomic import atomic_write_text  # noqa: E402
from tood_lib.engine.trainer import Trainer  # noqa: E402

RESULT = ROOT / "results" / "main_job_on_bench.json"
BAR = dict(minutes=10.0, box_ap=0.45)  # issue 19: fp32, 2 cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=160, choices=sorted(CANDIDATES))
    parser.add_argument("--epochs", type=int, default=10, help="the LR drops x10 for the last epoch, as in the main command")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="run folder (default runs/main_job_on_bench_<size>_<epochs>)")
    parser.add_argument("--note", default="", help="e.g. that another job shared the machine (then the time does not count)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"data.img_scale={args.size},{args.size}", f"model.anchor_scale={CANDIDATES[args.size]:g}",
                 f"train.epochs={args.epochs}", f"train.lr_steps={args.epochs - 1}"]
    cfg = apply_overrides(get_preset("tood_small"), overrides)
    out = Path(args.out or ROOT / "runs" / f"main_job_on_bench_{args.size}_{args.epochs}")
    start = time.perf_counter()
    trainer = Trainer(cfg, bench_data_root("shapes", progress=True), out, amp="off", evaluate_at_end=False)
    resumed = (out / "last.pth").is_file() and trainer.resume()  # then the wall time covers only the rest
    trainer.fit()
    result = trainer.evaluate()
    minutes = (time.perf_counter() - start) / 60
    key = f"{args.size}px_{args.epochs}ep"
    record = dict(preset=cfg.name, overrides=overrides, data="data/bench_shapes", precision="fp32", threads=args.threads,
                  minutes=round(minutes, 2), resumed=bool(resumed),
                  **{k: round(float(v), 4) for k, v in result.stats.items()}, note=args.note,
                  meets_ap=float(result.stats["AP"]) >= BAR["box_ap"], measured=time.strftime("%Y-%m-%d"))
    table = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    table["bar"] = BAR
    table.setdefault("runs", {})[key] = record
    atomic_write_text(RESULT, json.dumps(table, indent=2) + "\n")
    print(f"{key}: box AP {record['AP']:.3f} (bar {BAR['box_ap']}), {minutes:.1f} min fp32 on {args.threads} threads "
          f"-> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
