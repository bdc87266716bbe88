"""The ablation grid: every experiment behind the paper's Tables 1-4 and 6, declared once.

An :class:`Experiment` names a head (parallel / T-Head, with or without the probability map M,
the offsets O and the layer attention of the task decomposition), an assignment scheme (RetinaNet's
IoU thresholds, FCOS centre sampling, FoveaBox, ATSS, ATSS with quality-focal targets, TAL; TAL on
the T-Head is "TAL + TAP"), TAL's α, β and m, and the anchor type. :data:`PAPER_ROWS` says which
experiment reproduces which row of which table, so one run serves every table that shares it.

The same experiment is turned into a config at two scales (:func:`experiment_config`):

- ``"coco"``: the paper's setting, R-50 1x (12 epochs, batch 16, 4 epochs of ATSS warm-up), one
  JSON file per experiment under ``configs/ablations/`` (:func:`write_coco_configs`) that
  ``torchrun ... -m tood_lib train --config FILE`` launches;
- ``"cpu"``: a bench data set (the shapes, or the misaligned marks) on two CPU cores
  (:data:`CPU_RECIPE`): the small preset on a bench (``bench.py``: 128 px; the multi-level bench has anchors 2 strides wide,
  objects over every octave, so that the positives spread over P3-P6 as on COCO) on the frozen
  shape-pretrained ResNet-18, whose features are cached, trained until its AP has settled.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tood_lib.ablations.bench import SCHEDULES, bench_overrides, schedule_overrides
from tood_lib.config import Config, apply_overrides, get_preset

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs" / "ablations"


@dataclass(frozen=True)
class Experiment:
    """One cell of the grid (seeds are the runner's business)."""

    name: str
    head: str = "t_head"  # "t_head" or "parallel"
    assigner: str = "tal"  # after the warm-up: "tal", "atss", "atss_qfl", "max_iou", "fcos", "fovea"
    alpha: float = 1.0
    beta: float = 6.0
    topk: int = 13
    anchor_type: str = "anchor_free"
    prob_map: bool = True  # T-Head's M (alignment of classification)
    offsets: bool = True  # T-Head's O (alignment of localisation)
    layer_attention: bool = True  # T-Head's task decomposition
    centerness: bool = True  # parallel head: ATSS's centerness branch (trained by BCE, multiplied in at inference)
    detector: str = "atss"  # whose network the COCO-scale model copies: "atss" (TOOD's), "fcos" or "foveabox"
    analyse: bool = False  # also measure Table 6's alignment statistics and the assignment time-lapse

    def overrides(self) -> list[str]:
        """Config overrides (on top of a scale's base) that make this experiment."""
        items = [f"model.head={self.head}", f"tal.assigner={self.assigner}", f"model.anchor_type={self.anchor_type}"]
        if self.assigner == "tal":
            items += [f"tal.alpha={self.alpha}", f"tal.beta={self.beta}", f"tal.topk={self.topk}"]
        if self.head == "parallel" and not self.centerness:
            items += ["model.centerness=false"]
        if self.head == "t_head":
            items += [f"model.head_prob_map={self.prob_map}", f"model.head_offsets={self.offsets}",
                      f"model.head_layer_attention={self.layer_attention}"]
        return items

    def describe(self) -> str:
        head = ("parallel head" + ("" if self.centerness else " w/o centerness")) if self.head == "parallel" else "T-Head" + "".join(
            f" w/o {part}" for part, on in (("M", self.prob_map), ("O", self.offsets), ("layer attention", self.layer_attention)) if not on)
        scheme = {"tal": f"TAL (α={self.alpha:g}, β={self.beta:g}, m={self.topk})", "atss": "ATSS", "atss_qfl": "ATSS+QFL",
                  "max_iou": "IoU thresholds", "fcos": "FCOS centre sampling", "fovea": "FoveaBox"}[self.assigner]
        return f"{head}, {scheme}, {self.anchor_type.replace('_', '-')}"


def _tood(name: str, **kw) -> Experiment:
    return Experiment(name, head="t_head", assigner="tal", **kw)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    # Table 1: the parallel head and the T-Head on each detector's own assignment
    Experiment("fovea_parallel", head="parallel", assigner="fovea", detector="foveabox"),
    Experiment("fovea_t_head", head="t_head", assigner="fovea", detector="foveabox"),
    Experiment("fcos_parallel", head="parallel", assigner="fcos", detector="fcos"),
    Experiment("fcos_t_head", head="t_head", assigner="fcos", detector="fcos"),
    Experiment("atss_parallel_anchor_based", head="parallel", assigner="atss", anchor_type="anchor_based"),
    Experiment("atss_t_head_anchor_based", head="t_head", assigner="atss", anchor_type="anchor_based"),
    Experiment("atss_parallel", head="parallel", assigner="atss", analyse=True),
    Experiment("atss_t_head", head="t_head", assigner="atss", analyse=True),
    # Table 2: assignment schemes on the parallel head; TAL + TAP is the full TOOD
    Experiment("max_iou_parallel", head="parallel", assigner="max_iou"),
    Experiment("atss_qfl_parallel", head="parallel", assigner="atss_qfl"),
    Experiment("tal_parallel", head="parallel", assigner="tal", analyse=True),
    # why parallel + TAL trails ATSS (issue 11): the same without ATSS's centerness branch
    Experiment("tal_parallel_no_centerness", head="parallel", assigner="tal", centerness=False),
    # why T-Head + ATSS trails parallel + ATSS (issue 19): the parallel head ranks its boxes by cls x
    # centerness, the T-Head by sqrt(cls x M) trained on binary targets. Each side of that, removed or
    # added: the parallel head without its centerness, the T-Head with IoU-aware (QFL) targets
    Experiment("atss_parallel_no_centerness", head="parallel", assigner="atss", centerness=False),
    Experiment("atss_qfl_t_head", head="t_head", assigner="atss_qfl"),
    _tood("tood", analyse=True),
    # Table 3: TOOD anchor-based
    _tood("tood_anchor_based", anchor_type="anchor_based"),
    # Table 4: the exponents of t = s^α u^β
    _tood("tood_alpha0.5_beta2", alpha=0.5, beta=2.0),
    _tood("tood_alpha0.5_beta4", alpha=0.5, beta=4.0),
    _tood("tood_alpha0.5_beta6", alpha=0.5, beta=6.0),
    _tood("tood_alpha1_beta8", alpha=1.0, beta=8.0),
    _tood("tood_alpha1.5_beta8", alpha=1.5, beta=8.0),
    # beyond the paper's tables: m, and the T-Head's parts one at a time
    _tood("tood_topk5", topk=5),
    _tood("tood_topk21", topk=21),
    _tood("tood_no_prob_map", prob_map=False),
    _tood("tood_no_offsets", offsets=False),
    _tood("tood_no_layer_attention", layer_attention=False),
]}

