"""The level audit (analysis/levels.py) and the anchor scale it depends on (model.anchor_scale)."""
import math

import pandas as pd
import pytest
import torch

from tood_lib.analysis.levels import assignment_audit, detection_audit, format_level_table, level_names, level_summary
from tood_lib.assign import atss_assign
from tood_lib.config import apply_overrides, get_preset
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.data.coco import CocoDetection
from tood_lib.model.detector import build_model
from tood_lib.model.priors import multilevel_priors, valid_prior_mask


def test_anchor_side_is_anchor_scale_strides():
    for scale in (8.0, 2.0, 3.5):
        for stride, boxes in zip((8, 16), multilevel_priors([(2, 3), (1, 2)], (8, 16), anchor_scale=scale)):
            assert torch.allclose(boxes[:, 2] - boxes[:, 0], torch.full((len(boxes),), scale * stride))


def test_anchor_scale_defaults_to_the_official_8_and_reaches_the_head_output():
    assert get_preset("tood_r50_fpn_1x_coco").model.anchor_scale == 8.0
    cfg = apply_overrides(get_preset("tood_small"), ["model.anchor_scale=2"])
    out = build_model(cfg).eval()(torch.zeros(1, 3, 64, 64))
    assert out.anchor_scale == 2.0
    assert torch.allclose(out.priors()[0][:, 2] - out.priors()[0][:, 0], torch.full((64,), 16.0))
    with pytest.raises(ValueError, match="anchor_scale"):
        apply_overrides(get_preset("tood_small"), ["model.anchor_scale=0"])


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = build_builtin_dataset(tmp_path_factory.mktemp("lv") / "bench", num_train=2, num_val=12, scenes="shapes",
                                 sizes="multi_level", progress=False)
    cfg = apply_overrides(get_preset("tood_small"), ["data.img_scale=128,128", "model.anchor_scale=2"])
    return CocoDetection(root, "val", cfg.data, train=False, verbose=False), cfg


def test_audit_counts_are_atss_own_positives(small_set):
    """Every positive of the audit is one that atss_assign gives, on the level it lies on."""
    dataset, cfg = small_set
    audit = assignment_audit(dataset, cfg, "atss", batch_size=5)
    names = level_names(cfg.model.strides)
    assert len(audit) == sum(len(dataset.ground_truth(i)[0]) for i in range(len(dataset)))
    # recompute image 0 by hand with the library's own pieces
    item = dataset[0]
    batch, _ = dataset.collate([item])
    h, w = batch.images.shape[-2:]
    sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in cfg.model.strides]
    levels = multilevel_priors(sizes, cfg.model.strides, anchor_scale=2.0)
    a = atss_assign(torch.cat(levels), [len(p) for p in levels], batch.gt_boxes, batch.gt_labels, batch.gt_mask,
                    valid_prior_mask(sizes, cfg.model.strides, batch.pad_shapes))
    level_of = torch.repeat_interleave(torch.arange(len(levels)), torch.tensor([len(p) for p in levels]))
    mine = audit[audit.image == 0]
    for g, row in zip(range(len(mine)), mine.itertuples()):
        for lvl, name in enumerate(names):
            assert getattr(row, f"pos_{name}") == int((a.positive[0] & (a.gt_index[0] == g) & (level_of == lvl)).sum())


def test_the_anchor_scale_moves_positives_up_the_pyramid(small_set):
    dataset, cfg = small_set
    fine = level_summary(assignment_audit(dataset, cfg, "atss"))
    official = level_summary(assignment_audit(dataset, apply_overrides(cfg, ["model.anchor_scale=8"]), "atss"))
    assert sum(fine[f"share_{n}"] for n in level_names(cfg.model.strides)) == pytest.approx(100.0)
    assert official["share_P3"] > fine["share_P3"]  # 8-stride anchors pull every object down to P3
    assert fine["share_P4"] + fine["share_P5"] + fine["share_P6"] > 0


def test_summary_of_a_hand_made_audit():
    audit = pd.DataFrame([dict(side=16.0, pos_P3=3, pos_P4=0, pos_P5=0, pos_P6=0, pos_P7=0, inside_P3=4, inside_P4=1,
                               inside_P5=0, inside_P6=0, inside_P7=0),
                          dict(side=64.0, pos_P3=0, pos_P4=0, pos_P5=1, pos_P6=0, pos_P7=0, inside_P3=64, inside_P4=16,
                               inside_P5=4, inside_P6=1, inside_P7=0),
                          dict(side=8.0, pos_P3=0, pos_P4=0, pos_P5=0, pos_P6=0, pos_P7=0, inside_P3=1, inside_P4=0,
                               inside_P5=0, inside_P6=0, inside_P7=0)])
    s = level_summary(audit)
    assert s["share_P3"] == pytest.approx(75.0) and s["share_P5"] == pytest.approx(25.0)
    assert s["positives_per_object"] == pytest.approx(4 / 3)
    assert s["points_per_side"] == pytest.approx(2.0)  # 16/8 three times, 64/32 once
    assert s["inside_points"] == 5  # median of 5, 85, 1
    assert s["objects_without_positive"] == pytest.approx(100 / 3)
    assert "P3" in format_level_table([dict(data="hand", **s)])


def test_tal_and_detection_audits_run_on_a_model(small_set):
    dataset, cfg = small_set
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tal = assignment_audit(dataset, cfg, "tal", model=model, images=4)
    assert len(tal) == sum(len(dataset.ground_truth(i)[0]) for i in range(4))
    assert (tal[[f"pos_{n}" for n in level_names(cfg.model.strides)]].sum(axis=1) <= cfg.tal.topk).all()
    dets = detection_audit(model, dataset, images=4)
    assert set(dets["level"]) <= set(level_names(cfg.model.strides))
    with pytest.raises(ValueError, match="model="):
        assignment_audit(dataset, cfg, "tal")


def test_levels_command_prints_the_table_for_a_named_data_set(capsys):
    from tood_lib.cli import main

    assert main(["levels", "--data-root", "bench-shapes", "--size", "128", "128", "--anchor-scale", "2", "--images", "5"]) == 0
    out = capsys.readouterr().out
    assert "bench_shapes val, 128x128, anchor 2 strides, atss on ground truth" in out and "P6" in out
