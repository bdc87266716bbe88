"""The Trainer: schedule, exact resume after SIGKILL, 2-process DDP, divergence, bad data."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tood_lib.config import apply_overrides, get_preset
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.engine.schedule import LRSchedule, scaled_schedule
from tood_lib.engine.trainer import Trainer, TrainingDiverged

TINY = ["data.img_scale=128,128", "train.epochs=2", "train.batch_size=4", "train.warmup_iters=3",
        "tal.warmup_epochs=1", "train.lr_steps=1", "model.feat_channels=32", "model.fpn_channels=32",
        "model.gn_groups=8"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return build_builtin_dataset(tmp_path_factory.mktemp("data") / "builtin", num_train=16, num_val=4,
                                 image_size=(128, 128), progress=False)


def tiny_cfg(*extra):
    return apply_overrides(get_preset("tood_small"), TINY + list(extra))


def test_schedule_matches_the_recipe():
    s = LRSchedule(0.01, warmup_iters=500, warmup_ratio=0.001, lr_steps=(8, 11))
    assert s(0, 0) == pytest.approx(1e-5)
    assert s(250, 0) == pytest.approx(0.01 * (1 - 0.5 * 0.999))
    assert s(500, 0) == s(10_000, 7) == pytest.approx(0.01)
    assert s(10_000, 8) == pytest.approx(0.001) and s(10_000, 11) == pytest.approx(0.0001)
    cfg = get_preset("tood_r50_fpn_1x_coco")
    half = scaled_schedule(cfg.train, effective_batch=8)  # one GPU x 8 images: half the LR, twice the warm-up
    assert half.base_lr == pytest.approx(0.005) and half.warmup_iters == 1000
    assert scaled_schedule(cfg.train, 16).base_lr == 0.01


def test_training_writes_metrics_checkpoints_and_evaluates(tiny_data, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "epoch_7.pth").write_bytes(b"an earlier, longer run's checkpoint")
    trainer = Trainer(tiny_cfg(), tiny_data, tmp_path / "run", num_workers=0, progress=False, seed=1)
    assert trainer.steps_per_epoch == 4 and trainer.effective_batch == 4
    result = trainer.fit()
    # a fresh run removes the folder's earlier epoch checkpoints: epoch_7.pth would pass for this run's
    assert not (tmp_path / "run" / "epoch_7.pth").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data_root"] == os.path.abspath(tiny_data)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 8 and {r["phase"] for r in steps} == {"atss-warmup", "tal"}
    assert all(k in steps[0] for k in ("loss_cls", "loss_bbox", "lr", "images_per_s", "memory_mb"))
    assert steps[0]["lr"] == pytest.approx(trainer.cfg.train.lr * 0.001)
    run = tmp_path / "run"
    assert (run / "epoch_1.pth").is_file() and (run / "epoch_2.pth").is_file()
    # epoch_N.pth is the end-of-epoch last.pth kept by a hard link, not a second copy on disk; the
    # next epoch's save replaces last.pth and leaves epoch_1.pth holding epoch 1
    assert (run / "epoch_2.pth").samefile(run / "last.pth") and not (run / "epoch_1.pth").samefile(run / "last.pth")
    assert torch.load(run / "epoch_1.pth", weights_only=False)["state"]["epoch"] == 1
    assert torch.load(run / "last.pth", weights_only=False)["state"]["epoch"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["name"] == "tood_small"
    assert result is not None and len(result.stats) == 12
    assert (tmp_path / "run" / "detections_val.json").is_file()


def _train_cmd(data, out, *extra):
    return [sys.executable, "-m", "tood_lib", "train", "--data-root", str(data), "--out", str(out), "--workers", "0",
            "--deterministic", "--no-eval", "--checkpoint-every", "1", "--set", *TINY, *extra]


def _weights(path):
    return torch.load(path, weights_only=False)["model"]


def test_resume_after_sigkill_gives_bitwise_the_same_weights(tiny_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    subprocess.run(_train_cmd(tiny_data, tmp_path / "straight"), check=True, env=env, capture_output=True)

    victim = subprocess.Popen(_train_cmd(tiny_data, tmp_path / "killed"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it mid-epoch 1, after its third step
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = len(metrics.read_text().splitlines())
    assert killed_at < 8, "the run finished before it could be killed"
    subprocess.run(_train_cmd(tiny_data, tmp_path / "killed", "--resume"), check=True, env=env, capture_output=True)

    straight, resumed = _weights(tmp_path / "straight" / "last.pth"), _weights(tmp_path / "killed" / "last.pth")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert torch.load(tmp_path / "killed" / "last.pth", weights_only=False)["state"]["global_step"] == 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_shares_the_loss_normaliser(tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "tood_lib", "train", "--data-root", str(tiny_data), "--out", str(tmp_path / "ddp"), "--workers", "0",
           "--no-eval", "--max-steps", "3", "--set", *TINY, "train.batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    rank1 = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.rank1.jsonl").read_text().splitlines()]
    assert len(rank0) == len(rank1) == 3
    for a, b in zip(rank0, rank1):
        assert a["normalizer_cls"] == pytest.approx(b["normalizer_cls"])  # all-reduced mean
        assert a["normalizer_bbox"] == pytest.approx(b["normalizer_bbox"])
    # the ranks saw different images, yet their parameters stayed identical (DDP averages gradients)
    assert rank0[0]["loss_cls"] != rank1[0]["loss_cls"]
    ckpt = torch.load(tmp_path / "ddp" / "last.pth", weights_only=False)
    assert ckpt["state"]["global_step"] == 3 and ckpt["effective_batch"] == 4


def test_non_finite_loss_stops_with_the_step_named_and_keeps_the_last_checkpoint(tiny_data, tmp_path, monkeypatch):
    from tood_lib.data.coco import CocoDetection

    trainer = Trainer(tiny_cfg(), tiny_data, tmp_path / "nan", num_workers=0, progress=False, checkpoint_every=1,
                      evaluate_at_end=False)
    poisoned = {"on": False}
    original = CocoDetection.__getitem__

    def getitem(self, index):  # after step 2, every image is NaN: the forward pass turns non-finite
        item = original(self, index)
        if poisoned["on"]:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item

    monkeypatch.setattr(CocoDetection, "__getitem__", getitem)

    class PoisonAfterTwoSteps:
        def on_step_end(self, trainer, record):
            poisoned["on"] = record["step"] >= 2

    trainer.callbacks.append(PoisonAfterTwoSteps())
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1, step 3 \(global step 3\)"):
        trainer.fit()
    ckpt = torch.load(tmp_path / "nan" / "last.pth", weights_only=False)
    assert ckpt["state"]["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_a_missing_data_root_names_the_download_command(tmp_path, capsys):
    from tood_lib.cli import main

    assert main(["train", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "download_coco.py" in err and "nowhere" in err


def test_class_count_mismatch_is_explained(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="has 10 classes but the model .* has 80"):
        Trainer(apply_overrides(tiny_cfg(), ["model.num_classes=80"]), tiny_data, tmp_path / "x", progress=False)
