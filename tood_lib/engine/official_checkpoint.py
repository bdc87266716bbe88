"""Loading the released TOOD checkpoints (MMDetection's and the official fcjian/TOOD code's).

Both reference implementations store the weights under ``'state_dict'`` with the same backbone
and FPN names and slightly different head names (``shared/checkpoint_names.md`` beside the project). Ours differ
from MMDetection's only where MMDetection wraps a conv in a ``ConvModule`` or calls the head
``bbox_head``:

    MMDetection                                  tood_lib
    backbone.<torchvision names>                 backbone.<torchvision names>
    neck.{lateral_convs,fpn_convs}.i.conv.*      neck.{lateral_convs,fpn_convs}.i.*
    bbox_head.*                                  head.*            (inner names unchanged)

and the official code additionally names four head sub-modules differently:

    official                                     MMDetection
    {cls,reg}_decomp.la_conv1 / la_conv2         {cls,reg}_decomp.layer_attention.0 / .2
    cls_prob_conv1 / cls_prob_conv2              cls_prob_module.0 / .2
    reg_offset_conv1 / reg_offset_conv2          reg_offset_module.0 / .2

``load_official_checkpoint`` finds out which naming a file uses, renames, checks every key and
shape against the model, and refuses anything that does not fit with the full list of what is
missing, unexpected or mis-shaped — the file could be of another depth, another variant (DCN),
another class count or another detector altogether.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

NAMINGS = ("mmdetection", "official", "tood_lib")
_PRETTY = {"mmdetection": "MMDetection", "official": "official fcjian/TOOD", "tood_lib": "tood_lib"}

# Official TOOD -> MMDetection, applied to the part after "bbox_head.".
_OFFICIAL_TO_MMDET = [
    (re.compile(r"^(cls|reg)_decomp\.la_conv1\."), r"\1_decomp.layer_attention.0."),
    (re.compile(r"^(cls|reg)_decomp\.la_conv2\."), r"\1_decomp.layer_attention.2."),
    (re.compile(r"^cls_prob_conv1\."), "cls_prob_module.0."),
    (re.compile(r"^cls_prob_conv2\."), "cls_prob_module.2."),
    (re.compile(r"^reg_offset_conv1\."), "reg_offset_module.0."),
    (re.compile(r"^reg_offset_conv2\."), "reg_offset_module.2."),
]
_MMDET_TO_OFFICIAL = [
    (re.compile(r"^(cls|reg)_decomp\.layer_attention\.0\."), r"\1_decomp.la_conv1."),
    (re.compile(r"^(cls|reg)_decomp\.layer_attention\.2\."), r"\1_decomp.la_conv2."),
    (re.compile(r"^cls_prob_module\.0\."), "cls_prob_conv1."),
    (re.compile(r"^cls_prob_module\.2\."), "cls_prob_conv2."),
    (re.compile(r"^reg_offset_module\.0\."), "reg_offset_conv1."),
    (re.compile(r"^reg_offset_module\.2\."), "reg_offset_conv2."),
]
_MMDET_NECK = re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.")
_OUR_NECK = re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.")

# Sub-module names that only a TOOD head has (either naming): how a TOOD checkpoint is recognised.
_TOOD_HEAD_MARKERS = ("tood_cls.", "tood_reg.", "cls_decomp.", "reg_decomp.", "cls_prob_", "reg_offset_")
_OFFICIAL_MARKERS = ("_decomp.la_conv1.", "_decomp.la_conv2.", "cls_prob_conv", "reg_offset_conv")
# Heads of other MMDetection detectors, to say what a foreign checkpoint is.
_OTHER_HEADS = {"retina_cls": "RetinaNet", "atss_cls": "ATSS", "gfl_cls": "GFL", "vfnet_cls": "VFNet",
                "conv_centerness": "FCOS", "fcos_cls": "FCOS", "paa_cls": "PAA", "rpn_cls": "RPN / two-stage",
                "ddod_cls": "DDOD", "rtm_cls": "RTMDet", "yolof_cls": "YOLOF"}


@dataclass
class LoadReport:
    """What ``load_official_checkpoint`` did. The three lists are non-empty only with ``strict=False``."""
    source: str
    naming: str
    loaded: int
    kept_from_model: list[str] = field(default_factory=list)  # BN num_batches_tracked the file lacked
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"Loaded {self.loaded} tensors from {self.source} ({_PRETTY[self.naming]} naming)"
        if self.kept_from_model:
            text += (f"; {len(self.kept_from_model)} BatchNorm num_batches_tracked buffers absent from the file "
                     f"were kept")
        skipped = [(n, t) for n, t in (("missing", self.missing), ("unexpected", self.unexpected),
                                       ("mis-shaped", self.misshaped)) if t]
        if skipped:
            text += "; NOT loaded (strict=False): " + ", ".join(f"{len(t)} {n}" for n, t in skipped)
        return text + "."


# ---------------------------------------------------------------------------------- naming
def detect_naming(state_dict: Mapping[str, Tensor]) -> str:
    """``"mmdetection"``, ``"official"`` or ``"tood_lib"``; ValueError if it is no TOOD state dict."""
    keys = list(_strip_module_prefix(state_dict))
    head_keys = [k for k in keys if k.startswith("bbox_head.")]
    if any(marker in k for k in head_keys for marker in _TOOD_HEAD_MARKERS):
        return "official" if any(m in k for k in head_keys for m in _OFFICIAL_MARKERS) else "mmdetection"
    # Ours: a "head." prefix where the references say "bbox_head." (any of our heads: a parallel-head
    # model's weights are refused later by the key check, with the list of what differs).
    if any(k.startswith("head.") for k in keys) and any(k.startswith("backbone.") for k in keys):
        return "tood_lib"
    raise ValueError(
        "Not a TOOD checkpoint. Expected a TOOD detector's weights: 'backbone.*', 'neck.*' and a TOOD head "
        "('bbox_head.tood_cls.weight', 'bbox_head.cls_decomp.*', 'bbox_head.inter_convs.*', ... in MMDetection "
        f"or official TOOD naming, or 'head.*' in tood_lib naming). Found {_describe(keys)}.")


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Rename a TOOD state dict (any of the three namings) into ours. Returns (converted, naming).

    A checkpoint wrapper (``{'state_dict': ..., 'meta': ...}``) is unwrapped first.
    """
    state_dict = _strip_module_prefix(extract_state_dict(state_dict))
    naming = detect_naming(state_dict)
    return {to_tood_lib_name(k, naming): v for k, v in state_dict.items()}, naming


