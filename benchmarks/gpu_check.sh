#!/usr/bin/env bash
# The COCO-on-GPU path in one script (at most about 8 minutes on one GPU):
#   1. R-50 training steps at 1333x800, batch 4, in fp32, bf16 and fp16 (+ grad scaler):
#      images/s, peak memory, finite loss;
#   2. a 1-process torchrun (NCCL) training run of 300 steps on COCO Tiny: its loss must fall;
#   3. COCOeval of that run's checkpoint;
#   4. inference latency per image.
# Everything it prints also goes to $OUT/gpu_check.log; the numbers to $OUT/*.json.
#
# Usage:
#   bash benchmarks/gpu_check.sh            # on a GPU machine (needs torch, torchvision; pycocotools
#                                            # and friends may come as wheels in .whl/, see below)
#   bash benchmarks/gpu_check.sh --dry      # the same steps, tiny, on the CPU (tests/test_gpu_check.py)
#
# Before sending it to a GPU machine that lacks pycocotools (the device tool's notes):
#   mkdir -p data && cp -r ../shared/coco_tiny data/coco_tiny       # data/ is git-ignored: carry it
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl pycocotools tqdm pandas    # .whl/ in .git/info/exclude
# and run it with carry [".whl", "data/coco_tiny"].
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }
# Run a step, its output into the log too; a failing step is reported and the others still run.
FAILED=()
step() {
  local name="$1"; shift
  say ""; say "== $name"
  local start=$SECONDS
  if "$@" 2>&1 | tee -a "$LOG"; then
    say "   ($name: $((SECONDS - start)) s)"
  else
    say "   FAILED: $name (after $((SECONDS - start)) s)"
    FAILED+=("$name")
  fi
}

PY="${PYTHON:-python3}"
[ -x "$ROOT/.venv/bin/python" ] && [ "$DRY" = 1 ] && PY="$ROOT/.venv/bin/python"
if [ -d "$ROOT/.whl" ] && ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site "$ROOT"/.whl/*.whl
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TORCHRUN=("$PY" -m torch.distributed.run)

COCO="${COCO_TINY:-}"
for candidate in "$ROOT/data/coco_tiny" "$ROOT/../shared/coco_tiny"; do
  [ -z "$COCO" ] && [ -f "$candidate/annotations/instances_train2017.json" ] && COCO="$candidate"
done
if [ -z "$COCO" ]; then
  echo "gpu_check: COCO Tiny not found; copy it into the repo first: cp -r ../shared/coco_tiny data/coco_tiny" >&2
  exit 2
fi

if [ "$DRY" = 1 ]; then
  # tiny and on the CPU: the plumbing of every step, not its numbers
  DEVICE=cpu; PRESET=tood_small; SIZE=(64 96); BATCH=2; STEPS=1; WARMUP=1; AMPS=(off bf16)
  RUN_STEPS=4; IMAGES_PER_PROCESS=2; INFER_IMAGES=2; BACKEND=gloo
  TRAIN_SET=(model.num_classes=80 data.img_scale=96,64 train.epochs=2 train.lr_steps=2 train.warmup_iters=1
             tal.warmup_epochs=1 data.train_images=4)
else
  DEVICE=cuda; PRESET=tood_r50_fpn_1x_coco; SIZE=(800 1333); BATCH=4; STEPS=10; WARMUP=3; AMPS=(off bf16 fp16)
  RUN_STEPS=300; IMAGES_PER_PROCESS=4; INFER_IMAGES=50; BACKEND=nccl
  # From random weights (no ImageNet download here): BatchNorm trains, nothing frozen; 80 images / 4 =
  # 20 steps an epoch, 15 epochs = 300 steps: 4 of ATSS warm-up (the recipe's), then TAL.
  TRAIN_SET=(model.backbone_weights=none model.norm_eval=false model.frozen_stages=-1 train.epochs=15
             train.lr_steps=11,14 train.warmup_iters=25)
fi

say "gpu_check $(date -u +%FT%TZ)  dry=$DRY  coco_tiny=$COCO"
step "environment" "$PY" - <<EOF
import torch, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", "bf16", torch.cuda.is_bf16_supported(),
          "nccl", torch.distributed.is_nccl_available())
elif "$DEVICE" == "cuda":
    raise SystemExit("no CUDA device: run with --dry on a CPU")
EOF

for amp in "${AMPS[@]}"; do
  step "train step: $PRESET ${SIZE[0]}x${SIZE[1]} batch $BATCH amp=$amp" \
    "$PY" benchmarks/bench_train_step.py --preset "$PRESET" --device "$DEVICE" --size "${SIZE[@]}" --batch "$BATCH" \
      --steps "$STEPS" --warmup "$WARMUP" --amp "$amp" --json "$OUT/train_step_$amp.json" --require-finite
done

RUN_DIR="${GPU_CHECK_RUN_DIR:-/tmp/gpu_check_run}"  # checkpoints stay out of $OUT (too large to send back)
rm -rf "$RUN_DIR"
step "torchrun: 1 process, $BACKEND, $RUN_STEPS steps on COCO Tiny" \
  "${TORCHRUN[@]}" --standalone --nproc-per-node 1 -m tood_lib train --preset "$PRESET" \
    --data-root "$COCO" --out "$RUN_DIR" --device "$DEVICE" --images-per-process "$IMAGES_PER_PROCESS" \
    --max-steps "$RUN_STEPS" --workers 2 --checkpoint-every 100 --no-eval --set "${TRAIN_SET[@]}"
[ -f "$RUN_DIR/metrics.jsonl" ] && cp "$RUN_DIR/metrics.jsonl" "$OUT/train_metrics.jsonl"
step "the run's loss falls (each phase)" "$PY" benchmarks/check_loss_falls.py "$RUN_DIR/metrics.jsonl" --json "$OUT/loss_check.json"
step "COCOeval of the run's checkpoint (val split)" \
  "$PY" -m tood_lib eval --checkpoint "$RUN_DIR/last.pth" --data-root "$COCO" --out "$RUN_DIR/eval" --device "$DEVICE"
[ -f "$RUN_DIR/eval/coco_stats_val.csv" ] && cp "$RUN_DIR/eval/coco_stats_val.csv" "$OUT/"
step "inference latency per image" \
  "$PY" benchmarks/bench_inference.py --checkpoint "$RUN_DIR/last.pth" --device "$DEVICE" --size "${SIZE[@]}" \
    --images "$INFER_IMAGES" --warmup 1 --json "$OUT/inference.json"

say ""
if [ "${#FAILED[@]}" -gt 0 ]; then
  say "gpu_check: ${#FAILED[@]} step(s) failed: ${FAILED[*]}"
  exit 1
fi
say "gpu_check: all steps passed; log and numbers in $OUT"