# (table, the row's key columns in tood_lib/paper_data/tableN.csv) -> experiment name
PAPER_ROWS: dict[int, dict[tuple, str]] = {
    1: {("FoveaBox", "parallel"): "fovea_parallel", ("FoveaBox", "T-head"): "fovea_t_head",
        ("FCOS w/ imprv", "parallel"): "fcos_parallel", ("FCOS w/ imprv", "T-head"): "fcos_t_head",
        ("ATSS (anchor-based)", "parallel"): "atss_parallel_anchor_based",
        ("ATSS (anchor-based)", "T-head"): "atss_t_head_anchor_based",
        ("ATSS (anchor-free)", "parallel"): "atss_parallel", ("ATSS (anchor-free)", "T-head"): "atss_t_head"},
    2: {("IoU-based", 12): "max_iou_parallel", ("Center sampling", 12): "fcos_parallel", ("ATSS", 12): "atss_parallel",
        ("ATSS+QFL", 12): "atss_qfl_parallel", ("TAL", 12): "tal_parallel", ("TAL+TAP", 18): "tood"},
    3: {("anchor-free", "ATSS"): "atss_parallel", ("anchor-free", "TOOD"): "tood",
        ("anchor-based", "ATSS"): "atss_parallel_anchor_based", ("anchor-based", "TOOD"): "tood_anchor_based"},
    4: {(0.5, 2.0): "tood_alpha0.5_beta2", (0.5, 4.0): "tood_alpha0.5_beta4", (0.5, 6.0): "tood_alpha0.5_beta6",
        (1.0, 6.0): "tood", (1.0, 8.0): "tood_alpha1_beta8", (1.5, 8.0): "tood_alpha1.5_beta8"},
    6: {("parallel", "ATSS"): "atss_parallel", ("T-head", "ATSS"): "atss_t_head",
        ("parallel", "TAL"): "tal_parallel", ("T-head", "TAL"): "tood"},
}
KEY_COLUMNS = {1: ("detector", "head"), 2: ("scheme", "epochs"), 3: ("anchor_type", "method"), 4: ("alpha", "beta"),
               6: ("head", "assignment")}

