"""Official checkpoint conversion: every reference key loads, both namings, and clear refusals.

The reference file itself (~130 MB) is not available offline; instead a state dict with every key
and shape of the reference TOOD R-50 checkpoint (../shared/mmdet_tood_r50_keys.json) is filled
with random values, converted and loaded, and each value is checked to arrive where it belongs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision

from tood_lib.engine.official_checkpoint import (convert_state_dict, detect_naming, load_official_checkpoint,
                                                 to_tood_lib_name)

KEYS_FILE = Path(__file__).resolve().parents[2] / "shared" / "mmdet_tood_r50_keys.json"
pytestmark = pytest.mark.skipif(not KEYS_FILE.is_file(),
                                reason=f"reference key list {KEYS_FILE} not found (it lives outside the repo)")

OFFICIAL_RENAMES = [  # MMDetection -> official fcjian/TOOD, as in ../shared/checkpoint_names.md
    (r"_decomp\.layer_attention\.0\.", "_decomp.la_conv1."), (r"_decomp\.layer_attention\.2\.", "_decomp.la_conv2."),
    (r"cls_prob_module\.0\.", "cls_prob_conv1."), (r"cls_prob_module\.2\.", "cls_prob_conv2."),
    (r"reg_offset_module\.0\.", "reg_offset_conv1."), (r"reg_offset_module\.2\.", "reg_offset_conv2."),
]


@pytest.fixture(scope="module")
def entries():
    return json.loads(KEYS_FILE.read_text())["entries"]


@pytest.fixture(scope="module")
def mmdet_state_dict(entries):
    """Every reference key with its shape and dtype, random values."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for e in entries:
        if e["dtype"] == "int64":
            out[e["name"]] = torch.randint(0, 1000, e["shape"], generator=gen)
        else:
            out[e["name"]] = torch.randn(e["shape"], generator=gen)
    return out


def to_official(state_dict):
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in OFFICIAL_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


@pytest.fixture(scope="module")
def model():
    from tood_lib.model.detector import build_model
    return build_model("tood_r50_fpn_1x_coco")


def assert_loaded(model, reference_state_dict, naming):
    ours = model.state_dict()
    for name, value in reference_state_dict.items():
        assert torch.equal(ours[to_tood_lib_name(name, naming)], value), name


def test_reference_keys_map_onto_our_model_one_to_one(model, entries):
    converted = {to_tood_lib_name(e["name"], "mmdetection"): tuple(e["shape"]) for e in entries}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == converted
    assert to_tood_lib_name("neck.fpn_convs.3.conv.weight", "mmdetection") == "neck.fpn_convs.3.weight"
    assert to_tood_lib_name("bbox_head.cls_decomp.la_conv2.bias", "official") == "head.cls_decomp.layer_attention.2.bias"
    assert to_tood_lib_name("bbox_head.reg_offset_conv1.weight", "official") == "head.reg_offset_module.0.weight"


def test_mmdetection_checkpoint_file_loads(model, mmdet_state_dict, tmp_path, capsys):
    path = tmp_path / "tood_r50_fpn_1x_coco.pth"
    torch.save({"meta": {"mmdet_version": "2.25.0", "CLASSES": ("person",)}, "state_dict": mmdet_state_dict}, path)
    report = load_official_checkpoint(model, path)
    assert report.naming == "mmdetection" and report.loaded == len(mmdet_state_dict) == 383
    assert "MMDetection naming" in capsys.readouterr().out
    assert_loaded(model, mmdet_state_dict, "mmdetection")


def test_official_naming_loads_the_same(model, mmdet_state_dict, capsys):
    official = to_official(mmdet_state_dict)
    assert "bbox_head.cls_decomp.la_conv1.weight" in official and "bbox_head.cls_prob_conv2.bias" in official
    assert detect_naming(official) == "official"
    report = load_official_checkpoint(model, {"state_dict": official})
    assert report.naming == "official" and report.loaded == 383
    assert "official fcjian/TOOD naming" in capsys.readouterr().out
    assert_loaded(model, official, "official")


def test_bare_state_dict_without_num_batches_tracked(model, mmdet_state_dict, tmp_path):
    older = {k: v for k, v in mmdet_state_dict.items() if not k.endswith("num_batches_tracked")}
    torch.save(older, tmp_path / "old.pth")
    report = load_official_checkpoint(model, tmp_path / "old.pth", verbose=False)
    assert report.loaded == len(older) and len(report.kept_from_model) == 53
    assert_loaded(model, older, "mmdetection")


