"""The CPU-scale ablation runner on tiny settings: backbone pretraining, a resumable two-seed grid in
subprocesses, the analysed run's time-lapse and Table 6 numbers, and the paper-format tables."""
import json

import pandas as pd
import pytest
import torch

from tood_lib.engine.pretrain import object_crops, pretrain_backbone
from tood_lib.ablations.runner import collect_results, run_dir, run_experiment, run_grid
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.model.backbone import ResNetBackbone

TINY = ["data.train_images=8", "train.batch_size=4", "train.epochs=2", "tal.warmup_epochs=1", "data.img_scale=64,64",
        "train.warmup_iters=1", "train.lr_steps=2"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone") / "r18.pth"
    stats = pretrain_backbone(build_builtin_dataset(), path, epochs=1, batch_size=16, max_images=12, progress=False)
    assert 0 <= stats["val_accuracy"] <= 1 and stats["train_crops"] > 12
    return path


def test_crops_are_the_objects_with_their_labels():
    images, labels = object_crops(build_builtin_dataset(), "val", max_images=3)
    data = json.loads((build_builtin_dataset() / "annotations" / "instances_val2017.json").read_text())
    first = [a for a in data["annotations"] if a["image_id"] in {im["id"] for im in data["images"][:3]}]
    assert images.shape == (len(first), 3, 64, 64) and labels.tolist() == [a["category_id"] - 1 for a in first]


def test_pretrained_backbone_loads_into_the_detector_backbone(backbone):
    net = ResNetBackbone(18, pretrained=backbone)
    saved = torch.load(backbone, weights_only=True)
    assert not any(k.startswith("fc.") for k in saved)
    assert torch.equal(net.layer3[0].conv1.weight, saved["layer3.0.conv1.weight"])
    assert json.loads(backbone.with_suffix(".json").read_text())["epochs"] == 1


def test_grid_runs_resumes_and_tabulates(backbone, tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    kw = dict(out_root=out, results_dir=results, overrides=TINY, backbone=backbone, progress=False, with_complexity=False)
    run_grid(["fcos_parallel"], seeds=(0, 1), jobs=2, **kw)
    finished = {s: (run_dir("fcos_parallel", s, out) / "result.json").stat().st_mtime_ns for s in (0, 1)}
    runs = pd.read_csv(results / "ablation_runs_cpu.csv")
    assert sorted(runs["seed"]) == [0, 1] and (runs["steps"] == 4).all() and (runs["threads"] == 1).all()
    # checkpoints of runs that are not analysed are dropped, last.pth (for resuming) is kept
    assert [p.name for p in run_dir("fcos_parallel", 0, out).glob("*.pth")] == ["last.pth"]

    run_grid(["fcos_parallel"], seeds=(0, 1), jobs=2, **kw)  # nothing to do: finished runs are not redone
    assert finished == {s: (run_dir("fcos_parallel", s, out) / "result.json").stat().st_mtime_ns for s in (0, 1)}

    table = pd.read_csv(results / "table1_cpu.csv").set_index("experiment")
    assert table.at["fcos_parallel", "cpu_seeds"] == 2
    assert table.at["fcos_parallel", "cpu_AP"] == pytest.approx(runs["AP"].mean() * 100, abs=1e-3)
    assert table.at["fcos_parallel", "cpu_AP_std"] == pytest.approx(runs["AP"].std(ddof=1) * 100, abs=1e-3)
    assert table.at["fcos_parallel", "paper_AP"] == 38.6 and table.at["fcos_parallel", "coco_AP"] == "not run"
    assert "--config configs/ablations/fcos_parallel.json" in table.at["fcos_parallel", "coco_command"]
    assert pd.read_csv(results / "table2_cpu.csv").set_index("experiment").at["fcos_parallel", "cpu_seeds"] == 2
    assert pd.isna(table.at["atss_t_head", "cpu_AP"])  # not run here
    timing = json.loads((results / "ablations_cpu_timing.json").read_text())
    assert len(timing["invocations"]) == 1 and timing["invocations"][0]["runs"] == 2


def test_analysed_run_has_time_lapse_and_table6(backbone, tmp_path):
    record = run_experiment("tood", 0, tmp_path, progress=False, overrides=TINY, backbone=backbone, analysis_images=8)
    assert [p["epoch"] for p in record["timelapse"]] == [0, 1, 2]
    assert all(-1 <= p["PCC"] <= 1 and 0 <= p["IoU"] <= 1 and p["best_anchor_gap"] >= 0 for p in record["timelapse"])
    evals = [json.loads(line) for line in (run_dir("tood", 0, tmp_path) / "metrics.jsonl").read_text().splitlines()]
    aps = {r["epoch"]: r["AP"] for r in evals if r["kind"] == "eval"}
    assert record["timelapse"][2]["AP"] == aps[2] == record["AP"]
    assert set(record["nms"]) >= {"correct", "redundant", "error", "objects"}
    snapshots = torch.load(run_dir("tood", 0, tmp_path) / "snapshots.pt", weights_only=True)
    assert sorted(snapshots["snapshots"]) == [0, 1, 2] and len(snapshots["snapshots"][2]) == 6
    collect_results(["tood"], (0,), tmp_path, tmp_path / "results", with_complexity=False)
    table6 = pd.read_csv(tmp_path / "results" / "table6_cpu.csv").set_index("experiment")
    assert table6.at["tood", "cpu_correct"] == record["nms"]["correct"]
    assert table6.at["tood", "cpu_PCC"] == pytest.approx(record["alignment"]["PCC"], abs=1e-3)
    assert set(torch.load(tmp_path / "results" / "snapshots_cpu.pt", weights_only=True)) == {"tood"}
