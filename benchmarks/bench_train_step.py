"""Training-step throughput and peak memory of a preset, optionally against an older checkout.

    python benchmarks/bench_train_step.py                                   # R-50, 2 images of 320x320, CPU
    python benchmarks/bench_train_step.py --preset tood_small --batch 8 --size 192 192 --amp off bf16
    python benchmarks/bench_train_step.py --size 800 1333 --amp bf16 --batch 4           # on a GPU
    # before / after, side by side, in one run: the old code from a git worktree
    git worktree add /tmp/tood_before <commit>
    python benchmarks/bench_train_step.py --preset tood_small --batch 8 --size 192 192 --amp off bf16 \
        --baseline /tmp/tood_before --rounds 3

One step = forward + assignment + losses + backward + SGD update on a fixed synthetic batch (the
built-in scene generator), timed after warm-up steps. Prints the median
step time, images/s and peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the peak resident
set size of the process, which includes PyTorch itself).

With ``--baseline DIR`` every (code, amp) pair runs in its own process, the two checkouts taking
turns ``--rounds`` times (the median of the rounds is reported), and a numerical check compares the
two: the same initialisation and batch, one fp32 step, the losses and every parameter's gradient.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


def synthetic_batch(batch: int, size: tuple[int, int], num_classes: int, cfg):
    from tood_lib.batch import make_batch
    from tood_lib.data.synthetic import draw_scene
    from tood_lib.data.transforms import resize_and_normalize, to_tensor_image

    images, boxes, labels = [], [], []
    for i in range(batch):
        pixels, b, lab = draw_scene(i, size=size)
        tensor, _, _ = resize_and_normalize(to_tensor_image(pixels), (max(size), min(size)), cfg.data.mean, cfg.data.std)
        images.append(tensor)
        boxes.append(torch.from_numpy(b))
        labels.append(torch.from_numpy(lab) % num_classes)
    return make_batch(images, boxes, labels)


def build(args, device):
    from tood_lib.config import get_preset
    from tood_lib.model.detector import build_model


    torch.manual_seed(args.seed)
    cfg = get_preset(args.preset)
    model = build_model(cfg).to(device).train()
    batch = synthetic_batch(args.batch, tuple(args.size), cfg.model.num_classes, cfg).to(device)
    return model, batch


def time_steps(args) -> dict:
    """One configuration in this process -> its numbers."""
    from tood_lib.model.detector import total_loss

    device = torch.device(args.device)
    model, batch = build(args, device)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp[0]]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, finite = [], True
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model.loss(batch, epoch=args.epoch)
        loss = total_loss(losses)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        finite = finite and bool(torch.isfinite(loss.detach()))
    median = statistics.median(times)
    if device.type == "cuda":
        memory_gib, memory_kind = torch.cuda.max_memory_allocated(device) / 2**30, "CUDA max allocated"
    else:
        memory_gib, memory_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"
    return dict(preset=args.preset, batch=args.batch, size=list(args.size), device=device.type, amp=args.amp[0],
                threads=torch.get_num_threads(), steps=args.steps, step_ms=1000 * median,
                images_per_s=args.batch / median, peak_memory_gib=memory_gib, memory_kind=memory_kind,
                loss_finite=finite, losses={k: float(v.detach()) for k, v in losses.items() if k.startswith("loss")},
                code=str(Path(sys.modules["tood_lib"].__file__).resolve().parents[1]))


def gradients(args) -> dict:
    """One fp32 step's losses and gradients (for the before/after check)."""
    from tood_lib.model.detector import total_loss

    device = torch.device(args.device)
    model, batch = build(args, device)
    losses = model.loss(batch, epoch=args.epoch)
    total_loss(losses).backward()
    return dict(losses={k: v.detach().float().cpu() for k, v in losses.items() if k.startswith("loss")},
                grads={n: p.grad.detach().float().cpu().contiguous() for n, p in model.named_parameters()
                       if p.grad is not None})


def _child(code_root: Path, argv: list[str]) -> str:
    """Run this script in a fresh process with ``code_root``'s tood_lib first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code_root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    done = subprocess.run([sys.executable, str(HERE), *argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child ({code_root}) failed:\n{done.stderr[-3000:]}")
    return done.stdout


def numerical_check(codes: dict[str, Path], argv: list[str]) -> dict:
    """One fp32 step of each checkout on the same init and batch -> how far losses and gradients differ."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, root in codes.items():
            files[name] = Path(tmp) / f"{name}.pt"
            _child(root, argv + ["--amp", "off", "--child-grads", str(files[name])])
        before, after = (torch.load(files[n]) for n in ("before", "after"))
    loss_diff = max(abs(float(before["losses"][k] - after["losses"][k])) for k in before["losses"])
    names = sorted(set(before["grads"]) & set(after["grads"]))
    worst, worst_name = 0.0, None
    for n in names:
        g0, g1 = before["grads"][n], after["grads"][n]
        rel = float((g0 - g1).abs().max() / g0.abs().max().clamp(min=1e-12))
        if rel > worst:
            worst, worst_name = rel, n
    return dict(epoch=int(argv[argv.index("--epoch") + 1]), loss_max_abs_diff=loss_diff, gradients=len(names),
                grad_max_rel_diff=worst, grad_worst=worst_name,
                unmatched=sorted(set(before["grads"]) ^ set(after["grads"])))


