"""The T-Head (spec §1.4): sizes, the official initialisation, task decomposition, alignment."""
import math

import pytest
import torch
import torch.nn.functional as F

from tood_lib.model.parallel_head import ParallelHead
from tood_lib.model.t_head import (BIAS_PRIOR, TaskAlignedHead, TaskDecomposition, align_boxes,
                                   sigmoid_geometric_mean)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    return TaskAlignedHead()


def test_t_head_parameter_count_matches_the_paper(head):
    # spec §5: 6 interactive convs, 2 decompositions, cls/reg, M, O, 5 scales = 4,823,790 (Table 1: 4.82 M)
    assert n_params(head) == 4_823_790
    assert n_params(head.inter_convs) == 6 * (589_824 + 512)
    assert n_params(head.cls_decomp) == 49_184 + 198 + 393_216 + 512
    assert n_params(head.cls_prob_module) == 98_368 + 577
    assert n_params(head.reg_offset_module) == 98_368 + 4_616


def test_parallel_head_parameter_count_matches_the_paper():
    assert n_params(ParallelHead()) == 4_918_618  # Table 1: 4.92 M
    assert n_params(ParallelHead(centerness=False)) == 4_918_618 - 2_305


def test_layer_attention_shapes(head):
    la = head.cls_decomp.layer_attention
    assert la[0].weight.shape == (32, 1536, 1, 1) and la[2].weight.shape == (6, 32, 1, 1)
    assert head.cls_decomp.reduction_conv.conv.weight.shape == (256, 1536, 1, 1)


def test_official_initialisation(head):
    assert BIAS_PRIOR == pytest.approx(-math.log(99))
    assert head.tood_cls.bias.eq(BIAS_PRIOR).all() and head.cls_prob_module[2].bias.eq(BIAS_PRIOR).all()
    assert head.tood_reg.bias.eq(0).all() and head.reg_offset_module[2].bias.eq(0).all()
    assert head.cls_prob_module[0].bias.eq(0).all() and head.reg_offset_module[0].bias.eq(0).all()
    for decomp in (head.cls_decomp, head.reg_decomp):
        for conv in (decomp.layer_attention[0], decomp.layer_attention[2]):
            assert conv.weight.std().item() == pytest.approx(0.001, rel=0.1) and conv.bias.eq(0).all()
        assert decomp.reduction_conv.conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    for conv in head.inter_convs:
        assert conv.conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert conv.conv.bias is None and conv.gn.num_groups == 32
    for m in (head.tood_cls, head.tood_reg, head.cls_prob_module[0]):
        assert m.weight.std().item() == pytest.approx(0.01, rel=0.1)
    for m in (head.reg_offset_module[0], head.reg_offset_module[2]):
        assert m.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert all(s.scale.item() == 1.0 for s in head.scales)


def test_initial_score_is_one_percent_everywhere(head):
    # On a flat feature map GN outputs 0, so every logit is its bias and P_align = sqrt(0.01·0.01).
    feats = [torch.zeros(1, 256, s, s) for s in (8, 4, 2, 1, 1)]
    out = head(feats)
    for scores in out.scores:
        torch.testing.assert_close(scores, torch.full_like(scores, 0.01))
    # On real-looking features the tiny weights keep it close to 0.01.
    torch.manual_seed(1)
    out = head([torch.randn(1, 256, s, s) for s in (8, 4, 2, 1, 1)])
    allscores = torch.cat([s.flatten() for s in out.scores])
    assert allscores.mean().item() == pytest.approx(0.01, rel=0.2)
    assert allscores.min() > 0.003 and allscores.max() < 0.03


def test_initial_layer_attention_is_one_half_and_boxes_are_one_stride(head):
    torch.manual_seed(2)
    out = head([torch.randn(2, 256, s, s) for s in (8, 4, 2, 1, 1)], return_internals=True)
    for level in out.internals:
        torch.testing.assert_close(level["cls_attention"], torch.full((2, 6), 0.5), atol=0.01, rtol=0)
        assert level["reg_attention"].shape == (2, 6)
        assert level["offsets"].abs().max() < 0.05  # O starts at ≈ 0
    # anchor-free: d = exp(≈0) ≈ 1 stride on each side of the grid point
    before = out.internals[0]["boxes_before"]
    size = torch.stack((before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]))
    assert size.median().item() == pytest.approx(2.0, rel=0.1) and size.min() > 0.8 and size.max() < 4.0
    # on a flat map Z_reg is its zero bias: exactly one stride around the grid point (x=5, y=3)
    flat = head([torch.zeros(1, 256, s, s) for s in (8, 4, 2, 1, 1)], return_internals=True)
    torch.testing.assert_close(flat.internals[0]["boxes_before"][0, :, 3, 5], torch.tensor([4.0, 2.0, 6.0, 4.0]))
    torch.testing.assert_close(flat.boxes[0][0, :, 3, 5], torch.tensor([4.0, 2.0, 6.0, 4.0]))  # O = 0 there too


def test_internals_have_the_documented_shapes(head):
    out = head([torch.randn(2, 256, 6, 10), torch.randn(2, 256, 3, 5), torch.randn(2, 256, 2, 3),
                torch.randn(2, 256, 1, 2), torch.randn(2, 256, 1, 1)], return_internals=True)
    lv = out.internals[0]
    assert len(lv["inter_feats"]) == 6 and lv["inter_feats"][0].shape == (2, 256, 6, 10)
    assert lv["cls_logits"].shape == (2, 80, 6, 10) and lv["prob_map"].shape == (2, 1, 6, 10)
    assert lv["offsets"].shape == (2, 8, 6, 10)
    assert lv["boxes_before"].shape == lv["boxes_after"].shape == (2, 4, 6, 10)
    assert out.scores[0].shape == (2, 80, 6, 10) and out.boxes[4].shape == (2, 4, 1, 1)
    assert out.flat_scores().shape == (2, 60 + 15 + 6 + 2 + 1, 80)