def to_tood_lib_name(key: str, naming: str) -> str:
    """One checkpoint key in ``naming`` -> our key."""
    if naming == "tood_lib":
        return key
    if key.startswith("bbox_head."):
        inner = key[len("bbox_head."):]
        if naming == "official":
            inner = _substitute_first(inner, _OFFICIAL_TO_MMDET)
        return "head." + inner
    return _MMDET_NECK.sub(r"neck.\1.\2.", key)


def from_tood_lib_name(key: str, naming: str) -> str:
    """Our key -> the key a checkpoint in ``naming`` would use (for error messages)."""
    if naming == "tood_lib":
        return key
    if key.startswith("head."):
        inner = key[len("head."):]
        if naming == "official":
            inner = _substitute_first(inner, _MMDET_TO_OFFICIAL)
        return "bbox_head." + inner
    return _OUR_NECK.sub(r"neck.\1.\2.conv.", key)


def _substitute_first(name: str, rules) -> str:
    for pattern, replacement in rules:
        new, count = pattern.subn(replacement, name)
        if count:
            return new
    return name


# ---------------------------------------------------------------------------------- reading
def read_checkpoint(path_or_dict: str | os.PathLike | Mapping,
                    weights_only: bool = True) -> tuple[dict[str, Tensor], str]:
    """The state dict of a checkpoint file (or of an already loaded dict), and a name for messages."""
    if isinstance(path_or_dict, Mapping):
        return extract_state_dict(path_or_dict, "the given dict"), "the given dict"
    path = Path(path_or_dict)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:
        if weights_only and "Weights only load failed" in str(err):
            raise ValueError(
                f"{path} contains Python objects besides tensors, which torch.load(weights_only=True) refuses to "
                f"unpickle. If you trust the file, pass weights_only=False.") from None
        raise ValueError(f"{path} is not a PyTorch checkpoint (torch.load failed with "
                         f"{type(err).__name__}: {err}).") from None
    return extract_state_dict(obj, str(path)), str(path)


