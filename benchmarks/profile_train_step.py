"""Where a training step's time goes: data loading, backbone, FPN, head, assigner, losses, backward
(split by part), optimiser; and how close the arithmetic runs to the CPU's matrix-multiply peak.

    python benchmarks/profile_train_step.py                         # tood_small, batch 8 at 192 px, fp32, TAL phase
    python benchmarks/profile_train_step.py --amp bf16 --epoch 0    # bf16 autocast, ATSS warm-up phase

The forward parts are timed one after the other on the real batch. The backward is split by
difference: the full backward; the backward with the backbone's outputs detached (no backbone
backward); with the FPN's outputs detached too (the head and the losses only). Data loading is the
built-in training split read, augmented and collated as the Trainer's loader does (one process).
Every number is the median over ``--steps`` repetitions after ``--warmup``.

The FLOP count of a whole step (forward + backward) comes from torch.utils.flop_counter; the peak
is a large fp32 (or bf16) matrix product on the same threads.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import synthetic_batch  # noqa: E402


def median_ms(fn, steps: int, warmup: int) -> float:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def matmul_peak_gflops(dtype) -> float:
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    ms = median_ms(lambda: a @ b, 5, 2)
    return 2 * 2048**3 / (ms / 1000) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tood_small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="default: the preset's training scale")
    parser.add_argument("--epoch", type=int, default=4, help="4+ (1+ for tood_small): TAL; 0: the ATSS warm-up")
    parser.add_argument("--amp", choices=("off", "bf16"), default="off")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    from tood_lib.config import get_preset
    from tood_lib.criterion import assign, compute_losses, scheme
    from tood_lib.model.detector import build_model
    from tood_lib.model.detector import total_loss

    torch.manual_seed(0)
    cfg = get_preset(args.preset)
    size = tuple(args.size or (cfg.data.img_scale[1], cfg.data.img_scale[0]))
    model = build_model(cfg).train()
    batch = synthetic_batch(args.batch, size, cfg.model.num_classes, cfg)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    dtype = torch.bfloat16 if args.amp == "bf16" else None
    autocast = lambda: torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)  # noqa: E731
    method = scheme(cfg.tal, args.epoch)
    rows: list[tuple[str, float]] = []

    # data loading: the built-in split through the real dataset and collate
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import CocoDetection, collate

    dataset = CocoDetection(build_builtin_dataset(progress=False), "train", cfg.data, train=True, seed=0)
    dataset.set_epoch(0)
    counter = iter(range(10**9))
    rows.append(("data loading (read, augment, collate)", median_ms(
        lambda: collate([dataset[(next(counter) * args.batch + i) % len(dataset)] for i in range(args.batch)]),
        args.steps, args.warmup)))

    # forward, part by part
    with autocast():
        rows.append(("forward: backbone", median_ms(lambda: model.backbone(batch.images), args.steps, args.warmup)))
        feats = model.backbone(batch.images)
        rows.append(("forward: FPN", median_ms(lambda: model.neck(feats), args.steps, args.warmup)))
        pyramid = model.neck(feats)
        rows.append(("forward: T-Head" if cfg.model.head == "t_head" else "forward: head",
                     median_ms(lambda: model.head(pyramid), args.steps, args.warmup)))
        out = model.head(pyramid)
    assign_ms = median_ms(lambda: assign(out, batch, cfg.tal, method), args.steps, args.warmup)
    rows.append((f"assigner ({method})", assign_ms))
    losses_ms = median_ms(lambda: compute_losses(out, batch, cfg.tal, args.epoch), args.steps, args.warmup)
    rows.append(("losses and targets", max(losses_ms - assign_ms, 0.0)))

    # backward, split by difference
    def backward(detach_at: str | None):
        def run():
            with autocast():
                f = model.backbone(batch.images)
                if detach_at == "backbone":
                    f = [x.detach() for x in f]
                p = model.neck(f)
                if detach_at == "fpn":
                    p = [x.detach() for x in p]
                o = model.head(p)
            losses, _ = compute_losses(o, batch, cfg.tal, args.epoch)
            start = time.perf_counter()
            total_loss(losses).backward()
            run.last = time.perf_counter() - start
            optimizer.zero_grad(set_to_none=True)

        times = []
        for i in range(args.warmup + args.steps):
            run()
            if i >= args.warmup:
                times.append(run.last)
        return 1000 * statistics.median(times)

    full, no_backbone, head_only = backward(None), backward("backbone"), backward("fpn")
    rows.append(("backward: backbone", full - no_backbone))
    rows.append(("backward: FPN", no_backbone - head_only))
    rows.append(("backward: head and losses", head_only))

    def optimizer_step():
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        optimizer_step.last = time.perf_counter() - start

    times = []
    for i in range(args.warmup + args.steps):
        optimizer_step()
        if i >= args.warmup:
            times.append(optimizer_step.last)
    rows.append(("optimiser (SGD, momentum, weight decay)", 1000 * statistics.median(times)))

    # one whole step, timed as the Trainer runs it (data loading excluded), and its FLOPs
    def step():
        with autocast():
            losses = model.loss(batch, epoch=args.epoch)
        optimizer.zero_grad(set_to_none=True)
        total_loss(losses).backward()
        optimizer.step()

    step_ms = median_ms(step, args.steps, args.warmup)
    from torch.utils.flop_counter import FlopCounterMode

    counter_mode = FlopCounterMode(display=False)
    with counter_mode:
        step()
    flops = counter_mode.get_total_flops()
    peak = matmul_peak_gflops(torch.bfloat16 if dtype else torch.float32)

    total = sum(ms for _, ms in rows)
    print(f"{cfg.name}: batch {args.batch} x {size[0]}x{size[1]}, {'fp32' if dtype is None else 'bf16 autocast'}, "
          f"{method} phase, {torch.get_num_threads()} threads, median of {args.steps}")
    print("| part | ms | share |\n|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {100 * ms / total:.0f} % |")
    print(f"| sum of the parts | {total:.1f} | |")
    print(f"\nwhole step (without data loading): {step_ms:.0f} ms = {args.batch / step_ms * 1000:.2f} images/s")
    print(f"arithmetic: {flops / 1e9:.1f} GFLOP per step (forward + backward) -> {flops / step_ms / 1e6:.0f} GFLOP/s; "
          f"a 2048^3 matrix product runs at {peak:.0f} GFLOP/s here "
          f"({100 * flops / step_ms / 1e6 / peak:.0f} % of it over the whole step)")


if __name__ == "__main__":
    main()