def compare(args) -> None:
    """Before (--baseline) and after (this checkout), side by side, then the numerical check."""
    common = ["--preset", args.preset, "--batch", str(args.batch), "--size", *map(str, args.size),
              "--steps", str(args.steps), "--warmup", str(args.warmup), "--epoch", str(args.epoch),
              "--device", args.device, "--seed", str(args.seed)]
    codes = {"before": Path(args.baseline).resolve(), "after": REPO}
    results: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.rounds):
        for amp in args.amp:
            for name, root in codes.items():
                out = _child(root, common + ["--amp", amp, "--child-json"])
                results.setdefault((name, amp), []).append(json.loads(out.strip().splitlines()[-1]))
                r = results[(name, amp)][-1]
                print(f"  round {round_ + 1}/{args.rounds}  {name:6s} amp={amp:4s}  {r['step_ms']:7.0f} ms  "
                      f"{r['images_per_s']:6.2f} images/s", flush=True)
    print(f"\n{args.preset}, batch {args.batch} x {args.size[0]}x{args.size[1]}, {args.device}, "
          f"{results[('after', args.amp[0])][0]['threads']} threads, median of {args.rounds} rounds "
          f"(each the median of {args.steps} steps)")
    print("| amp | before images/s | after images/s | speed-up | before peak GiB | after peak GiB |")
    print("|---|---:|---:|---:|---:|---:|")
    table = []
    for amp in args.amp:
        before = statistics.median(r["images_per_s"] for r in results[("before", amp)])
        after = statistics.median(r["images_per_s"] for r in results[("after", amp)])
        mem_b = max(r["peak_memory_gib"] for r in results[("before", amp)])
        mem_a = max(r["peak_memory_gib"] for r in results[("after", amp)])
        print(f"| {'fp32' if amp == 'off' else amp} | {before:.2f} | {after:.2f} | {after / before:.2f}x | "
              f"{mem_b:.2f} | {mem_a:.2f} |")
        table.append(dict(amp=amp, before_images_per_s=before, after_images_per_s=after, speedup=after / before,
                          before_peak_gib=mem_b, after_peak_gib=mem_a))

    checks = []
    for epoch in sorted({0, args.epoch}):  # the ATSS warm-up (fixed assignment) and the phase benchmarked
        argv = list(common)
        argv[argv.index("--epoch") + 1] = str(epoch)
        checks.append(numerical_check(codes, argv))
        c = checks[-1]
        print(f"\nnumerical check, epoch {epoch} ({'ATSS warm-up' if epoch == 0 else 'the benchmarked phase'}; fp32, "
              f"one step, same init and batch): losses differ by at most {c['loss_max_abs_diff']:.2e}; "
              f"{c['gradients']} gradients, the largest difference relative to its tensor's largest entry is "
              f"{c['grad_max_rel_diff']:.2e} ({c['grad_worst']}); parameters without a counterpart: "
              f"{c['unmatched'] or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(table=table, rounds={f"{k[0]}_{k[1]}": v for k, v in results.items()},
                           numerical_checks=checks), f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tood_r50_fpn_1x_coco")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--epoch", type=int, default=4, help="4+: TAL phase, 0-3: ATSS warm-up")
    parser.add_argument("--amp", nargs="+", choices=("off", "bf16", "fp16"), default=["off"],
                        help="one or more; off = fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", default=None, help="an older checkout (e.g. a git worktree) to compare with")
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: turns each checkout takes")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--require-finite", action="store_true", help="exit 1 if a loss was not finite")
    parser.add_argument("--child-json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-grads", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.baseline:
        compare(args)
        return
    if args.child_grads:
        torch.save(gradients(args), args.child_grads)
        return
    if args.child_json:
        print(json.dumps(time_steps(args)))
        return
    rows = []
    for amp in args.amp:
        if len(args.amp) == 1:
            r = time_steps(args)
        else:  # each in its own process, so that one's peak memory is not another's
            argv = [a for a in sys.argv[1:] if a not in args.amp and a != "--amp" and a != "--require-finite"]
            r = json.loads(_child(REPO, argv + ["--amp", amp, "--child-json"]).strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['preset']}  batch {r['batch']} x {r['size'][0]}x{r['size'][1]}  {r['device']}  amp={amp}  "
              f"threads={r['threads']}")
        print(f"  step median {r['step_ms']:.0f} ms over {r['steps']} steps  ->  {r['images_per_s']:.2f} images/s")
        print(f"  peak memory {r['peak_memory_gib']:.2f} GiB ({r['memory_kind']})")
        print(f"  loss finite: {r['loss_finite']}; last losses: "
              + ", ".join(f"{k}={v:.4f}" for k, v in r["losses"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows if len(rows) > 1 else rows[0], f, indent=2)
    if args.require_finite and not all(r["loss_finite"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