def extract_state_dict(obj, source: str = "the given object") -> dict[str, Tensor]:
    """Unwrap ``{'state_dict': sd, 'meta': ...}`` (MMDetection / official) or ``{'model': sd, ...}``."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}; expected a checkpoint dict with a "
                         f"'state_dict' entry, or a state dict (names -> tensors).")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    non_tensors = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if non_tensors or not obj:
        found = "an empty dict" if not obj else "entries that are not tensors: " + _preview(non_tensors)
        raise ValueError(f"{source} is not a state dict: expected names -> tensors (possibly under 'state_dict'), "
                         f"found {found}.")
    return dict(obj)


def _strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Weights saved from a DataParallel / DDP wrapper carry ``module.`` on every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _describe(keys: list[str]) -> str:
    """Say what a non-TOOD state dict looks like."""
    if not keys:
        return "an empty state dict"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        fc = ", 'fc.weight'" if "fc.weight" in keys else ""
        return ("a plain ResNet/ResNeXt (ImageNet classification) state dict with keys like 'conv1.weight', "
                f"'layer1.0.conv1.weight'{fc} - backbone weights, not a detector; give it to "
                "ResNetBackbone(pretrained=path) instead")
    for marker, detector in _OTHER_HEADS.items():
        hit = next((k for k in keys if f".{marker}." in k), None)
        if hit is not None:
            return f"the checkpoint of another detector ({detector}: it has '{hit}')"
    if any(k.startswith("roi_head.") for k in keys):
        return "the checkpoint of a two-stage detector (it has 'roi_head.*' keys)"
    return f"{len(keys)} key{'s' if len(keys) > 1 else ''} such as {_preview(keys, 6)}"


def _preview(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ---------------------------------------------------------------------------------- loading
def load_official_checkpoint(model: nn.Module, path_or_dict: str | os.PathLike | Mapping, strict: bool = True, *,
                             weights_only: bool = True, verbose: bool = True) -> LoadReport:
    """Load an MMDetection / official TOOD checkpoint (or one of ours) into ``model``.

    ``path_or_dict``: a file saved with ``torch.save`` (weights under ``'state_dict'``, or a bare
    state dict) or such a dict itself. BatchNorm ``num_batches_tracked`` buffers missing from
    older files are tolerated (the model keeps its own; with frozen, eval-mode BN they are unused).
    With ``strict=True`` any other missing, unexpected or mis-shaped key raises a ValueError that
    lists them all; with ``strict=False`` the fitting tensors are loaded and the rest is reported
    (useful e.g. to start from COCO weights with another number of classes).
    Returns a ``LoadReport``; its one-line summary is printed (``verbose``) or logged.
    """
    state_dict, source = read_checkpoint(path_or_dict, weights_only=weights_only)
    try:
        converted, naming = convert_state_dict(state_dict)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    target = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    own = target.state_dict()

    absent = [k for k in own if k not in converted]
    kept = [k for k in absent if k.endswith("num_batches_tracked")]
    missing = [k for k in absent if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in converted if k not in own]
    misshaped = [k for k in converted if k in own and own[k].shape != converted[k].shape]

    if strict and (missing or unexpected or misshaped):
        raise ValueError(_mismatch_message(source, naming, own, converted, missing, unexpected, misshaped))
    fitting = {k: v for k, v in converted.items() if k in own and own[k].shape == v.shape}
    target.load_state_dict(fitting, strict=False)

    report = LoadReport(source=source, naming=naming, loaded=len(fitting), kept_from_model=kept,
                        missing=missing, unexpected=unexpected, misshaped=misshaped)
    if verbose:
        print(report)
    else:
        logger.info("%s", report)
    if not strict and (missing or unexpected or misshaped):
        logger.warning("%s", _mismatch_message(source, naming, own, converted, missing, unexpected, misshaped))
    return report


def _mismatch_message(source, naming, own, converted, missing, unexpected, misshaped, limit: int = 15) -> str:
    def name(key: str) -> str:  # the file's own name first, ours in brackets where they differ
        theirs = from_tood_lib_name(key, naming)
        return key if theirs == key else f"{theirs}  (ours: {key})"

    blocks = [("missing from the checkpoint", [name(k) for k in missing]),
              ("unexpected in the checkpoint", [name(k) for k in unexpected]),
              ("wrong shape", [f"{name(k)}: model expects {tuple(own[k].shape)}, checkpoint has "
                               f"{tuple(converted[k].shape)}" for k in misshaped])]
    lines = [f"{source} ({_PRETTY[naming]} naming) does not fit this model:"]
    for title, items in blocks:
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines += [f"    {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")
    lines += [f"  hint: {hint}" for hint in _hints(own, converted, missing, unexpected, misshaped)]
    return "\n".join(lines)


def _hints(own, converted, missing, unexpected, misshaped) -> list[str]:
    hints = []
    if any(".conv_offset." in k for k in missing + unexpected):
        hints.append("deformable-conv (conv_offset) keys differ: a DCN checkpoint needs a DCN model and vice versa.")
    if "head.tood_cls.weight" in misshaped:
        hints.append(f"the number of classes differs (model {own['head.tood_cls.weight'].shape[0]}, checkpoint "
                     f"{converted['head.tood_cls.weight'].shape[0]}); use strict=False to load everything else.")
    if any(k.startswith("backbone.layer") and ".conv_offset." not in k for k in missing + unexpected + misshaped):
        hints.append("the backbone blocks differ: the checkpoint was made with another backbone (depth, ResNeXt).")
    return hints
