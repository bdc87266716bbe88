"""ATSS assignment (the warm-up assigner): hand-computed cases, batched vs reference, validation."""
import math
import statistics

import pytest
import torch

import tood_lib.assign.atss as atss
from tood_lib.assign import atss_assign
from tood_lib.assign.reference import atss_assign_reference
from tood_lib.model.priors import multilevel_priors, valid_prior_mask

GT = [0.0, 0.0, 10.0, 10.0]


IMPLEMENTATIONS = {"batched": atss_assign, "reference": atss_assign_reference}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def impl(request):
    """The hand-computed cases run through both the batched version and the reference."""
    return IMPLEMENTATIONS[request.param]


def one_image(gt_boxes, priors, num_level_priors, labels=None, impl=atss_assign, **kwargs):
    gt = torch.as_tensor(gt_boxes, dtype=torch.float32).view(1, -1, 4)
    labels = torch.zeros(gt.shape[:2], dtype=torch.long) if labels is None else torch.as_tensor(labels).view(1, -1)
    mask = torch.ones(gt.shape[:2], dtype=torch.bool)
    return impl(torch.as_tensor(priors, dtype=torch.float32), num_level_priors, gt, labels, mask, **kwargs)


def test_threshold_is_mean_plus_unbiased_std(impl):
    # One level, six priors: boxes (0, 0, 10, h) have IoU h/10 with the gt and centres (5, h/2) inside it.
    ious = [1.0, 0.93, 0.8, 0.3, 0.2, 0.1]
    priors = [[0, 0, 10, 10 * v] for v in ious]
    mean = statistics.mean(ious)
    # The case discriminates: with the population std the 0.93 prior would pass as well.
    assert mean + statistics.pstdev(ious) < 0.93 < mean + statistics.stdev(ious)
    out = one_image([GT], priors, [6], impl=impl)
    assert out.candidates[0, 0].sort().values.tolist() == [0, 1, 2, 3, 4, 5]
    assert out.positive[0].tolist() == [True, False, False, False, False, False]
    assert out.target[0, 0].item() == 1.0
    torch.testing.assert_close(out.iou[0, 0], torch.tensor(1.0))
    assert torch.equal(out.metric, out.iou)


def test_single_candidate_gives_nan_threshold_and_no_positive(impl):
    # std of one value is NaN (unbiased), so the reference assigns nothing; so do we.
    out = one_image([GT], [[0, 0, 10, 10]], [1], impl=impl)
    assert not out.positive.any()


def test_k_nearest_are_taken_per_level(impl):
    # Level 0: five priors at distances 1..5 from the gt centre (5, 5); level 1: three priors at
    # distances 3, 0.5, 4. With k = 2 each level contributes its own two nearest.
    def box(cx, cy, half):
        return [cx - half, cy - half, cx + half, cy + half]
    level0 = [box(5 + d, 5, 1) for d in (4, 1, 5, 2, 3)]           # ids 0-4
    level1 = [box(5, 5 + d, 2) for d in (3, 0.5, 4)]                # ids 5-7
    out = one_image([GT], level0 + level1, [5, 3], topk=2, impl=impl)
    assert out.candidates[0, 0].tolist() == [1, 3, 6, 5]            # nearest first within a level

    # An invalid prior is never a candidate: the next nearest on its level takes its place.
    valid = torch.ones(1, 8, dtype=torch.bool)
    valid[0, 1] = False
    out = one_image([GT], level0 + level1, [5, 3], topk=2, prior_valid=valid, impl=impl)
    assert out.candidates[0, 0].tolist() == [3, 4, 6, 5]

    # Fewer valid priors than k on a level: only those are candidates, the slot stays empty.
    valid = torch.tensor([[True, False, False, False, False, True, True, True]])
    out = one_image([GT], level0 + level1, [5, 3], topk=2, prior_valid=valid, impl=impl)
    assert out.candidates[0, 0].tolist() == [0, -1, 6, 5]


def test_equidistant_priors_go_to_lowest_index(impl):
    # Four priors at distance 2 around the gt centre, one at distance 1; k = 3.
    def box(cx, cy):
        return [cx - 1, cy - 1, cx + 1, cy + 1]
    priors = [box(7, 5), box(5, 7), box(5, 6), box(3, 5), box(5, 3)]
    out = one_image([GT], priors, [5], topk=3, impl=impl)
    assert sorted(out.candidates[0, 0].tolist()) == [0, 1, 2]


def test_conflict_goes_to_highest_anchor_iou(impl):
    # One prior inside two gts; its anchor box overlaps gt 1 more.
    # (Two far-away priors make the threshold mean + std of [x, 0, 0] = 0.91·x, so both gts keep it.)
    gts = [[0, 0, 10, 10], [2, 0, 12, 10]]
    priors = [[3, 0, 11, 10], [100, 100, 110, 110], [200, 200, 210, 210]]
    out = one_image(gts, priors, [3], labels=[3, 4], impl=impl)
    assert out.candidate_positive[0, :, 0].tolist() == [True, True]  # IoU 7/11 and 8/10
    assert out.gt_index[0, 0].item() == 1 and out.labels[0, 0].item() == 4
    torch.testing.assert_close(out.iou[0, 0], torch.tensor(0.8))
    # Equal IoU: the lowest gt index.
    out = one_image([GT, GT], priors, [3], impl=impl)
    assert out.gt_index[0, 0].item() == 0


