"""Inference latency per image: the model's forward pass and post-processing (top-k, NMS), one image
at a time, as ``Detector`` runs it.

    python benchmarks/bench_inference.py                                    # R-50, 800x1333, CPU or GPU
    python benchmarks/bench_inference.py --checkpoint runs/small/last.pth --size 192 192 --images 50

Images are built-in scenes drawn at the given size (the resize to the model's scale is not timed,
decoding neither). Prints the median and 90th-percentile latency in ms; ``--json FILE`` also writes them.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from tood_lib.api import load_model
from tood_lib.batch import make_batch
from tood_lib.config import get_preset
from tood_lib.data.synthetic import draw_scene
from tood_lib.data.transforms import resize_and_normalize, to_tensor_image
from tood_lib.model.detector import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tood_r50_fpn_1x_coco", help="the model when no --checkpoint is given")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint of ours (its config decides the model)")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.checkpoint:
        model, cfg = load_model(args.checkpoint, device=str(device))
    else:
        cfg = get_preset(args.preset)
        model = build_model(cfg).to(device).eval()
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    times = []
    for i in range(args.warmup + args.images):
        pixels, _, _ = draw_scene(i, size=tuple(args.size))
        image, _, _ = resize_and_normalize(to_tensor_image(pixels), cfg.data.img_scale, cfg.data.mean, cfg.data.std)
        batch = make_batch([image], original_sizes=[tuple(args.size)], size_divisor=cfg.data.size_divisor).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            detections = model.predict(batch)[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    result = dict(model=cfg.name, size=list(args.size), input_scale=list(cfg.data.img_scale), device=str(device),
                  amp=args.amp, images=args.images, median_ms=1000 * statistics.median(times),
                  p90_ms=1000 * times[math.ceil(0.9 * (len(times) - 1))], last_detections=len(detections["scores"]))
    print(f"{cfg.name}  {args.size[0]}x{args.size[1]} images (model scale {cfg.data.img_scale})  {device}  amp={args.amp}")
    print(f"  latency per image: median {result['median_ms']:.1f} ms, p90 {result['p90_ms']:.1f} ms "
          f"over {args.images} images ({1000 / result['median_ms']:.1f} images/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
