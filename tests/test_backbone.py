"""ResNetBackbone: parameter counts, freezing, norm_eval, DCN, ResNeXt, and pretrained weights."""
from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tood_lib.model import backbone as backbone_module
from tood_lib.model.backbone import PretrainedWeightsUnavailable, ResNetBackbone
from tood_lib.model.dcn import ModulatedDeformConv2d

KEYS_FILE = Path(__file__).resolve().parents[2] / "shared" / "mmdet_tood_r50_keys.json"


def n_params(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def batch_norms(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.fixture(scope="module")
def r50():
    return ResNetBackbone(50)


def test_resnet50_parameter_counts(r50):
    # Spec §5: ResNet-50 without fc has 23,508,032 parameters; stem + layer1 hold 225,344 of them.
    assert n_params(r50) == 23_508_032
    assert n_params(r50, trainable=False) == 225_344
    assert r50.out_channels == [512, 1024, 2048]
    assert not hasattr(r50, "fc") and not hasattr(r50, "avgpool")


@pytest.mark.skipif(not KEYS_FILE.is_file(), reason=f"reference key list not found at {KEYS_FILE}")
def test_state_dict_matches_reference_backbone_keys(r50):
    """Same names and shapes as the reference checkpoint's ``backbone.*``, same frozen parameters."""
    entries = [e for e in json.loads(KEYS_FILE.read_text())["entries"] if e["name"].startswith("backbone.")]
    reference = {e["name"][len("backbone."):]: tuple(e["shape"]) for e in entries}
    ours = {k: tuple(v.shape) for k, v in r50.state_dict().items()}
    assert ours == reference
    params = dict(r50.named_parameters())
    for e in entries:
        if e["kind"] == "param":
            assert params[e["name"][len("backbone."):]].requires_grad == e["requires_grad"], e["name"]


def test_forward_shapes_and_strides(r50):
    outs = r50(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]
    small = ResNetBackbone(18, frozen_stages=-1, norm_eval=False)
    assert small.out_channels == [128, 256, 512]
    assert [o.shape[1] for o in small(torch.randn(1, 3, 64, 64))] == small.out_channels


def test_frozen_stages_have_no_grad_and_stay_in_eval(r50):
    r50.train()
    for module in (r50.conv1, r50.bn1, r50.layer1):
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for stage in (r50.layer2, r50.layer3, r50.layer4) for p in stage.parameters())
    # The convs of unfrozen stages do train (only BN is held in eval by norm_eval).
    assert r50.layer2.training and r50.layer2[0].conv1.training


@pytest.mark.parametrize("frozen_stages, frozen_params", [(-1, 0), (0, 9_536), (2, 225_344 + 1_219_584)])
def test_frozen_stages_levels(frozen_stages, frozen_params):
    model = ResNetBackbone(50, frozen_stages=frozen_stages, norm_eval=False).train()
    assert n_params(model, trainable=False) == frozen_params
    assert model.bn1.training == (frozen_stages < 0)


def test_norm_eval_keeps_every_bn_in_eval_but_affine_trainable(r50):
    r50.train()
    assert all(not bn.training for bn in batch_norms(r50))
    for stage in (r50.layer2, r50.layer3, r50.layer4):
        for bn in batch_norms(stage):
            assert bn.weight.requires_grad and bn.bias.requires_grad
    r50.eval().train()  # toggling must not un-freeze anything
    assert all(not bn.training for bn in batch_norms(r50))


def test_norm_eval_false_trains_bn_of_unfrozen_stages_only():
    model = ResNetBackbone(18, frozen_stages=1, norm_eval=False).train()
    assert all(not bn.training for bn in batch_norms(model.layer1)) and not model.bn1.training
    assert all(bn.training for bn in batch_norms(model.layer2))


def test_norm_eval_running_stats_do_not_move():
    model = ResNetBackbone(18, frozen_stages=-1, norm_eval=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.randn(2, 3, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_dcn_stages_use_modulated_deform_conv_with_zero_offsets():
    model = ResNetBackbone(50, dcn_stages=(False, True, True, True))
    assert all(isinstance(block.conv2, nn.Conv2d) for block in model.layer1)
    for stage in (model.layer2, model.layer3, model.layer4):
        for block in stage:
            assert isinstance(block.conv2, ModulatedDeformConv2d)
            assert block.conv2.bias is None and block.conv2.deform_groups == 1
            assert torch.count_nonzero(block.conv2.conv_offset.weight) == 0
            assert torch.count_nonzero(block.conv2.conv_offset.bias) == 0
    keys = model.state_dict()
    assert keys["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert keys["layer2.0.conv2.conv_offset.weight"].shape == (27, 128, 3, 3)
    assert "layer2.0.conv2.conv_offset.bias" in keys and "layer1.0.conv2.conv_offset.weight" not in keys

    # Zero offsets sample the regular grid with mask sigmoid(0) = 0.5: half the plain conv,
    # here on the stride-2 conv of layer2's first block.
    dcn = model.layer2[0].conv2
    x = torch.randn(1, 128, 9, 11)
    plain = F.conv2d(x, dcn.weight, stride=2, padding=1)
    torch.testing.assert_close(dcn(x), 0.5 * plain, rtol=1e-4, atol=1e-5)
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [512, 1024, 2048]


def test_resnext101_64x4d_has_grouped_convs_and_grouped_dcn():
    model = ResNetBackbone(101, groups=64, width_per_group=4, dcn_stages=(False, False, True, True))
    conv = model.layer1[0].conv2
    assert conv.groups == 64 and conv.weight.shape == (256, 4, 3, 3)  # 256 = 64 groups x width 4
    assert len(model.layer3) == 23 and model.out_channels == [512, 1024, 2048]
    dcn = model.layer3[0].conv2
    assert isinstance(dcn, ModulatedDeformConv2d) and dcn.groups == 64 and dcn.weight.shape == (1024, 16, 3, 3)
    x = torch.randn(1, 1024, 6, 5)
    torch.testing.assert_close(dcn(x), 0.5 * F.conv2d(x, dcn.weight, stride=2, padding=1, groups=64),
                               rtol=1e-4, atol=1e-5)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2)]


def test_unknown_depth_and_bad_arguments():
    with pytest.raises(ValueError, match=r"depth=42 is not supported.*\[18, 34, 50, 101\]"):
        ResNetBackbone(42)
    with pytest.raises(ValueError, match="BasicBlock"):
        ResNetBackbone(18, dcn_stages=(False, True, False, False))
    with pytest.raises(ValueError, match="frozen_stages"):
        ResNetBackbone(18, frozen_stages=5)


def test_pretrained_path_loads_torchvision_and_mmcv_files(tmp_path):
    reference = torchvision.models.resnet18().state_dict()  # with fc.*, which must be ignored
    bare, wrapped = tmp_path / "bare.pth", tmp_path / "mmcv.pth"
    torch.save(reference, bare)
    torch.save({"state_dict": reference, "meta": {"mmcv_version": "1.3"}}, wrapped)
    for path in (bare, str(wrapped)):
        model = ResNetBackbone(18, pretrained=path)
        for key, value in model.state_dict().items():
            assert torch.equal(value, reference[key]), key
        assert not model.conv1.weight.requires_grad  # still frozen after loading


def test_pretrained_into_dcn_takes_3x3_weight_and_keeps_zero_offsets(tmp_path):
    reference = torchvision.models.resnet50().state_dict()
    del reference["layer1.0.bn1.num_batches_tracked"]  # older files lack these buffers
    torch.save(reference, tmp_path / "r50.pth")
    model = ResNetBackbone(50, dcn_stages=(False, False, False, True), pretrained=tmp_path / "r50.pth")
    assert torch.equal(model.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    assert torch.count_nonzero(model.layer4[1].conv2.conv_offset.weight) == 0


def test_pretrained_file_of_another_network_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"do not fit a ResNet-50(.|\n)*missing(.|\n)*wrong shape"):
        ResNetBackbone(50, pretrained=tmp_path / "r18.pth")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ValueError, match="Could not read"):
        ResNetBackbone(18, pretrained=tmp_path / "notes.txt")


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """An empty hub cache, and a download that fails the way an offline machine does."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


@pytest.mark.parametrize("arch, filename", [
    ((50, 1, 64), "resnet50-0676ba61.pth"),  # IMAGENET1K_V1 = mmcv's torchvision://resnet50
    ((101, 1, 64), "resnet101-63fe2227.pth"),
    ((101, 64, 4), "resnext101_64x4d-173b62eb.pth"),
])
def test_offline_pretrained_names_file_directory_and_url(empty_torch_home, arch, filename):
    directory = empty_torch_home / "hub" / "checkpoints"
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        backbone_module._download_torchvision_weights(*arch)
    message = str(info.value)
    assert filename in message and str(directory) in message
    assert f"https://download.pytorch.org/models/{filename}" in message
    assert "URLError" in message and "Traceback" not in message


def test_offline_pretrained_through_the_constructor(empty_torch_home):
    with pytest.raises(PretrainedWeightsUnavailable, match="resnet50-0676ba61.pth"):
        ResNetBackbone(50, pretrained=True)


def test_pretrained_true_uses_the_hub_cache(empty_torch_home):
    """A file placed where the message says is picked up without any download."""
    reference = torchvision.models.resnet18().state_dict()
    directory = empty_torch_home / "hub" / "checkpoints"
    directory.mkdir(parents=True)
    torch.save(reference, directory / "resnet18-f37072fd.pth")
    model = ResNetBackbone(18, pretrained=True)
    assert torch.equal(model.layer3[0].conv1.weight, reference["layer3.0.conv1.weight"])
