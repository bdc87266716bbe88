"""Training-step throughput and peak memory of a preset.

    python benchmarks/bench_train_step.py                          # R-50, 2 images of 320x320, CPU
    python benchmarks/bench_train_step.py --size 800 1333 --amp bf16 --batch 4   # on a GPU

One step = forward + assignment + losses + backward + SGD update on a fixed synthetic batch (the
built-in scene generator), timed after warm-up steps. Prints the median step time, images/s and
peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak resident set size,
which includes PyTorch itself).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from tood_lib.batch import make_batch
from tood_lib.config import build_model, get_preset
from tood_lib.data.synthetic import draw_scene
from tood_lib.data.transforms import resize_and_normalize, to_tensor_image
from tood_lib.model.detector import total_loss


def synthetic_batch(batch: int, size: tuple[int, int], num_classes: int, cfg):
    images, boxes, labels = [], [], []
    for i in range(batch):
        pixels, b, lab = draw_scene(i, size=size)
        tensor, _, _ = resize_and_normalize(to_tensor_image(pixels), (max(size), min(size)), cfg.data.mean, cfg.data.std)
        images.append(tensor)
        boxes.append(torch.from_numpy(b))
        labels.append(torch.from_numpy(lab) % num_classes)
    return make_batch(images, boxes, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tood_r50_fpn_1x_coco")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--epoch", type=int, default=4, help="4+: TAL phase, 0-3: ATSS warm-up")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    cfg = get_preset(args.preset)
    model = build_model(cfg).to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    batch = synthetic_batch(args.batch, tuple(args.size), cfg.model.num_classes, cfg).to(device)
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model.loss(batch, epoch=args.epoch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total_loss(losses)).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (CUDA, max allocated)"
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS)"
    print(f"{args.preset}  batch {args.batch} x {args.size[0]}x{args.size[1]}  {device.type}  amp={args.amp}  "
          f"threads={torch.get_num_threads()}")
    print(f"  step median {median * 1000:.0f} ms over {args.steps} steps  ->  {args.batch / median:.2f} images/s")
    print(f"  peak memory {memory}")
    print(f"  last losses: " + ", ".join(f"{k}={float(v):.4f}" for k, v in losses.items() if k.startswith("loss")))


if __name__ == "__main__":
    main()
