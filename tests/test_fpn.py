"""FPN: P3-P7 shapes, the top-down path, the extra convs without ReLU, initialisation, parameters."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tood_lib.model.fpn import FPN

KEYS_FILE = Path(__file__).resolve().parents[2] / "shared" / "mmdet_tood_r50_keys.json"


@pytest.fixture(scope="module")
def fpn():
    torch.manual_seed(0)
    return FPN([512, 1024, 2048], 256, num_outs=5).eval()


def test_parameter_count_and_names(fpn):
    assert sum(p.numel() for p in fpn.parameters()) == 3_868_672  # spec §5
    assert len(fpn.lateral_convs) == 3 and len(fpn.fpn_convs) == 5
    assert all(isinstance(m, nn.Conv2d) for m in list(fpn.lateral_convs) + list(fpn.fpn_convs))
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm2d, nn.GroupNorm)) for m in fpn.modules())


@pytest.mark.skipif(not KEYS_FILE.is_file(), reason=f"reference key list not found at {KEYS_FILE}")
def test_state_dict_matches_reference_neck_keys(fpn):
    """The reference names minus its ConvModule's ``.conv``."""
    entries = json.loads(KEYS_FILE.read_text())["entries"]
    reference = {e["name"][len("neck."):].replace(".conv.", "."): tuple(e["shape"])
                 for e in entries if e["name"].startswith("neck.")}
    assert {k: tuple(v.shape) for k, v in fpn.state_dict().items()} == reference


def test_output_shapes_for_800x1216(fpn):
    # Spec §1.5: C3-C5 of a 1x3x800x1216 image; P6 and P7 are 13x19 and 7x10 (3x3, stride 2, pad 1).
    feats = [torch.randn(1, 512, 100, 152), torch.randn(1, 1024, 50, 76), torch.randn(1, 2048, 25, 38)]
    with torch.no_grad():
        outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 256, 100, 152), (1, 256, 50, 76), (1, 256, 25, 38),
                                               (1, 256, 13, 19), (1, 256, 7, 10)]


def small_fpn_and_features():
    torch.manual_seed(1)
    fpn = FPN([8, 16, 32], out_channels=4, num_outs=5)
    # Odd sizes, as from a 100x150 input: factor-2 upsampling would not land on these sizes.
    feats = [torch.randn(1, 8, 13, 19), torch.randn(1, 16, 7, 10), torch.randn(1, 32, 4, 5)]
    return fpn, feats


def nearest(x: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize by explicit indexing: source index floor(i * in / out)."""
    rows = torch.arange(size[0]) * x.shape[-2] // size[0]
    cols = torch.arange(size[1]) * x.shape[-1] // size[1]
    return x[..., rows[:, None], cols[None, :]]


def test_top_down_path_is_nearest_upsampling_to_the_exact_size():
    fpn, (c3, c4, c5) = small_fpn_and_features()
    with torch.no_grad():
        outs = fpn([c3, c4, c5])
        l5 = fpn.lateral_convs[2](c5)
        l4 = fpn.lateral_convs[1](c4) + nearest(l5, (7, 10))
        l3 = fpn.lateral_convs[0](c3) + nearest(l4, (13, 19))
        expected = [fpn.fpn_convs[0](l3), fpn.fpn_convs[1](l4), fpn.fpn_convs[2](l5)]
    for out, exp in zip(outs[:3], expected):
        torch.testing.assert_close(out, exp)
    assert [tuple(o.shape[-2:]) for o in outs] == [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2)]


def test_extra_levels_come_from_p5_output_without_relu():
    fpn, feats = small_fpn_and_features()
    with torch.no_grad():
        p3, p4, p5, p6, p7 = fpn(feats)
        assert torch.equal(p6, fpn.fpn_convs[3](p5))  # on the P5 *output*, not on C5
        assert torch.equal(p7, fpn.fpn_convs[4](p6))  # no ReLU between P6 and P7
        assert (p6 < 0).any()  # so a ReLU would have made a difference
        assert not torch.equal(p7, fpn.fpn_convs[4](p6.relu()))


def test_xavier_uniform_init_and_zero_bias(fpn):
    for conv in list(fpn.lateral_convs) + list(fpn.fpn_convs):
        assert torch.count_nonzero(conv.bias) == 0
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(6 / (fan_in + fan_out))
        # Uniform(-bound, bound): the extremes come close to the bound (PyTorch's default
        # kaiming-uniform would stay below 0.6 of it), and the std is bound / sqrt(3).
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.99 * bound
        assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
