"""What a training step of the CPU ablation grid costs under each protocol, and so what a run costs.

    python benchmarks/bench_ablation_protocol.py                 # the grid's recipe: TOOD, 128 px, batch 8, 1 thread
    python benchmarks/bench_ablation_protocol.py --size 192 192  # the same at the main job's resolution
    python benchmarks/bench_ablation_protocol.py --threads 2     # one run on both cores instead of two runs at once
    python benchmarks/bench_ablation_protocol.py --candidates    # the cached step at each candidate bench canvas

The protocols (issue 11's levers):

- fine-tuned: the official freezing (stage 1 frozen, stages 2-4 trained; ``ablations finetune-check``);
- frozen: the whole backbone frozen (stages and BatchNorm), its forward pass run at every step;
- frozen + cached: the grid's protocol, the backbone's outputs read from a cache (here: computed once
  before timing), so a step runs the FPN and the head only.

A step is forward, TAL assignment and losses (the TAL phase), backward and the SGD update, on a batch
of the built-in scenes. Every time is the median of ``--steps`` steps after ``--warmup``, in fp32 and
with bf16 autocast beside it. "run" multiplies by the grid's 1500 steps (12 epochs of 125), without
the six evaluations and the start-up: a real grid run also spends those (its median, 235 s, is about
70 s more than 1500 cached steps).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import synthetic_batch  # noqa: E402

GRID_STEPS = 1500  # the CPU recipe: 1000 training images, batch 8, 12 epochs


def step_ms(model, batch, epoch: int, amp: bool, steps: int, warmup: int) -> float:
    from tood_lib.model.detector import total_loss

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = model.loss(batch, epoch=epoch)
        total_loss(losses).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="tood")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="default: the grid's 128 px")
    parser.add_argument("--batch", type=int, default=None, help="default: the grid's")
    parser.add_argument("--threads", type=int, default=1, help="the grid runs two single-thread runs at once")
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-bf16", action="store_true", help="fp32 only (a CPU without bf16 kernels is slow at it)")
    parser.add_argument("--candidates", action="store_true",
                        help="the cached protocol at every candidate canvas of ablations/bench.py (its anchor scale with it)")
    args = parser.parse_args()
    if args.candidates:
        return candidates(args)

    from tood_lib.ablations.grid import experiment_config
    from tood_lib.ablations.run_one import FINETUNE_OVERRIDES
    from tood_lib.config import apply_overrides
    from tood_lib.model.detector import build_model


    torch.set_num_threads(args.threads)
    base = experiment_config(args.experiment, "cpu", "shapes")
    size = tuple(args.size or (base.data.img_scale[1], base.data.img_scale[0]))
    batch_size = args.batch or base.train.batch_size
    epoch = base.tal.warmup_epochs  # the first TAL epoch
    print(f"[bench] {args.experiment}, {size[0]}x{size[1]} px, batch {batch_size}, {args.threads} thread(s), TAL phase; "
          f"torch {torch.__version__}; median of {args.steps} steps")

    protocols = [("fine-tuned (stage 1 frozen)", FINETUNE_OVERRIDES, False),
                 ("frozen backbone, live forward", [], False),
                 ("frozen backbone, cached features", [], True)]
    rows = []
    for name, overrides, cached in protocols:
        torch.manual_seed(0)
        cfg = apply_overrides(base, overrides)
        model = build_model(cfg).train()
        batch = synthetic_batch(batch_size, size, cfg.model.num_classes, cfg)
        if cached:
            with torch.no_grad():
                batch = dataclasses.replace(batch, features=[f.detach() for f in model.backbone(batch.images)])
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        row = dict(protocol=name, trained_params=trained)
        for amp in ([False] if args.no_bf16 else [False, True]):
            row["bf16" if amp else "fp32"] = step_ms(model, batch, epoch, amp, args.steps, args.warmup)
        rows.append(row)

    first = rows[0]["fp32"]
    header = f"{'protocol':34s} {'trained params':>14s} {'fp32 ms':>8s} {'run min':>8s} {'x':>5s}"
    header += "" if args.no_bf16 else f" {'bf16 ms':>8s} {'run min':>8s}"
    print(header)
    for r in rows:
        line = (f"{r['protocol']:34s} {r['trained_params'] / 1e6:13.2f}M {r['fp32']:8.0f} "
                f"{r['fp32'] * GRID_STEPS / 60000:8.1f} {first / r['fp32']:5.2f}")
        if not args.no_bf16:
            line += f" {r['bf16']:8.0f} {r['bf16'] * GRID_STEPS / 60000:8.1f}"
        print(line)
    print(f"[bench] 'run min' = {GRID_STEPS} steps x the median step, without evaluation; 'x' = speed-up over fine-tuning (fp32)")


def candidates(args) -> None:
    """The grid's protocol (frozen, cached) at each candidate canvas of the bench, same proportions."""
    from tood_lib.ablations.bench import CANDIDATES
    from tood_lib.ablations.grid import experiment_config
    from tood_lib.config import apply_overrides
    from tood_lib.model.detector import build_model


    torch.set_num_threads(args.threads)
    print(f"[bench] {args.experiment}, frozen backbone with cached features, {args.threads} thread(s), TAL phase; "
          f"torch {torch.__version__}; median of {args.steps} steps")
    print(f"{'canvas':>7s} {'anchor':>7s} {'fp32 ms':>8s} {'run min':>8s}" + ("" if args.no_bf16 else f" {'bf16 ms':>8s} {'run min':>8s}"))
    for canvas, scale in CANDIDATES.items():
        torch.manual_seed(0)
        cfg = apply_overrides(experiment_config(args.experiment, "cpu", "shapes"),
                              [f"data.img_scale={canvas},{canvas}", f"model.anchor_scale={scale}"])
        model = build_model(cfg).train()
        batch = synthetic_batch(args.batch or cfg.train.batch_size, (canvas, canvas), cfg.model.num_classes, cfg)
        with torch.no_grad():
            batch = dataclasses.replace(batch, features=[f.detach() for f in model.backbone(batch.images)])
        line = f"{canvas:5d}px {scale:7g}"
        for amp in ([False] if args.no_bf16 else [False, True]):
            ms = step_ms(model, batch, cfg.tal.warmup_epochs, amp, args.steps, args.warmup)
            line += f" {ms:8.0f} {ms * GRID_STEPS / 60000:8.1f}"
        print(line, flush=True)
    print(f"[bench] 'run min' = {GRID_STEPS} steps x the median step, without evaluation")


if __name__ == "__main__":
    main()
