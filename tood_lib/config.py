"""Presets as plain dataclasses, named after the official config files.

A ``Config`` has four parts: ``model`` (the network), ``tal`` (assignment and losses),
``test`` (post-processing), ``data`` and ``train`` (the recipe, used by the trainer).
Every default is the official R-50 1x value (spec §1-§3); presets change only what their
official config changes. Overrides use dotted names: ``apply_overrides(cfg, ["train.lr=0.02"])``.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field

SUPPORTED_DEPTHS = (18, 34, 50, 101)
ASSIGNERS = ("tal", "atss", "atss_qfl", "max_iou", "fcos", "fovea")


@dataclass
class ModelConfig:
    # backbone (spec §1.1)
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    dcn_stages: tuple[bool, bool, bool, bool] = (False, False, False, False)
    frozen_stages: int = 1
    norm_eval: bool = True
    # Table 1's other detectors (COCO scale): FCOS w/ imprv's caffe-style ResNet (stride in the 1x1
    # conv, BN affine not trained, caffe weights), FoveaBox's P6 from C5, FCOS's biased tower convs
    backbone_style: str = "pytorch"
    backbone_norm_trainable: bool = True
    fpn_extra_source: str = "output"
    head_conv_bias: bool = False  # parallel head only
    # "imagenet" (torchvision), "builtin_shapes" (our ResNet-18 pretrained on the built-in shapes, the small
    # preset's), a local .pth path, or None (random init)
    backbone_weights: str | None = "imagenet"
    # neck (spec §1.2)
    fpn_channels: int = 256
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    # head (spec §1.4)
    head: str = "t_head"  # "t_head" or "parallel"
    feat_channels: int = 256
    stacked_convs: int = 6  # T-Head: 6 interactive convs; the parallel head uses 4 per tower
    num_dcn_head: int = 0  # first k interactive convs as DCNv2 (deform_groups=4)
    gn_groups: int = 32
    num_classes: int = 80
    anchor_type: str = "anchor_free"  # or "anchor_based"
    # anchor side in strides (MMDetection's octave_base_scale, 8 officially): the ATSS/IoU anchors
    # and the anchor-based head's boxes; the CPU bench shrinks it with its canvas (ablations/bench.py)
    anchor_scale: float = 8.0
    centerness: bool = True  # parallel head only: ATSS's centerness branch
    # MMDetection >= 2.25 replaces an aligned box that came out degenerate (x2<x1 or y2<y1) by the
    # box before alignment; the official fcjian/TOOD code keeps it. We follow MMDetection (see README).
    degenerate_box_fallback: bool = True
    # T-Head ablation switches (all on in TOOD): the probability map M, the offsets O, the layer attention
    head_prob_map: bool = True
    head_offsets: bool = True
    head_layer_attention: bool = True


@dataclass
class TALConfig:
    alpha: float = 1.0
    beta: float = 6.0
    topk: int = 13
    warmup_epochs: int = 4  # epochs trained with the ATSS assigner before TAL (official `initial_epoch`)
    # after the warm-up: "tal" (TOOD), a Table 2 baseline ("atss", "atss_qfl", "max_iou", "fcos") or Table 1's "fovea"
    assigner: str = "tal"
    fcos_radius: float = 1.5  # FCOS centre sampling, in strides
    fcos_regress_ranges: tuple[float, ...] = (-1.0, 64.0, 64.0, 128.0, 128.0, 256.0, 256.0, 512.0, 512.0, 1e8)  # (low, high) per level
    fovea_scale_ranges: tuple[float, ...] = (1.0, 64.0, 32.0, 128.0, 64.0, 256.0, 128.0, 512.0, 256.0, 2048.0)  # √area (low, high) per level
    fovea_sigma: float = 0.4  # FoveaBox: the fovea is the box shrunk to this share of its sides
    max_iou_thresholds: tuple[float, float] = (0.5, 0.4)  # RetinaNet's positive and negative IoU thresholds
    atss_topk: int = 9
    cls_gamma: float = 2.0  # quality-focal exponent
    focal_alpha: float = 0.25  # warm-up focal loss
    focal_gamma: float = 2.0
    bbox_weight: float = 2.0  # GIoU loss weight
    # Σt̂ below this is replaced by 1 (official: 1e-12; MMDetection instead clamps at min 1.0).
    normalizer_eps: float = 1e-12


@dataclass
class TestConfig:
    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_thr: float = 0.6
    max_per_img: int = 100


@dataclass
class DataConfig:
    img_scale: tuple[int, int] = (1333, 800)  # (long side max, short side)
    multiscale_short: tuple[int, int] | None = None  # (480, 800) for the "mstrain" recipes
    flip_prob: float = 0.5
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisor: int = 32
    train_images: int | None = None  # use only the first N training images (quick runs; None: all)


@dataclass
class TrainConfig:
    epochs: int = 12
    lr_steps: tuple[int, ...] = (8, 11)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    batch_size: int = 16  # images per optimiser step over all processes (official: 4 GPUs x 4)


@dataclass
class Config:
    name: str = "tood_r50_fpn_1x_coco"
    model: ModelConfig = field(default_factory=ModelConfig)
    tal: TALConfig = field(default_factory=TALConfig)
    test: TestConfig = field(default_factory=TestConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _mstrain_2x(cfg: Config) -> Config:
    cfg.data.multiscale_short = (480, 800)
    cfg.train.epochs, cfg.train.lr_steps = 24, (16, 22)
    return cfg


def _r50_1x() -> Config:
    return Config(name="tood_r50_fpn_1x_coco")


def _r50_anchor_based() -> Config:
    cfg = Config(name="tood_r50_fpn_anchor_based_1x_coco")
    cfg.model.anchor_type = "anchor_based"
    return cfg


def _r101_mstrain() -> Config:
    cfg = _mstrain_2x(Config(name="tood_r101_fpn_mstrain_2x_coco"))
    cfg.model.depth = 101
    return cfg


def _x101_mstrain() -> Config:
    cfg = _mstrain_2x(Config(name="tood_x101_64x4d_fpn_mstrain_2x_coco"))
    cfg.model.depth, cfg.model.groups, cfg.model.width_per_group = 101, 64, 4
    return cfg


def _r101_dcn() -> Config:
    cfg = _mstrain_2x(Config(name="tood_r101_fpn_dconv_c3-c5_mstrain_2x_coco"))
    cfg.model.depth = 101
    cfg.model.dcn_stages = (False, True, True, True)
    cfg.model.num_dcn_head = 2
    return cfg


def _x101_dcn() -> Config:
    cfg = _mstrain_2x(Config(name="tood_x101_64x4d_fpn_dconv_c4-c5_mstrain_2x_coco"))
    cfg.model.depth, cfg.model.groups, cfg.model.width_per_group = 101, 64, 4
    cfg.model.dcn_stages = (False, False, True, True)
    cfg.model.num_dcn_head = 2
    return cfg


def _small() -> Config:
    """Not an official model: a narrow TOOD that trains on two CPU cores in minutes.

    ResNet-18 pretrained on the built-in shapes (``backbone_weights="builtin_shapes"``: our CPU-scale
    stand-in for ImageNet weights, shipped in ``weights/``, see ``engine/pretrain.py``) with the
    official freezing rules (stage 1 frozen, BatchNorm in eval mode), a 64-channel FPN and head with
    the full T-Head structure (6 interactive layers), the 10-class built-in data set at 160 pixels,
    batch 8, LR 0.02, 10 epochs with the LR x0.1 for the last one; one epoch of ATSS warm-up, then
    TAL. On 2 CPU cores: 7-10 minutes in fp32, box AP about 0.52 on the built-in val split. The
    README's "The main job's recipe" has the measured trade-offs (epochs, backbone pretraining,
    resolution, from scratch).
    """
    cfg = Config(name="tood_small")
    m = cfg.model
    m.depth, m.backbone_weights = 18, "builtin_shapes"  # frozen_stages=1, norm_eval=True: the defaults
    m.fpn_channels = m.feat_channels = 64
    m.gn_groups = 16
    m.num_classes = 10
    cfg.data.img_scale = (160, 160)
    cfg.train.epochs, cfg.train.lr_steps, cfg.train.batch_size, cfg.train.lr = 10, (9,), 8, 0.02
    cfg.train.warmup_iters = 100
    cfg.tal.warmup_epochs = 1
    return cfg


def _r50_parallel() -> Config:
    """The paper's baseline: ATSS's parallel head (Table 1) on the same R-50 TOOD recipe."""
    cfg = Config(name="atss_parallel_r50_fpn_1x_coco")
    cfg.model.head = "parallel"
    return cfg


PRESETS = {
    "tood_r50_fpn_1x_coco": _r50_1x,
    "tood_r50_fpn_anchor_based_1x_coco": _r50_anchor_based,
    "tood_r101_fpn_mstrain_2x_coco": _r101_mstrain,
    "tood_x101_64x4d_fpn_mstrain_2x_coco": _x101_mstrain,
    "tood_r101_fpn_dconv_c3-c5_mstrain_2x_coco": _r101_dcn,
    "tood_x101_64x4d_fpn_dconv_c4-c5_mstrain_2x_coco": _x101_dcn,
    "atss_parallel_r50_fpn_1x_coco": _r50_parallel,
    "tood_small": _small,
}


def get_preset(name: str) -> Config:
    """A fresh Config for a preset name; a clear error lists the known names."""
    if name not in PRESETS:
        known = "\n  ".join(PRESETS)
        raise ValueError(f"unknown preset {name!r}; expected one of:\n  {known}")
    return validate(PRESETS[name]())


def validate(cfg: Config) -> Config:
    """Check the values a user is most likely to get wrong; return cfg unchanged."""
    m = cfg.model
    if m.depth not in SUPPORTED_DEPTHS:
        raise ValueError(f"model.depth: expected one of {SUPPORTED_DEPTHS}, got {m.depth}")
    if m.head not in ("t_head", "parallel"):
        raise ValueError(f"model.head: expected 't_head' or 'parallel', got {m.head!r}")
    if m.anchor_type not in ("anchor_free", "anchor_based"):
        raise ValueError(f"model.anchor_type: expected 'anchor_free' or 'anchor_based', got {m.anchor_type!r}")
    if m.backbone_style not in ("pytorch", "caffe"):
        raise ValueError(f"model.backbone_style: expected 'pytorch' or 'caffe', got {m.backbone_style!r}")
    if m.fpn_extra_source not in ("output", "input"):
        raise ValueError(f"model.fpn_extra_source: expected 'output' or 'input', got {m.fpn_extra_source!r}")
    if len(m.dcn_stages) != 4:
        raise ValueError(f"model.dcn_stages: expected 4 flags (layer1..layer4), got {m.dcn_stages}")
    if m.feat_channels % m.gn_groups or m.fpn_channels != m.feat_channels:
        raise ValueError(f"model.feat_channels ({m.feat_channels}) must equal fpn_channels ({m.fpn_channels}) "
                         f"and be divisible by gn_groups ({m.gn_groups})")
    if not m.anchor_scale > 0:
        raise ValueError(f"model.anchor_scale: expected a positive number (anchor side in strides), got {m.anchor_scale}")
    if not 0 <= m.num_dcn_head <= m.stacked_convs:
        raise ValueError(f"model.num_dcn_head: expected 0..{m.stacked_convs}, got {m.num_dcn_head}")
    if cfg.tal.assigner not in ASSIGNERS:
        raise ValueError(f"tal.assigner: expected one of {ASSIGNERS}, got {cfg.tal.assigner!r}")
    if len(cfg.tal.fcos_regress_ranges) != 2 * len(m.strides):
        raise ValueError(f"tal.fcos_regress_ranges: expected a (low, high) pair per level ({2 * len(m.strides)} "
                         f"numbers), got {len(cfg.tal.fcos_regress_ranges)}")
    if len(cfg.tal.fovea_scale_ranges) != 2 * len(m.strides):
        raise ValueError(f"tal.fovea_scale_ranges: expected a (low, high) pair per level ({2 * len(m.strides)} "
                         f"numbers), got {len(cfg.tal.fovea_scale_ranges)}")
    if cfg.tal.topk < 1 or cfg.tal.atss_topk < 1:
        raise ValueError(f"tal.topk and tal.atss_topk must be >= 1, got {cfg.tal.topk}, {cfg.tal.atss_topk}")
    return cfg


def _parse_value(text: str, kind) -> object:
    """Parse an override's text by the field's declared type (``int``, ``float``, ``bool``, ``str``,
    ``X | None``, ``tuple[X, Y]`` of fixed length or ``tuple[X, ...]``); ValueError says what was expected."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if type(None) in args and text.strip().lower() == "none":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse_value(text, inner)
    if typing.get_origin(kind) is tuple:
        parts = [p.strip() for p in text.strip("()[] ").split(",") if p.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse_value(p, args[0]) for p in parts)
        if len(parts) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values, got {len(parts)} ({text!r})")
        return tuple(_parse_value(p, a) for p, a in zip(parts, args))
    if kind is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if kind is str:
        return text
    raise ValueError(f"cannot parse a value of type {kind}")


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings, e.g. ``train.lr=0.02`` or ``model.dcn_stages=0,1,1,1``.

    Returns a new Config; the one given is left as it was (also when an override is refused)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.field=value")
        key, text = item.split("=", 1)
        section_name, _, field_name = key.strip().partition(".")
        section = getattr(cfg, section_name, None)
        if section is None or not dataclasses.is_dataclass(section) or not hasattr(section, field_name):
            sections = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
            raise ValueError(f"override {item!r}: unknown field; sections are {sections}")
        kind = typing.get_type_hints(type(section))[field_name]
        try:
            setattr(section, field_name, _parse_value(text.strip(), kind))
        except ValueError as err:
            raise ValueError(f"override {item!r}: {err}") from None
    return validate(cfg)

