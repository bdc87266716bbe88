"""Inference post-processing (spec §3 Test): per-level top-k, threshold, class-wise NMS, clip, rescale."""
import torch

from tood_lib.model.head_output import HeadOutput
from tood_lib.postprocess import postprocess


def one_level_output(scores, boxes, stride=8):
    """scores (N, K), boxes (N, 4) in pixels -> a one-level HeadOutput laid out as a 1xN map."""
    n, k = scores.shape
    return HeadOutput(scores=[scores.t().reshape(1, k, 1, n)], boxes=[(boxes / stride).t().reshape(1, 4, 1, n)],
                      strides=(stride,))


SIZE = torch.tensor([[100, 200]])  # (h, w)


def test_classwise_nms_and_threshold():
    boxes = torch.tensor([[10, 10, 50, 50], [12, 12, 52, 52], [10, 10, 50, 50], [100, 10, 150, 60.]])
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.04, 0.0]])
    det = postprocess(one_level_output(scores, boxes), SIZE, SIZE)[0]
    # box 1 overlaps box 0 (IoU ≈ 0.82 > 0.6) in the same class: suppressed; box 2 is the same
    # place in another class: kept; box 3 is below the 0.05 threshold
    assert det["labels"].tolist() == [0, 1]
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(det["boxes"], boxes[[0, 2]])


def test_iou_threshold_is_0_6():
    # two boxes with IoU exactly 0.5: both survive NMS at 0.6
    boxes = torch.tensor([[0, 0, 30, 10], [10, 0, 40, 10.]])  # inter 20·10, union 400 -> IoU 0.5
    scores = torch.tensor([[0.9], [0.8]])
    assert len(postprocess(one_level_output(scores, boxes), SIZE, SIZE)[0]["boxes"]) == 2
    assert len(postprocess(one_level_output(scores, boxes), SIZE, SIZE, iou_thr=0.4)[0]["boxes"]) == 1


def test_per_level_topk_happens_before_the_threshold():
    torch.manual_seed(0)
    n = 50
    boxes = torch.stack([torch.tensor([4.0 * i, 0, 4.0 * i + 3, 3]) for i in range(n)])
    scores = torch.linspace(0.1, 0.6, n)[:, None]
    det = postprocess(one_level_output(scores, boxes), SIZE, SIZE, nms_pre=10)[0]
    assert len(det["scores"]) == 10  # only the 10 best locations survive the per-level cut
    assert det["scores"].min() >= scores[-10, 0] - 1e-6


def test_max_per_image_and_sorting():
    n = 150
    boxes = torch.stack([torch.tensor([float(i), 0, i + 0.5, 0.5]) for i in range(n)])
    scores = torch.rand(n, 1) * 0.9 + 0.06
    det = postprocess(one_level_output(scores, boxes), torch.tensor([[10, 200]]), torch.tensor([[10, 200]]))[0]
    assert len(det["scores"]) == 100
    assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_boxes_are_clipped_to_the_resized_image_and_rescaled_to_the_original():
    boxes = torch.tensor([[-10, 20, 120, 90.]])
    scores = torch.tensor([[0.5]])
    resized, original = torch.tensor([[80, 100]]), torch.tensor([[40, 50]])  # image was upscaled x2
    det = postprocess(one_level_output(scores, boxes), resized, original)[0]
    torch.testing.assert_close(det["boxes"], torch.tensor([[0.0, 10.0, 50.0, 40.0]]))


def test_images_of_a_batch_are_independent():
    out = HeadOutput(scores=[torch.tensor([[[[0.9]]], [[[0.01]]]])],
                     boxes=[torch.tensor([[1.0, 1.0, 2.0, 2.0]]).reshape(1, 4, 1, 1).repeat(2, 1, 1, 1)], strides=(8,))
    dets = postprocess(out, torch.tensor([[32, 32], [32, 32]]), torch.tensor([[32, 32], [32, 32]]))
    assert len(dets[0]["scores"]) == 1 and len(dets[1]["scores"]) == 0
    torch.testing.assert_close(dets[0]["boxes"], torch.tensor([[8.0, 8.0, 16.0, 16.0]]))