def test_task_decomposition_fold_equals_scaling_then_conv():
    torch.manual_seed(3)
    decomp = TaskDecomposition(feat_channels=32, stacked_convs=6, gn_groups=8)
    for p in decomp.parameters():
        torch.nn.init.normal_(p, std=0.1)
    inter = torch.randn(2, 192, 5, 7)
    pooled = F.adaptive_avg_pool2d(inter, 1)
    folded, w = decomp(inter, pooled)
    # explicit: scale each layer's 32 channels by w_k, then the 1x1 conv, GN, ReLU
    scaled = inter * w.repeat_interleave(32, dim=1)[:, :, None, None]
    explicit = F.relu(decomp.reduction_conv.gn(F.conv2d(scaled, decomp.reduction_conv.conv.weight)))
    torch.testing.assert_close(folded, explicit, rtol=1e-5, atol=1e-5)
    assert w.shape == (2, 6) and ((w > 0) & (w < 1)).all()


def bilinear_zero_padded(image, y, x):
    """Plain bilinear sampling of a 2-D map at real (y, x), zero outside — the textbook rule."""
    h, w = image.shape
    y0, x0 = math.floor(y), math.floor(x)
    value = 0.0
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        if 0 <= yy < h and 0 <= xx < w:
            value += image[yy, xx].item() * (1 - abs(y - yy)) * (1 - abs(x - xx))
    return value


def test_deform_conv_alignment_equals_per_side_bilinear_resampling():
    torch.manual_seed(4)
    boxes = torch.randn(2, 4, 5, 6)
    offsets = torch.randn(2, 8, 5, 6) * 2.0  # some samples fall outside the map
    aligned = align_boxes(boxes, offsets)
    expected = torch.zeros_like(boxes)
    for b in range(2):
        for c in range(4):
            for i in range(5):
                for j in range(6):
                    dy, dx = offsets[b, 2 * c, i, j].item(), offsets[b, 2 * c + 1, i, j].item()
                    expected[b, c, i, j] = bilinear_zero_padded(boxes[b, c], i + dy, j + dx)
    torch.testing.assert_close(aligned, expected, rtol=1e-5, atol=1e-5)
    # zero offsets: identity
    torch.testing.assert_close(align_boxes(boxes, torch.zeros_like(offsets)), boxes)


def test_sigmoid_geometric_mean_matches_autograd_and_stays_finite():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sigmoid_geometric_mean, (x, y))
    z = sigmoid_geometric_mean(x, y)
    torch.testing.assert_close(z, (x.sigmoid() * y.sigmoid()).sqrt())
    # where a sigmoid underflows to 0, sqrt's autograd gives NaN; the closed form gives 0
    x = torch.full((1, 1, 1, 1), -200.0, requires_grad=True)
    y = torch.zeros(1, 1, 1, 1, requires_grad=True)
    sigmoid_geometric_mean(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_anchor_based_decoding_starts_at_the_anchor_box():
    head = TaskAlignedHead(num_classes=3, in_channels=32, feat_channels=32, gn_groups=8, anchor_type="anchor_based")
    boxes = head.decode(torch.zeros(1, 4, 2, 3), level=1)  # zero deltas = the 8·s anchor, in stride units
    torch.testing.assert_close(boxes[0, :, 1, 2], torch.tensor([2 - 4.0, 1 - 4.0, 2 + 4.0, 1 + 4.0]))


def test_dcn_head_has_deformable_first_two_convs():
    from tood_lib.model.dcn import ModulatedDeformConv2d

    head = TaskAlignedHead(num_classes=4, in_channels=32, feat_channels=32, gn_groups=8, num_dcn=2)
    kinds = [isinstance(m.conv, ModulatedDeformConv2d) for m in head.inter_convs]
    assert kinds == [True, True, False, False, False, False]
    assert head.inter_convs[0].conv.conv_offset.out_channels == 4 * 3 * 9  # deform_groups=4
    out = head([torch.randn(1, 32, s, s) for s in (8, 4, 2, 1, 1)])
    assert all(torch.isfinite(s).all() for s in out.scores)


def test_wrong_number_of_levels_is_a_clear_error(head):
    with pytest.raises(ValueError, match="expected 5 feature maps"):
        head([torch.zeros(1, 256, 4, 4)] * 3)


def test_non_finite_offsets_give_nan_not_a_crash():
    # torchvision's CPU kernel indexes memory with the sampling position: NaN must never reach it
    boxes = torch.randn(1, 4, 3, 3)
    offsets = torch.zeros(1, 8, 3, 3)
    offsets[0, 2, 1, 1] = float("nan")
    offsets[0, 5, 2, 0] = float("inf")
    aligned = align_boxes(boxes, offsets)
    assert torch.isnan(aligned[0, :, 1, 1]).all() and torch.isnan(aligned[0, :, 2, 0]).all()
    finite = torch.ones(3, 3, dtype=torch.bool)
    finite[1, 1] = finite[2, 0] = False
    torch.testing.assert_close(aligned[0][:, finite], boxes[0][:, finite])
