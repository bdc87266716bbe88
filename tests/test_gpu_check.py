"""benchmarks/gpu_check.sh in its tiny CPU mode, so that the GPU check cannot rot between GPU sessions.

The dry mode goes through every step of the real one (train-step benchmark per precision, a
1-process torchrun run on COCO Tiny through the distributed path with gloo, the loss check,
COCOeval of the run's checkpoint, inference latency) at toy sizes on the CPU.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tood_lib.data.coco import coco_tiny_root

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(coco_tiny_root() is None, reason="COCO Tiny not found (shared/coco_tiny beside "
                                                                 "the project, or set COCO_TINY)")


@pytest.mark.slow
def test_gpu_check_dry_run_goes_through_every_step(tmp_path):
    out, run_dir = tmp_path / "out", tmp_path / "run"
    env = dict(os.environ, OUT=str(out), GPU_CHECK_RUN_DIR=str(run_dir), PYTHON=sys.executable,
               COCO_TINY=str(coco_tiny_root()))
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "all steps passed" in log and "FAILED" not in log

    for amp in ("off", "bf16"):
        step = json.loads((out / f"train_step_{amp}.json").read_text())
        assert step["amp"] == amp and step["loss_finite"] and step["images_per_s"] > 0
    # the training run went through torchrun: one process in a process group (the DDP path)
    records = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 4 and {r["phase"] for r in steps} == {"atss-warmup", "tal"}
    assert "process group: gloo, 1 process" in log and (run_dir / "last.pth").is_file()
    loss_check = json.loads((out / "loss_check.json").read_text())
    assert {p["phase"] for p in loss_check["phases"]} == {"atss-warmup", "tal"}
    assert "AP" in (out / "coco_stats_val.csv").read_text()
    inference = json.loads((out / "inference.json").read_text())
    assert inference["images"] == 2 and inference["median_ms"] > 0
    # environment, 2 precisions, the run, its loss, COCOeval, inference
    assert (out / "gpu_check.log").read_text().count("\n== ") == 7