def test_our_own_naming_round_trips(model):
    converted, naming = convert_state_dict(model.state_dict())
    assert naming == "tood_lib" and converted.keys() == model.state_dict().keys()


def test_mismatched_keys_are_listed_and_nothing_is_loaded(model, mmdet_state_dict):
    broken = dict(mmdet_state_dict)
    broken["bbox_head.tood_regs.weight"] = broken.pop("bbox_head.tood_reg.weight")  # renamed
    del broken["neck.fpn_convs.4.conv.bias"]  # missing
    broken["bbox_head.tood_cls.weight"] = torch.zeros(20, 256, 3, 3)  # another class count
    broken["bbox_head.tood_cls.bias"] = torch.zeros(20)
    before = model.state_dict()["head.inter_convs.0.conv.weight"].clone()
    with pytest.raises(ValueError) as info:
        load_official_checkpoint(model, {"state_dict": broken})
    message = str(info.value)
    assert "MMDetection naming" in message
    missing = message.split("missing from the checkpoint (2):\n")[1].split("unexpected")[0]
    assert "bbox_head.tood_reg.weight  (ours: head.tood_reg.weight)" in missing
    assert "neck.fpn_convs.4.conv.bias  (ours: neck.fpn_convs.4.bias)" in missing
    assert "unexpected in the checkpoint (1):\n    bbox_head.tood_regs.weight" in message
    assert ("bbox_head.tood_cls.weight  (ours: head.tood_cls.weight): model expects (80, 256, 3, 3), "
            "checkpoint has (20, 256, 3, 3)") in message
    assert "number of classes differs" in message
    assert torch.equal(model.state_dict()["head.inter_convs.0.conv.weight"], before)


def test_strict_false_loads_what_fits(model, mmdet_state_dict):
    other_classes = dict(mmdet_state_dict, **{"bbox_head.tood_cls.weight": torch.zeros(20, 256, 3, 3),
                                              "bbox_head.tood_cls.bias": torch.zeros(20)})
    report = load_official_checkpoint(model, other_classes, strict=False, verbose=False)
    assert report.misshaped == ["head.tood_cls.weight", "head.tood_cls.bias"]
    assert report.loaded == 381 and not report.missing and not report.unexpected
    assert torch.equal(model.state_dict()["head.tood_reg.weight"], mmdet_state_dict["bbox_head.tood_reg.weight"])


def test_long_lists_are_truncated_and_dcn_keys_hinted(model, mmdet_state_dict):
    no_layer4 = {k: v for k, v in mmdet_state_dict.items() if not k.startswith("backbone.layer4.")}
    no_layer4["backbone.layer2.0.conv2.conv_offset.weight"] = torch.zeros(27, 128, 3, 3)
    with pytest.raises(ValueError, match=r"missing from the checkpoint \(\d+\):(.|\n)*\.\.\. and \d+ more") as info:
        load_official_checkpoint(model, no_layer4)
    assert "backbone.layer2.0.conv2.conv_offset.weight" in str(info.value)
    assert "DCN" in str(info.value)


def test_torchvision_resnet_is_not_a_tood_checkpoint(model, tmp_path):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(ValueError, match=r"Not a TOOD checkpoint(.|\n)*plain ResNet/ResNeXt") as info:
        load_official_checkpoint(model, tmp_path / "resnet50.pth")
    assert "bbox_head.tood_cls.weight" in str(info.value)  # says what was expected
    assert "resnet50.pth" in str(info.value)


@pytest.mark.parametrize("head_key, detector", [("bbox_head.retina_cls.weight", "RetinaNet"),
                                                ("bbox_head.atss_cls.weight", "ATSS")])
def test_other_detectors_are_refused(model, mmdet_state_dict, head_key, detector):
    other = {k: v for k, v in mmdet_state_dict.items() if not k.startswith("bbox_head.")}
    other[head_key] = torch.zeros(80, 256, 3, 3)
    other["bbox_head.cls_convs.0.conv.weight"] = torch.zeros(256, 256, 3, 3)
    with pytest.raises(ValueError, match=rf"Not a TOOD checkpoint(.|\n)*{detector}: it has '{re.escape(head_key)}'"):
        load_official_checkpoint(model, {"state_dict": other})


def test_files_that_are_not_checkpoints(model, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        load_official_checkpoint(model, tmp_path / "notes.txt")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list"):
        load_official_checkpoint(model, tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(model, tmp_path / "absent.pth")
