"""Box arithmetic (reference semantics) and the priors (spec §1.3)."""
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import generalized_box_iou

from tood_lib.boxes import (aligned_giou, box_iou, box_to_distance, delta_xywh_decode, delta_xywh_encode,
                            distance_to_box)
from tood_lib.model.priors import level_priors, multilevel_priors, prior_points, valid_prior_mask


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat((xy, xy + 1 + torch.rand(n, 2, generator=g) * 50), dim=1)


def test_iou_and_giou_agree_with_torchvision_on_proper_boxes():
    a, b = random_boxes(20, 0), random_boxes(30, 1)
    torch.testing.assert_close(box_iou(a, b), tv_box_iou(a, b))
    torch.testing.assert_close(aligned_giou(a, b[:20]), generalized_box_iou(a, b[:20]).diagonal())
    # batched over a leading dimension
    torch.testing.assert_close(box_iou(a[None].repeat(3, 1, 1), b[None].repeat(3, 1, 1))[2], tv_box_iou(a, b))


def test_degenerate_boxes_follow_the_reference_eps_clamps():
    pred = torch.tensor([[10.0, 10.0, 5.0, 20.0]])  # x2 < x1: negative area
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    assert box_iou(pred, gt).item() == 0.0  # overlap clamped at 0
    point = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert box_iou(point, point).item() == 0.0  # 0 / eps, not NaN


def test_distance_and_delta_coders_invert():
    points = torch.rand(10, 2) * 50
    d = torch.rand(10, 4) * 10
    torch.testing.assert_close(box_to_distance(points, distance_to_box(points, d)), d)
    anchors, boxes = random_boxes(10, 2), random_boxes(10, 3)
    torch.testing.assert_close(delta_xywh_decode(anchors, delta_xywh_encode(anchors, boxes)), boxes, rtol=1e-4, atol=1e-3)


def test_delta_decoding_uses_the_reference_stds_and_clip():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    box = delta_xywh_decode(anchor, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(box, torch.tensor([[1.0, 0.0, 11.0, 10.0]]))  # dx·std 0.1·w 10 = 1 px
    huge = delta_xywh_decode(anchor, torch.tensor([[0.0, 0.0, 100.0, 0.0]]))
    assert (huge[0, 2] - huge[0, 0]).item() == pytest.approx(10 * 1000 / 16, rel=1e-5)  # |log(16/1000)| cap


def test_priors_are_8_stride_squares_on_cell_corners():
    priors = level_priors(2, 3, stride=16)
    assert priors.shape == (6, 4)
    torch.testing.assert_close(prior_points(priors)[:4], torch.tensor([[0.0, 0], [16, 0], [32, 0], [0, 16]]))
    torch.testing.assert_close(priors[0], torch.tensor([-64.0, -64.0, 64.0, 64.0]))  # side 8·16 = 128
    sizes = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    assert sum(len(p) for p in multilevel_priors(sizes, (8, 16, 32, 64, 128))) == 20_267  # spec §1.5


def test_valid_priors_follow_each_images_own_padded_shape():
    sizes, strides = [(4, 6), (2, 3)], (8, 16)
    pad = torch.tensor([[32, 48], [16, 32]])
    valid = valid_prior_mask(sizes, strides, pad)
    assert valid[0].all()
    level0 = valid[1, :24].reshape(4, 6)
    assert level0[:2, :4].all() and not level0[2:].any() and not level0[:, 4:].any()
    level1 = valid[1, 24:].reshape(2, 3)
    assert level1[0, :2].all() and not level1[1].any() and not level1[:, 2].any()
