"""Time and memory of the batched task-aligned assigner against two baselines.

    python benchmarks/bench_assigner.py               # full table (a few minutes on 2 cores)
    python benchmarks/bench_assigner.py --rounds 3    # steadier numbers on a shared machine
    python benchmarks/bench_assigner.py --quick       # batch 2 and 8 only, fewer repeats

Compared, on identical inputs:
- ``ours``: :func:`tood_lib.assign.task_aligned_assign` (t̂ included);
- ``reference``: the per-image, per-gt loop transcription of the original code in
  ``tood_lib/assign/reference.py`` (the way the official TOOD computes it). Before timing, every case
  checks that both give identical gt_index / labels / positives and allclose metric, iou, target;
- ``ultralytics``: ``ultralytics.utils.tal.TaskAlignedAssigner`` (topk 13, α 1, β 6), if installed.
  Its rule differs from TOOD's (CIoU instead of IoU, inside-the-box test before the top-k, cell-centre
  points), so only its cost is comparable. It also returns a dense (B, A, K) target tensor, which ours
  leaves to the loss; the ``ours+dense`` column adds building that tensor to our time.

Inputs: 1024×1024 images, strides 8-128 (21,824 priors), K = 80 classes, G boxes per image with sides
log-uniform in [16, 512] px. Each prior's predicted box is a jittered copy of a gt containing its
anchor point (if any), otherwise a box of a few strides around the point; scores are uniform in [0, 1).

Time: median wall-clock of several calls after a warm-up, torch.set_num_threads(2), each
implementation in its own process; with --rounds, the median over rounds of those medians.
Memory: peak resident-set growth of one call, in a fresh process per measurement. glibc is told
(MALLOC_MMAP_THRESHOLD_) to serve every block above 64 KiB by mmap, so freed tensors go back to the
OS and RSS tracks live tensor memory; the kernel's high-water mark (VmHWM) is reset through
/proc/self/clear_refs just before the call and read right after. The number is therefore "extra
memory the call needed at its worst", inputs excluded. Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tood_lib.assign import task_aligned_assign  # noqa: E402
from tood_lib.assign.reference import task_aligned_assign_reference  # noqa: E402
from tood_lib.model.priors import multilevel_priors, prior_points  # noqa: E402

IMAGE = (1024, 1024)
STRIDES = (8, 16, 32, 64, 128)
NUM_CLASSES = 80


def make_inputs(batch: int, num_boxes: int, seed: int = 0):
    """Realistic-looking inputs: (scores, pred_boxes, priors, gt_boxes, gt_labels, gt_mask)."""
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE
    sizes = [((h + s - 1) // s, (w + s - 1) // s) for s in STRIDES]
    levels = multilevel_priors(sizes, STRIDES)
    priors = torch.cat(levels)
    strides = torch.cat([torch.full((len(p),), float(s)) for p, s in zip(levels, STRIDES)])
    A = priors.shape[0]
    points = prior_points(priors)                                               # (A, 2)

    # gt boxes: log-uniform sides in [16, 512], anywhere in the image.
    side = torch.exp(torch.empty(batch, num_boxes, 2).uniform_(torch.log(torch.tensor(16.)).item(),
                                                                 torch.log(torch.tensor(512.)).item(), generator=g))
    lo = torch.rand(batch, num_boxes, 2, generator=g) * (torch.tensor([w, h]) - side)
    gt_boxes = torch.cat((lo, lo + side), dim=-1)
    gt_labels = torch.randint(0, NUM_CLASSES, (batch, num_boxes), generator=g)
    gt_mask = torch.ones(batch, num_boxes, dtype=torch.bool)

    # Predicted boxes: a prior inside a gt predicts that gt (the last one listed, if several), jittered
    # by up to ±15 % of its size per side; other priors predict 2-6 strides around their point.
    pred = torch.empty(batch, A, 4)
    ext = strides[:, None] * (1 + 2 * torch.rand(batch, A, 4, generator=g))
    pred[..., :2] = points - ext[..., :2]
    pred[..., 2:] = points + ext[..., 2:]
    for b in range(batch):
        x, y = points[:, 0:1], points[:, 1:2]
        gb = gt_boxes[b]
        inside = (x > gb[:, 0]) & (x < gb[:, 2]) & (y > gb[:, 1]) & (y < gb[:, 3])      # (A, G)
        has = inside.any(1)
        owner = (inside * torch.arange(1, num_boxes + 1)).argmax(1)
        box = gb[owner[has]]
        size = (box[:, 2:] - box[:, :2]).repeat(1, 2)
        pred[b, has] = box + (torch.rand(int(has.sum()), 4, generator=g) - 0.5) * 0.3 * size
    scores = torch.rand(batch, A, NUM_CLASSES, generator=g)
    return scores, pred, priors, gt_boxes, gt_labels, gt_mask


def _ultralytics():
    try:
        from ultralytics.utils.tal import TaskAlignedAssigner
    except ImportError:
        return None
    return TaskAlignedAssigner(topk=13, num_classes=NUM_CLASSES, alpha=1.0, beta=6.0)


def make_call(impl: str, inputs):
    scores, pred, priors, gt_boxes, gt_labels, gt_mask = inputs
    if impl == "ours":
        return lambda: task_aligned_assign(scores, pred, priors, gt_boxes, gt_labels, gt_mask)
    if impl == "ours+dense":
        def call():
            # What a loss needs next and Ultralytics returns: the (B, A, K) soft one-hot target.
            a = task_aligned_assign(scores, pred, priors, gt_boxes, gt_labels, gt_mask)
            dense = scores.new_zeros(scores.shape)
            dense.scatter_(2, a.labels.clamp(min=0)[..., None], a.target[..., None])
            return a, dense
        return call
    if impl == "reference":
        return lambda: task_aligned_assign_reference(scores, pred, priors, gt_boxes, gt_labels, gt_mask)
    if impl == "ultralytics":
        assigner = _ultralytics()
        points = prior_points(priors)
        return lambda: assigner(scores, pred, points, gt_labels[..., None], gt_boxes, gt_mask[..., None].float())
    raise ValueError(impl)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def worker(impl: str, batch: int, boxes: int, mode: str, repeats: int) -> dict:
    torch.set_num_threads(2)
    inputs = make_inputs(batch, boxes)
    call = make_call(impl, inputs)
    call()                                                   # warm-up: lazy inits, thread pool
    if mode == "memory":
        base = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                     # reset the high-water mark to current RSS
        result = call()
        peak = _status_kb("VmHWM")
        del result
        return {"peak_mb": (peak - base) / 1024}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times)}


def check(batch: int, boxes: int) -> dict:
    """Ours vs the reference on the benchmark inputs; raises on any difference."""
    torch.set_num_threads(2)
    inputs = make_inputs(batch, boxes)
    ours = make_call("ours", inputs)()
    ref = make_call("reference", inputs)()
    assert torch.equal(ours.gt_index, ref.gt_index), "gt_index differs from the reference"
    assert torch.equal(ours.labels, ref.labels), "labels differ from the reference"
    assert torch.equal(ours.positive, ref.positive), "positives differ from the reference"
    for name in ("metric", "iou", "target"):
        assert torch.allclose(getattr(ours, name), getattr(ref, name), rtol=1e-5, atol=1e-7), f"{name} differs"
    return {"positives": int(ours.positive.sum())}


def run_worker(args: list[str], env=None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 2 and 8 only, 3 repeats")
    parser.add_argument("--batches", type=int, nargs="*", default=None)
    parser.add_argument("--boxes", type=int, nargs="*", default=[10, 100])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per worker process")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every implementation this many times, interleaved, and keep the median "
                             "(other load on the machine then hits all of them alike)")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "BATCH", "BOXES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        impl, batch, boxes, mode = args.worker
        if mode == "check":
            print(json.dumps(check(int(batch), int(boxes))))
        else:
            print(json.dumps(worker(impl, int(batch), int(boxes), mode, args.repeats or 5)))
        return

    batches = args.batches or ([2, 8] if args.quick else [2, 8, 16])
    repeats = args.repeats or (3 if args.quick else 7)
    impls = ["ours", "ours+dense", "reference"]
    if _ultralytics() is None:
        print("ultralytics is not installed: skipping that baseline "
              "(pip install ultralytics; it is not a dependency of tood_lib).\n")
    else:
        impls.append("ultralytics")
    mem_env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    A = sum(((IMAGE[0] + s - 1) // s) * ((IMAGE[1] + s - 1) // s) for s in STRIDES)
    print(f"A = {A} priors, K = {NUM_CLASSES}, torch {torch.__version__}, 2 threads; time = median of "
          f"{repeats} calls x {args.rounds} round(s) (ms), mem = peak RSS growth of one call (MB)\n")
    header = f"{'B':>3} {'G':>4} {'pos':>6} |" + "".join(f" {i + ' ms':>16} {'MB':>6} |" for i in impls)
    print(header + "  ours vs ref / vs ultra (time)")
    print("-" * len(header))
    for batch in batches:
        for boxes in args.boxes:
            info = run_worker(["--worker", "ours", str(batch), str(boxes), "check"])
            times = {impl: [] for impl in impls}
            for _ in range(args.rounds):
                for impl in impls:
                    t = run_worker(["--worker", impl, str(batch), str(boxes), "time", "--repeats", str(repeats)])
                    times[impl].append(t["median_ms"])
            row = {}
            for impl in impls:
                m = run_worker(["--worker", impl, str(batch), str(boxes), "memory"], env=mem_env)
                row[impl] = (statistics.median(times[impl]), m["peak_mb"])
            line = f"{batch:>3} {boxes:>4} {info['positives']:>6} |"
            line += "".join(f" {row[i][0]:>16.1f} {row[i][1]:>6.0f} |" for i in impls)
            ratios = f"  {row['ours'][0] / row['reference'][0]:.2f}"
            if "ultralytics" in row:
                ratios += f" / {row['ours'][0] / row['ultralytics'][0]:.2f}"
            print(line + ratios, flush=True)


if __name__ == "__main__":
    main()
