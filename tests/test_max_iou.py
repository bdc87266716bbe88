"""RetinaNet's IoU-threshold assigner against a plain per-image transcription of MaxIoUAssigner."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tood_lib.assign import max_iou_assign
from tood_lib.boxes import box_iou


def reference_single(anchors, gt_boxes, pos_thr=0.5, neg_thr=0.4, min_pos_iou=0.0):
    """MMDetection's MaxIoUAssigner.assign_wrt_overlaps, one image, loops where the original loops:
    -> assigned (A,) with -1 ignored, 0 negative, i+1 positive for gt i."""
    overlaps = box_iou(gt_boxes, anchors)  # (G, A)
    A = anchors.shape[0]
    assigned = torch.full((A,), -1, dtype=torch.long)
    if len(gt_boxes) == 0:
        return assigned.fill_(0)
    max_overlaps, argmax = overlaps.max(dim=0)
    gt_max_overlaps, _ = overlaps.max(dim=1)
    assigned[(max_overlaps >= 0) & (max_overlaps < neg_thr)] = 0
    pos = max_overlaps >= pos_thr
    assigned[pos] = argmax[pos] + 1
    for i in range(len(gt_boxes)):
        if gt_max_overlaps[i] >= min_pos_iou:
            assigned[overlaps[i, :] == gt_max_overlaps[i]] = i + 1
    return assigned


def anchors_grid(n=6, stride=16):
    ys, xs = torch.meshgrid(torch.arange(n) * stride, torch.arange(n) * stride, indexing="ij")
    c = torch.stack((xs.flatten(), ys.flatten()), 1).float()
    return torch.cat((c - 32, c + 32), 1)


def test_thresholds_ignore_band_and_low_quality_matches():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],    # IoU 1.0 with gt 0: positive
                            [0.0, 0.0, 10.0, 6.0],     # IoU 0.6: positive
                            [0.0, 0.0, 10.0, 4.5],     # IoU 0.45: ignored
                            [0.0, 0.0, 10.0, 3.0],     # IoU 0.3: negative
                            [100.0, 100.0, 110.0, 130.0]])  # gt 1's only overlap, IoU 1/3: low-quality positive
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]]])
    a = max_iou_assign(anchors, gt, torch.tensor([[3, 7]]), torch.ones(1, 2, dtype=torch.bool))
    assert a.gt_index[0].tolist() == [0, 0, -1, -1, 1]
    assert a.labels[0].tolist() == [3, 3, -1, -1, 7]
    assert a.ignored[0].tolist() == [False, False, True, False, False]
    assert a.target[0].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    torch.testing.assert_close(a.iou[0], torch.tensor([1.0, 0.6, 0.0, 0.0, 1 / 3]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 80), st.floats(0, 80), st.floats(4, 60), st.floats(4, 60)), min_size=0, max_size=5),
       st.integers(0, 3))
def test_matches_the_reference_on_random_scenes(boxes, pad):
    anchors = anchors_grid()
    gt = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes]).reshape(-1, 4)
    G = len(gt) + pad
    padded = torch.zeros(1, G, 4)
    padded[0, :len(gt)] = gt
    padded[0, len(gt):] = torch.tensor([0.0, 0.0, 50.0, 50.0])  # padding rows hold junk: must be ignored
    mask = torch.zeros(1, G, dtype=torch.bool)
    mask[0, :len(gt)] = True
    labels = torch.arange(G)[None]
    a = max_iou_assign(anchors, padded, labels, mask)
    ref = reference_single(anchors, gt)
    assert torch.equal(a.gt_index[0], torch.where(ref > 0, ref - 1, torch.full_like(ref, -1)))
    assert torch.equal(a.ignored[0], ref == -1)


def test_invalid_priors_are_ignored_and_never_positive():
    anchors = anchors_grid(3)
    gt = torch.tensor([[[0.0, 0.0, 60.0, 60.0]]])
    valid = torch.ones(1, 9, dtype=torch.bool)
    valid[0, :4] = False
    a = max_iou_assign(anchors, gt, torch.tensor([[0]]), torch.ones(1, 1, dtype=torch.bool), valid)
    assert not a.positive[0, :4].any() and a.ignored[0, :4].all()
    assert a.positive[0, 4:].any()


def test_no_objects_means_all_negative():
    a = max_iou_assign(anchors_grid(2), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long),
                       torch.zeros(2, 0, dtype=torch.bool))
    assert not a.positive.any() and not a.ignored.any() and a.gt_index.shape == (2, 4)