# The network differences of Table 1's other detectors, applied at COCO scale only (the CPU scale
# keeps one network so that only the assignment differs): FoveaBox makes P6 from C5
# (``add_extra_convs='on_input'``); FCOS w/ imprv uses a caffe-style ResNet (stride in the 1x1 conv,
# BatchNorm affine frozen) and, on the parallel head, convs with biases.
DETECTOR_STRUCTURE: dict[str, list[str]] = {
    "atss": [],
    "fcos": ["model.backbone_style=caffe", "model.backbone_norm_trainable=false",
             "model.backbone_weights=weights/resnet50_caffe-788b5fa3.pth",
             "data.mean=122.7717,115.9465,102.9801", "data.std=1,1,1"],
    "foveabox": ["model.fpn_extra_source=input"],
}

# ------------------------------------------------------------------------------------------ scales
# The COCO-scale FCOS regression ranges, divided by 4 for the CPU scale: on the first bench because
# its objects are about a quarter of COCO's in strides; on the multi-level bench because its anchors
# are 2 strides wide instead of 8 (bench.py), and the ranges shrink with them, so that FCOS sends an
# object to the level it would choose at COCO's proportions. FoveaBox's scale ranges stay as they
# are: its fovea is 0.4 of the box, so an object sent to a coarser level would mostly fall between
# the points (with ranges divided by 4 a first try on the first bench trained no FoveaBox model at
# all: AP 0.001); undivided they send the bench's objects to P3-P5.
CPU_RANGE_SCALE = 0.25
# The CPU-scale protocol (issue 11). Every experiment shares it; only head and assignment differ.
# - The backbone is the small preset's ResNet-18 pretrained on the built-in shapes, frozen whole
#   (stages and BatchNorm), so its outputs are computed once per image and flip and read back
#   (engine/feature_cache.py): a step trains the FPN and the head only. The official recipe freezes
#   stage 1 of an ImageNet backbone; freezing all of it is our choice, for speed, and its effect on
#   the rankings is checked against fine-tuned runs (results/README.md).
# - The bench (bench.py): 128 px; the active bench's anchors and data sets.
# - Batch 8, the 1000 training images, LR 0.02; 12 epochs with the LR divided by 10 after
#   epoch 7 and again after epoch 9 (the paper's 1x schedule: after 8 and 11 of 12). The first step
#   comes early enough that a run's AP has settled by the last quarter of the schedule (epochs
#   10-12): the plateau rule (final AP within 1 point of the AP at 75 % of the schedule, epoch 9)
#   holds. Measured before choosing (TOOD and ATSS, seed 0): with steps after 8 and 11, TOOD's AP
#   still rose 1.5 points after epoch 9 (0.363 -> 0.378); after 7 and 10, ATSS's rose 1.1.
# - Evaluated after epochs 3, 6, 9, 10, 11 and 12 (the AP curve; an evaluation costs about 2 s).
# - One epoch of ATSS warm-up, as the small preset (the paper: 4 of 12).
# (the first bench's schedule; the multi-level bench's is bench.SCHEDULES["multi_level"], put on top of
# the recipe by experiment_config)
CPU_EPOCHS, CPU_LR_STEPS = SCHEDULES["single_level"].epochs, SCHEDULES["single_level"].lr_steps
CPU_EVAL_EPOCHS = SCHEDULES["single_level"].eval_epochs
CPU_DATASETS = {"shapes": 10, "misaligned": 4}  # built-in scene kind -> number of classes
CPU_RECIPE = [
    "data.train_images=1000",
    "model.backbone_weights=builtin_shapes", "model.frozen_stages=4", "model.norm_eval=true",
    f"train.epochs={CPU_EPOCHS}", "train.lr_steps=" + ",".join(map(str, CPU_LR_STEPS)), "train.lr=0.02",
    "train.warmup_iters=100", "tal.warmup_epochs=1",
]


def _scaled(values, factor: float) -> str:
    return ",".join(f"{v * factor:g}" if abs(v) < 1e7 else f"{v:g}" for v in values)