def test_images_without_boxes_are_all_background():
    priors = torch.cat(multilevel_priors([(8, 8), (4, 4)], [8, 16]))
    gt = torch.tensor([[[6.0, 6.0, 50.0, 40.0]], [[6.0, 6.0, 50.0, 40.0]]])
    mask = torch.tensor([[True], [False]])
    out = atss_assign(priors, [64, 16], gt, torch.zeros(2, 1, dtype=torch.long), mask)
    assert out.positive[0].any() and not out.positive[1].any()
    assert (out.gt_index[1] == -1).all() and (out.candidates[1] == -1).all()
    out = atss_assign(priors, [64, 16], torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long),
                      torch.zeros(2, 0, dtype=torch.bool))
    assert not out.positive.any() and out.candidates.shape == (2, 0, 18)


# ---------------------------------------------------------------------------------------------
# Batched vs the per-image reference


def random_batch(seed, batch=3, image=(128, 160), strides=(8, 16, 32, 64, 128), max_boxes=7, integer=True):
    g = torch.Generator().manual_seed(seed)
    h, w = image
    sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in strides]
    levels = multilevel_priors(sizes, strides)
    priors = torch.cat(levels)
    # Padded sizes down to 1/4 of the batch's: the coarsest levels then have fewer than k valid priors.
    pad = torch.stack((torch.randint(h // 4, h + 1, (batch,), generator=g),
                       torch.randint(w // 4, w + 1, (batch,), generator=g)), dim=1)
    xy = torch.rand(batch, max_boxes, 2, generator=g) * pad.flip(-1)[:, None, :]   # inside each image
    wh = 2 + torch.rand(batch, max_boxes, 2, generator=g) * 80
    gt = torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)
    if integer:                                                     # gt centres on the grid: distance ties
        gt = (gt / 4).round() * 4
    counts = torch.randint(0, max_boxes + 1, (batch,), generator=g)
    counts[0], counts[-1] = max_boxes, 0
    mask = torch.arange(max_boxes) < counts[:, None]
    labels = torch.randint(0, 7, (batch, max_boxes), generator=g)
    valid = valid_prior_mask(sizes, strides, pad)
    return priors, [len(p) for p in levels], gt, labels, mask, valid


def assert_same(ours, ref):
    for name in ("gt_index", "labels", "positive", "metric", "iou", "target"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    # Candidates: the same set per gt and level block (order within a level may differ on ties).
    assert torch.equal(ours.candidates.sort(-1).values, ref.candidates.sort(-1).values)
    assert torch.equal(ours.candidate_positive.sum(-1), ref.candidate_positive.sum(-1))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_valid", [False, True])
def test_batched_matches_reference(seed, use_valid):
    priors, num_levels, gt, labels, mask, valid = random_batch(seed, integer=seed < 4)
    valid = valid if use_valid else None
    ours = atss_assign(priors, num_levels, gt, labels, mask, valid)
    ref = atss_assign_reference(priors, num_levels, gt, labels, mask, valid)
    assert ours.positive.any()
    assert_same(ours, ref)


def test_result_does_not_depend_on_chunk_size(monkeypatch):
    priors, num_levels, gt, labels, mask, valid = random_batch(11)
    whole = atss_assign(priors, num_levels, gt, labels, mask, valid)
    monkeypatch.setattr(atss, "DISTANCE_CHUNK_ELEMENTS", 1)
    assert_same(atss_assign(priors, num_levels, gt, labels, mask, valid), whole)


# ---------------------------------------------------------------------------------------------
# Input validation


def test_bad_inputs_raise_clear_errors():
    priors, num_levels, gt, labels, mask, valid = random_batch(0)
    with pytest.raises(ValueError, match=r"num_level_priors: expected non-negative ints summing to A = \d+"):
        atss_assign(priors, num_levels[:-1], gt, labels, mask)
    with pytest.raises(ValueError, match=r"priors: expected shape \(A, 4\)"):
        atss_assign(priors[None], num_levels, gt, labels, mask)
    with pytest.raises(ValueError, match=r"gt_boxes: expected shape \(B, G, 4\)"):
        atss_assign(priors, num_levels, gt[0], labels, mask)
    with pytest.raises(ValueError, match=r"prior_valid: expected shape \(B, A\)"):
        atss_assign(priors, num_levels, gt, labels, mask, valid[:, 1:])
    b, g = mask.nonzero()[0].tolist()
    bad = gt.clone()
    bad[b, g, 3] = bad[b, g, 1] - 1
    with pytest.raises(ValueError, match=rf"expected x2 >= x1 and y2 >= y1.*\(image {b}, box {g}\)"):
        atss_assign(priors, num_levels, bad, labels, mask)
    bad[b, g, 3] = float("inf")
    with pytest.raises(ValueError, match=rf"expected finite coordinates.*\(image {b}, box {g}\)"):
        atss_assign(priors, num_levels, bad, labels, mask)
