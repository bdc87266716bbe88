"""Presets and overrides."""
import pytest

from tood_lib.config import PRESETS, apply_overrides, get_preset
from tood_lib.model.detector import build_model


OFFICIAL_ZOO = ["tood_r50_fpn_1x_coco", "tood_r50_fpn_anchor_based_1x_coco", "tood_r101_fpn_mstrain_2x_coco",
                "tood_x101_64x4d_fpn_mstrain_2x_coco", "tood_r101_fpn_dconv_c3-c5_mstrain_2x_coco",
                "tood_x101_64x4d_fpn_dconv_c4-c5_mstrain_2x_coco"]


def test_every_official_model_has_a_preset_named_after_its_config():
    for name in OFFICIAL_ZOO:
        assert name in PRESETS and get_preset(name).name == name
    assert "tood_small" in PRESETS


def test_official_recipe_defaults():
    cfg = get_preset("tood_r50_fpn_1x_coco")
    assert (cfg.tal.alpha, cfg.tal.beta, cfg.tal.topk, cfg.tal.atss_topk, cfg.tal.warmup_epochs) == (1.0, 6.0, 13, 9, 4)
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == (0.01, 0.9, 1e-4)
    assert (cfg.train.warmup_iters, cfg.train.warmup_ratio, cfg.train.epochs, cfg.train.lr_steps) == (500, 0.001, 12, (8, 11))
    assert (cfg.test.nms_pre, cfg.test.score_thr, cfg.test.iou_thr, cfg.test.max_per_img) == (1000, 0.05, 0.6, 100)
    assert cfg.model.frozen_stages == 1 and cfg.model.norm_eval and cfg.model.stacked_convs == 6
    assert cfg.tal.bbox_weight == 2.0 and cfg.tal.cls_gamma == 2.0 and cfg.tal.focal_alpha == 0.25


def test_variant_presets():
    assert get_preset("tood_r50_fpn_anchor_based_1x_coco").model.anchor_type == "anchor_based"
    x = get_preset("tood_x101_64x4d_fpn_dconv_c4-c5_mstrain_2x_coco")
    assert (x.model.depth, x.model.groups, x.model.width_per_group) == (101, 64, 4)
    assert x.model.dcn_stages == (False, False, True, True) and x.model.num_dcn_head == 2
    r = get_preset("tood_r101_fpn_dconv_c3-c5_mstrain_2x_coco")
    assert r.model.dcn_stages == (False, True, True, True)
    assert r.data.multiscale_short == (480, 800) and r.train.epochs == 24 and r.train.lr_steps == (16, 22)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="(?s)unknown preset 'tood_r51'.*tood_r50_fpn_1x_coco"):
        get_preset("tood_r51")


def test_overrides():
    cfg = apply_overrides(get_preset("tood_small"), ["train.lr=0.02", "tal.alpha=0.5", "model.dcn_stages=0,1,1,1",
                                                     "model.backbone_weights=none", "model.norm_eval=true"])
    assert cfg.train.lr == 0.02 and cfg.tal.alpha == 0.5 and cfg.model.dcn_stages == (False, True, True, True)
    assert cfg.model.backbone_weights is None and cfg.model.norm_eval is True
    with pytest.raises(ValueError, match="unknown field"):
        apply_overrides(get_preset("tood_small"), ["train.learning_rate=1"])
    with pytest.raises(ValueError, match="expected section.field=value"):
        apply_overrides(get_preset("tood_small"), ["train.lr"])


def test_overrides_leave_the_given_config_as_it_was():
    """One base config, several variants: each variant sees the base, not the previous variant's edits."""
    base = get_preset("tood_small")
    frozen = apply_overrides(base, ["model.frozen_stages=4"])
    assert frozen.model.frozen_stages == 4 and base.model.frozen_stages == get_preset("tood_small").model.frozen_stages
    assert apply_overrides(base, []).model.frozen_stages == base.model.frozen_stages and apply_overrides(base, []) is not base
    with pytest.raises(ValueError):
        apply_overrides(base, ["train.lr=0.5", "train.lr=fast"])  # refused half-way
    assert base.train.lr == get_preset("tood_small").train.lr


def test_unknown_backbone_depth_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model.depth: expected one of \(18, 34, 50, 101\), got 152"):
        apply_overrides(get_preset("tood_small"), ["model.depth=152"])
    cfg = get_preset("tood_small")
    cfg.model.depth = 77
    with pytest.raises(ValueError, match="got 77"):
        build_model(cfg)


def test_overrides_parse_by_the_declared_type_optional_fields_and_tuples_included():
    cfg = apply_overrides(get_preset("tood_small"), [
        "data.train_images=400", "data.multiscale_short=96,128", "train.lr_steps=3", "model.backbone_weights=w.pth",
        "tal.max_iou_thresholds=0.5,0.4"])
    assert cfg.data.train_images == 400 and cfg.data.multiscale_short == (96, 128) and cfg.train.lr_steps == (3,)
    assert cfg.model.backbone_weights == "w.pth" and cfg.tal.max_iou_thresholds == (0.5, 0.4)
    assert apply_overrides(get_preset("tood_small"), ["data.multiscale_short=none"]).data.multiscale_short is None
    # wrong values fail when parsed, naming the override and what was expected
    for bad, expected in [("data.train_images=ten", "expected an integer, got 'ten'"),
                          ("data.multiscale_short=96", "expected 2 comma-separated values, got 1"),
                          ("data.img_scale=1,2,3", "expected 2 comma-separated values, got 3"),
                          ("train.lr=fast", "expected a number"), ("model.norm_eval=maybe", "expected true/false")]:
        with pytest.raises(ValueError, match=f"override '{bad.split('=')[0]}=.*{expected}"):
            apply_overrides(get_preset("tood_small"), [bad])
