"""The network differences of Table 1's other detectors, and the full-size parameter counts of every
Table 1 experiment against the paper's (computed from our modules, rounded as the paper rounds)."""
import pytest
import torch

from tood_lib.ablations.grid import PAPER_ROWS, experiment_config
from tood_lib.analysis.complexity import count_parameters
from tood_lib.analysis.paper_tables import paper_table
from tood_lib.model.backbone import PretrainedWeightsUnavailable, ResNetBackbone
from tood_lib.model.detector import build_model
from tood_lib.model.fpn import FPN
from tood_lib.model.parallel_head import ParallelHead


def test_caffe_style_moves_the_stride_to_the_1x1_conv_and_keeps_the_shapes():
    pytorch, caffe = ResNetBackbone(50, frozen_stages=-1), ResNetBackbone(50, frozen_stages=-1, style="caffe")
    for stage_p, stage_c in zip(pytorch.stages()[1:], caffe.stages()[1:]):
        assert stage_p[0].conv1.stride == (1, 1) and stage_p[0].conv2.stride == (2, 2)
        assert stage_c[0].conv1.stride == (2, 2) and stage_c[0].conv2.stride == (1, 1)
    assert caffe.layer1[0].conv2.stride == (1, 1)  # layer1 does not downsample in either style
    x = torch.randn(1, 3, 64, 96)
    assert [f.shape for f in pytorch(x)] == [f.shape for f in caffe(x)]
    with pytest.raises(ValueError, match="caffe"):
        ResNetBackbone(18, style="caffe")


def test_frozen_batchnorm_affine_and_caffe_weights():
    net = ResNetBackbone(50, frozen_stages=1, norm_trainable=False)
    bn = [p for n, p in net.named_parameters() if ".bn" in n or "downsample.1" in n or n.startswith("bn1")]
    assert bn and not any(p.requires_grad for p in bn)
    assert all(p.requires_grad for n, p in net.layer2.named_parameters() if "conv" in n)
    with pytest.raises(PretrainedWeightsUnavailable, match="caffe weights"):
        ResNetBackbone(50, style="caffe", pretrained=True)


def test_caffe_weights_read_rgb_through_reversed_conv1(tmp_path):
    source = ResNetBackbone(50, frozen_stages=-1)
    path = tmp_path / "caffe.pth"
    torch.save(source.state_dict(), path)
    caffe = ResNetBackbone(50, frozen_stages=-1, style="caffe", pretrained=path)
    assert torch.equal(caffe.conv1.weight, source.conv1.weight.flip(1))
    assert torch.equal(caffe.layer3[2].conv2.weight, source.layer3[2].conv2.weight)


def test_fpn_extra_level_from_the_input():
    c = [torch.randn(1, 512, 16, 16), torch.randn(1, 1024, 8, 8), torch.randn(1, 2048, 4, 4)]
    fpn = FPN([512, 1024, 2048], 256, extra_source="input")
    assert fpn.fpn_convs[3].in_channels == 2048 and fpn.fpn_convs[4].in_channels == 256
    outs = fpn(c)
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]
    torch.testing.assert_close(outs[3], fpn.fpn_convs[3](c[2]))
    with pytest.raises(ValueError, match="extra_source"):
        FPN([512, 1024, 2048], 256, extra_source="inputs")


def test_parallel_head_conv_bias():
    assert all(c.conv.bias is not None for c in ParallelHead(10, 64, 64, gn_groups=16, conv_bias=True).cls_convs)
    assert all(c.conv.bias is None for c in ParallelHead(10, 64, 64, gn_groups=16).reg_convs)


@pytest.mark.parametrize("key", list(PAPER_ROWS[1]), ids=lambda k: f"{k[0]}-{k[1]}")
def test_full_size_parameters_match_table1(key):
    paper = paper_table(1).set_index(["detector", "head"]).loc[key]
    torch.manual_seed(0)
    params = count_parameters(build_model(experiment_config(PAPER_ROWS[1][key], "coco")))
    assert round(params["head_trainable"] / 1e6, 2) == paper["head_params_m"]
    assert round(params["trainable"] / 1e6, 2) == paper["total_params_m"]


def test_missing_caffe_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="download.openmmlab.com"):
        ResNetBackbone(50, style="caffe", pretrained=tmp_path / "resnet50_caffe-788b5fa3.pth")


def test_full_size_macs_in_mmcv_convention():
    """mmcv's convention (what the paper's "FLOPs" count): the T-Head row equals Table 1 to the digit;
    the parallel head is one operation per tower-output element (0.04 G) above it."""
    from tood_lib.analysis.complexity import count_macs

    paper = paper_table(1).set_index(["detector", "head"])
    for key, tolerance in ((("ATSS (anchor-free)", "T-head"), 0.005), (("ATSS (anchor-free)", "parallel"), 0.05)):
        torch.manual_seed(0)
        model = build_model(experiment_config(PAPER_ROWS[1][key], "coco"))
        macs, conv = count_macs(model, convention="mmcv"), count_macs(model)
        assert abs(macs["head"] / 1e9 - paper.loc[key, "head_gflops"]) < tolerance
        assert abs(macs["total"] / 1e9 - paper.loc[key, "total_gflops"]) < tolerance
        assert 0.6e9 < macs["total"] - conv["total"] < 0.8e9  # biases, norms, ReLUs and pooling
    with pytest.raises(ValueError, match="convention"):
        count_macs(model, 64, 64, convention="fvcore")
