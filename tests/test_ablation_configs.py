"""The COCO-scale ablation configs: one launchable file per experiment, in sync with the grid, and
each one dry-run: build the full R-50 model and the data pipeline and train one step on tiny inputs."""
import json
import math

import pytest

from tood_lib.ablations.grid import (CONFIG_DIR, EXPERIMENTS, PAPER_ROWS, experiment_config, load_config_file,
                                     write_coco_configs)
from tood_lib.analysis.paper_tables import paper_table
from tood_lib.config import apply_overrides
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.data.coco import coco_tiny_root
from tood_lib.engine.trainer import Trainer

CONFIGS = sorted(CONFIG_DIR.glob("*.json"))


def test_one_committed_config_per_experiment_and_in_sync(tmp_path):
    assert sorted(p.stem for p in CONFIGS) == sorted(EXPERIMENTS)
    for path in write_coco_configs(tmp_path):
        assert (CONFIG_DIR / path.name).read_text() == path.read_text(), \
            f"{path.name} is stale: run python -m tood_lib ablations write-configs"


def test_every_paper_row_of_the_ablation_tables_has_an_experiment():
    for table, rows in PAPER_ROWS.items():
        assert set(rows.values()) <= set(EXPERIMENTS)
        paper = paper_table(table)
        if table in (1, 3, 4, 6):  # every row; Table 2: the schemes the grid covers
            from tood_lib.ablations.grid import KEY_COLUMNS
            keys = {tuple(r[c] for c in KEY_COLUMNS[table]) for _, r in paper.iterrows()}
            assert keys == set(rows), f"table {table}"


def test_config_files_give_the_experiment_configs():
    for path in CONFIGS:
        body = json.loads(path.read_text())
        assert f"--config configs/ablations/{path.name}" in body["command"] and body["command"].startswith("torchrun")
        assert load_config_file(path).to_dict() == experiment_config(body["experiment"], "coco").to_dict()
    tood = load_config_file(CONFIG_DIR / "tood.json")
    assert (tood.train.epochs, tood.train.batch_size, tood.tal.warmup_epochs, tood.model.depth) == (12, 16, 4, 50)
    a = load_config_file(CONFIG_DIR / "tood_alpha0.5_beta2.json").tal
    assert (a.alpha, a.beta, a.topk, a.assigner) == (0.5, 2.0, 13, "tal")
    assert load_config_file(CONFIG_DIR / "fovea_parallel.json").tal.assigner == "fovea"
    assert load_config_file(CONFIG_DIR / "atss_parallel.json").model.head == "parallel"


def test_missing_or_bad_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"overrides": []}')
    with pytest.raises(ValueError, match="needs a 'preset'"):
        load_config_file(tmp_path / "bad.json")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_dry_run(path, tmp_path):
    """The full-size network of the config, one optimiser step on two tiny built-in images, with the
    experiment's own assignment (the ATSS warm-up switched off so that it is the one exercised)."""
    cfg = apply_overrides(load_config_file(path), ["data.img_scale=96,96", "data.train_images=2", "train.batch_size=2",
                                                   "model.backbone_weights=none", "tal.warmup_epochs=0"])
    assert cfg.model.depth == 50 and cfg.model.fpn_channels == 256 and cfg.model.num_classes == 80
    root = coco_tiny_root()  # real COCO images and annotations, when the shared COCO Tiny is there
    if root is None:
        root, cfg = build_builtin_dataset(), apply_overrides(cfg, ["model.num_classes=10"])
    trainer = Trainer(cfg, root, tmp_path, max_steps=1, evaluate_at_end=False, progress=False, amp="off", device="cpu")
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert trainer.state.global_step == 1 and len(steps) == 1
    assert steps[0]["phase"] == "tal" and math.isfinite(steps[0]["loss"]) and steps[0]["num_pos"] > 0


def test_the_default_grid_is_exactly_what_the_tables_need():
    from tood_lib.ablations.grid import experiments_in_tables

    names = experiments_in_tables()
    assert set(names) == {n for rows in PAPER_ROWS.values() for n in rows.values()} and len(names) == 18
    assert names == [n for n in EXPERIMENTS if n in names]  # grid order