def experiment_config(experiment: Experiment | str, scale: str = "cpu", dataset: str = "shapes",
                      bench: str | None = None) -> Config:
    """The Config of an experiment at ``scale`` "cpu" (a built-in data set: "shapes" or "misaligned",
    on ``bench``, default ``bench.ACTIVE_BENCH``) or "coco" (R-50 1x)."""
    exp = EXPERIMENTS[experiment] if isinstance(experiment, str) else experiment
    if scale == "coco":
        cfg = get_preset("tood_r50_fpn_1x_coco")
        cfg.name = f"ablation_{exp.name}_r50_fpn_1x_coco"
        return apply_overrides(cfg, coco_overrides(exp))
    if scale != "cpu":
        raise ValueError(f"scale: expected 'cpu' or 'coco', got {scale!r}")
    if dataset not in CPU_DATASETS:
        raise ValueError(f"dataset: expected one of {tuple(CPU_DATASETS)}, got {dataset!r}")
    cfg = get_preset("tood_small")
    cfg.name = f"ablation_{exp.name}_cpu_{dataset}"
    base = apply_overrides(cfg, [])
    cfg = apply_overrides(cfg, bench_overrides(bench) + CPU_RECIPE + schedule_overrides(bench) + [
        f"model.num_classes={CPU_DATASETS[dataset]}",
        f"tal.fcos_regress_ranges={_scaled(base.tal.fcos_regress_ranges, CPU_RANGE_SCALE)}"])
    return apply_overrides(cfg, exp.overrides())


def coco_overrides(exp: Experiment) -> list[str]:
    """The overrides of an experiment's COCO-scale config (on the R-50 1x preset)."""
    bias = ["model.head_conv_bias=true"] if exp.detector == "fcos" and exp.head == "parallel" else []
    return DETECTOR_STRUCTURE[exp.detector] + bias + exp.overrides()


def coco_command(experiment: str, gpus: int = 4) -> str:
    """The command that trains and evaluates an experiment at COCO scale."""
    return (f"torchrun --nproc_per_node {gpus} -m tood_lib train --config configs/ablations/{experiment}.json "
            f"--data-root data/coco --out runs/ablations/coco/{experiment}")


def write_coco_configs(directory: str | Path = CONFIG_DIR) -> list[Path]:
    """One launchable JSON file per experiment: {"experiment", "description", "preset", "overrides", "command"}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, exp in EXPERIMENTS.items():
        body = dict(experiment=name, description=exp.describe(), preset="tood_r50_fpn_1x_coco", name=f"ablation_{name}_r50_fpn_1x_coco",
                    overrides=coco_overrides(exp), command=coco_command(name),
                    note="R-50 1x as in the paper's ablations: 12 epochs, batch 16 over all GPUs (the official 4 x 4), ImageNet "
                         "(torchvision) backbone; with fewer GPUs keep the batch with --accumulate or let the "
                         "linear rule scale the LR (notebook 04).")
        path = directory / f"{name}.json"
        path.write_text(json.dumps(body, indent=2) + "\n")
        written.append(path)
    return written


def load_config_file(path: str | Path) -> Config:
    """A Config from one of those JSON files (a preset plus overrides)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    body = json.loads(path.read_text())
    if "preset" not in body:
        raise ValueError(f"{path}: a config file needs a 'preset' and may have 'overrides' (a list of SECTION.FIELD=VALUE)")
    cfg = get_preset(body["preset"])
    if body.get("name"):
        cfg.name = body["name"]
    return apply_overrides(cfg, list(body.get("overrides", [])))


def experiment_table() -> list[dict]:
    """The grid as rows (for notebooks): name, description and the tables each experiment serves."""
    serves = {name: [] for name in EXPERIMENTS}
    for table, rows in PAPER_ROWS.items():
        for key, name in rows.items():
            serves[name].append(f"T{table}: {' / '.join(map(str, key))}")
    return [dict(experiment=name, description=exp.describe(), tables="; ".join(serves[name]) or "beyond the paper",
                 **{k: v for k, v in asdict(exp).items() if k != "name"}) for name, exp in EXPERIMENTS.items()]


def experiments_in_tables() -> list[str]:
    """Every experiment some table needs, in grid order."""
    needed = {name for rows in PAPER_ROWS.values() for name in rows.values()}
    return [name for name in EXPERIMENTS if name in needed]
