"""Task-aligned assignment: hand-computed cases for each rule, the batched version against the
per-image reference, and input validation."""
import math

import pytest
import torch

import tood_lib.assign.tal as tal
from tood_lib.assign import task_aligned_assign
from tood_lib.assign.reference import task_aligned_assign_reference
from tood_lib.model.priors import multilevel_priors, prior_points, valid_prior_mask


def point_priors(points, half=0.0):
    """Anchor boxes centred exactly on the given (x, y) points: (A, 4)."""
    p = torch.as_tensor(points, dtype=torch.float32)
    return torch.cat((p - half, p + half), dim=-1)


IMPLEMENTATIONS = {"batched": task_aligned_assign, "reference": task_aligned_assign_reference}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def impl(request):
    """The hand-computed cases run through both the batched version and the reference."""
    return IMPLEMENTATIONS[request.param]


def one_image(gt_boxes, gt_labels, priors, pred_boxes, scores, impl=task_aligned_assign, **kwargs):
    """Run TAL on a single image given as plain lists; returns the Assignment."""
    gt = torch.as_tensor(gt_boxes, dtype=torch.float32).view(1, -1, 4)
    labels = torch.as_tensor(gt_labels).view(1, -1)
    mask = torch.ones(labels.shape, dtype=torch.bool)
    pred = torch.as_tensor(pred_boxes, dtype=torch.float32).view(1, -1, 4)
    s = torch.as_tensor(scores, dtype=torch.float32).view(1, pred.shape[1], -1)
    return impl(s, pred, priors, gt, labels, mask, **kwargs)


GT = [0.0, 0.0, 10.0, 10.0]


# ---------------------------------------------------------------------------------------------
# The metric t = s^α · u^β


def test_alignment_metric_values(impl):
    # Three priors inside the gt; their predictions overlap it with IoU 1, 0.5 and 0.25.
    priors = point_priors([[5, 5], [3, 3], [7, 7]])
    pred = [GT, [0, 0, 10, 5], [0, 0, 5, 5]]
    scores = [[0.9, 0.1], [0.5, 0.2], [0.8, 0.3]]            # gt class is 0
    out = one_image([GT], [0], priors, pred, scores, impl=impl)
    assert out.positive[0].tolist() == [True, True, True]
    torch.testing.assert_close(out.iou[0], torch.tensor([1.0, 0.5, 0.25]))
    torch.testing.assert_close(out.metric[0], torch.tensor([0.9, 0.5 * 0.5 ** 6, 0.8 * 0.25 ** 6]))

    # Other exponents: t = sqrt(s) · u^2.
    out = one_image([GT], [1], priors, pred, scores, alpha=0.5, beta=2.0, impl=impl)
    torch.testing.assert_close(out.metric[0], torch.tensor([0.1 ** 0.5, 0.2 ** 0.5 * 0.25, 0.3 ** 0.5 / 16]))
    assert (out.labels[0] == 1).all()


def test_zero_metric_is_never_positive(impl):
    # Inside the gt, but zero score or zero IoU: t = 0.
    priors = point_priors([[5, 5], [3, 3], [7, 7]])
    pred = [GT, [20, 20, 30, 30], [1, 1, 9, 9]]
    out = one_image([GT], [0], priors, pred, [[0.0], [0.9], [0.9]], impl=impl)
    assert out.positive[0].tolist() == [False, False, True]
    assert out.candidate_positive[0, 0].sum() == 1


# ---------------------------------------------------------------------------------------------
# Top-m over all levels jointly


def test_top_m_is_taken_over_all_levels_jointly(impl):
    # Six priors: 0-3 "level 0", 4-5 "level 1" (TAL doesn't care). Metrics, via scores with u = 1:
    t = [0.10, 0.90, 0.20, 0.80, 0.70, 0.05]
    priors = point_priors([[2, 2], [3, 3], [4, 4], [5, 5], [6, 6], [7, 7]])
    out = one_image([GT], [0], priors, [GT] * 6, [[v] for v in t], topk=3, impl=impl)
    # The best three overall: two from level 0 and one from level 1 (ATSS would take per level).
    assert out.positive[0].nonzero().squeeze(1).tolist() == [1, 3, 4]
    assert out.candidates[0, 0].tolist() == [1, 3, 4]              # best first
    torch.testing.assert_close(out.metric[0, [1, 3, 4]], torch.tensor([0.9, 0.8, 0.7]))


def test_outside_candidate_takes_a_slot(impl):
    # The best prior by t is outside the gt: it still uses one of the m slots (the cut comes after
    # the top-m), so with m = 2 only one positive remains.
    priors = point_priors([[50, 50], [3, 3], [5, 5]])
    out = one_image([GT], [0], priors, [GT] * 3, [[0.9], [0.8], [0.7]], topk=2, impl=impl)
    assert out.candidates[0, 0].tolist() == [0, 1]
    assert out.candidate_positive[0, 0].tolist() == [False, True]
    assert out.positive[0].tolist() == [False, True, False]


def test_top_m_ties_go_to_lowest_prior_index():
    # 40 priors inside the gt, the same prediction everywhere; equal t at priors 3, 17, 20, 35
    # (different groups of the dense pass), lower t elsewhere. m = 2 -> priors 3 and 17.
    points = [[1 + 8 * (i % 5) / 5, 1 + 8 * (i // 5) / 8] for i in range(40)]
    scores = torch.full((40, 1), 0.1)
    scores[[3, 17, 20, 35]] = 0.5
    out = one_image([GT], [0], point_priors(points), [GT] * 40, scores, topk=2)
    assert out.positive[0].nonzero().squeeze(1).tolist() == [3, 17]
    # Reversed preference still picks by index, not position in the computation.
    scores = torch.full((40, 1), 0.1)
    scores[[35, 20, 17]] = 0.5
    out = one_image([GT], [0], point_priors(points), [GT] * 40, scores, topk=2)
    assert out.positive[0].nonzero().squeeze(1).tolist() == [17, 20]


# ---------------------------------------------------------------------------------------------
# Inside-the-gt rule


@pytest.mark.parametrize("x, inside", [(0.0, False), (0.005, False), (0.02, True), (5.0, True),
                                       (9.98, True), (9.995, False), (10.0, False), (-1.0, False)])
def test_inside_rule_uses_a_strict_margin(x, inside, impl):
    # A prior on the left border, 0.005 inside, 0.02 inside, ...: only > 0.01 inside counts.
    # Its prediction is the gt itself (t > 0), so only the margin decides.
    priors = point_priors([[x, 5.0]])
    out = one_image([GT], [0], priors, [GT], [[0.9]], impl=impl)
    assert out.positive[0, 0].item() is inside


# ---------------------------------------------------------------------------------------------
# Conflicts


def test_conflict_goes_to_highest_iou(impl):
    # Two overlapping gts; the prior's centre is inside both, its prediction matches gt 1 better.
    gts = [[0, 0, 10, 10], [4, 0, 14, 10]]
    priors = point_priors([[6, 5]])
    pred = [[3, 0, 13, 10]]                                        # IoU 7/13 with gt 0, 9/11 with gt 1
    out = one_image(gts, [0, 1], priors, pred, [[0.9, 0.2]], impl=impl)
    assert out.candidate_positive[0, :, 0].tolist() == [True, True]
    assert out.gt_index[0, 0].item() == 1 and out.labels[0, 0].item() == 1
    torch.testing.assert_close(out.iou[0, 0], torch.tensor(9 / 11))
    torch.testing.assert_close(out.metric[0, 0], torch.tensor(0.2 * (9 / 11) ** 6))


def test_conflict_tie_goes_to_lowest_gt_index(impl):
    gts = [[0, 0, 10, 10], [0, 0, 10, 10]]
    out = one_image(gts, [0, 1], point_priors([[5, 5]]), [GT], [[0.5, 0.6]], impl=impl)
    assert out.gt_index[0, 0].item() == 0


def test_conflict_ignores_gts_the_prior_is_not_a_candidate_of(impl):
    # Prior 0's prediction overlaps gt 1 more than gt 0, but gt 1 (m = 1) picked prior 1, so prior
    # 0 is positive for gt 0 only and stays with gt 0.
    gts = [[0, 0, 10, 10], [4, 0, 14, 10]]
    priors = point_priors([[6, 5], [9, 5]])
    pred = [[3, 0, 13, 10], [4, 0, 14, 10]]
    scores = [[0.9, 0.1], [0.1, 0.9]]
    out = one_image(gts, [0, 1], priors, pred, scores, topk=1, impl=impl)
    assert out.candidates[0, :, 0].tolist() == [0, 1]
    assert out.gt_index[0].tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------
# Normalised target t̂


def test_target_is_rescaled_to_best_iou_per_instance(impl):
    # gt 0: prior 0 has the best t (s 1.0, u 0.8), prior 1 the best IoU (s 0.1, u 0.9).
    # gt 1 (far away): a single positive with u 0.5.
    gts = [[0, 0, 10, 10], [100, 100, 110, 110]]
    priors = point_priors([[5, 5], [4, 4], [105, 105]])
    pred = [[0, 0, 10, 8], [0, 0, 10, 9], [100, 100, 110, 105]]
    scores = [[1.0], [0.1], [0.7]]
    out = one_image(gts, [0, 0], priors, pred, scores, impl=impl)
    t0, t1, t2 = 1.0 * 0.8 ** 6, 0.1 * 0.9 ** 6, 0.7 * 0.5 ** 6
    expected = torch.tensor([t0 / (t0 + 1e-7) * 0.9, t1 / (t0 + 1e-7) * 0.9, t2 / (t2 + 1e-7) * 0.5])
    torch.testing.assert_close(out.target[0], expected)
    # Per instance, max t̂ = best IoU among its positives (up to the 1e-7 in the denominator).
    assert math.isclose(out.target[0, :2].max().item(), 0.9, rel_tol=1e-5)
    assert math.isclose(out.target[0, 2].item(), 0.5, rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------
# Empty cases


def test_images_without_boxes_are_all_background():
    priors = point_priors([[2, 2], [5, 5], [8, 8]])
    scores = torch.rand(3, 3, 4)
    pred = point_priors([[2, 2], [5, 5], [8, 8]], half=3).expand(3, 3, 4)
    gt = torch.tensor(GT).expand(3, 2, 4).clone()
    mask = torch.tensor([[True, False], [False, False], [False, True]])
    out = task_aligned_assign(scores, pred, priors, gt, torch.zeros(3, 2, dtype=torch.long), mask)
    assert out.positive[0].any() and not out.positive[1].any() and out.positive[2].any()
    assert (out.gt_index[1] == -1).all() and (out.target[1] == 0).all() and (out.labels[1] == -1).all()
    assert (out.candidates[1] == -1).all() and not out.candidate_positive[1].any()
    assert (out.gt_index[0] != 1).all() and (out.gt_index[2] != 0).all()   # padding never assigned

    # G = 0 for the whole batch.
    out = task_aligned_assign(scores, pred, priors, torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.long),
                              torch.zeros(3, 0, dtype=torch.bool))
    assert out.gt_index.shape == (3, 3) and (out.gt_index == -1).all() and out.candidates.shape == (3, 0, 3)


def test_invalid_priors_are_never_candidates(impl):
    priors = point_priors([[2, 2], [5, 5], [8, 8]])
    valid = torch.tensor([[True, False, True]])
    out = one_image([GT], [0], priors, [GT] * 3, [[0.2], [0.9], [0.5]], prior_valid=valid, impl=impl)
    assert out.positive[0].tolist() == [True, False, True]
    # m = min(13, valid priors) = 2; the third slot is empty.
    assert out.candidates[0, 0].tolist() == [2, 0, -1]


# ---------------------------------------------------------------------------------------------
# Batched vs the per-image reference


def random_batch(seed, batch=3, image=(96, 128), strides=(8, 16, 32), num_classes=5, max_boxes=6,
                 integer=False):
    g = torch.Generator().manual_seed(seed)
    h, w = image
    sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in strides]
    priors = torch.cat(multilevel_priors(sizes, strides))
    A = priors.shape[0]
    points = prior_points(priors)
    G = max_boxes
    pad = torch.stack((torch.randint(h // 2, h + 1, (batch,), generator=g),
                       torch.randint(w // 2, w + 1, (batch,), generator=g)), dim=1)
    xy = torch.rand(batch, G, 2, generator=g) * pad.flip(-1)[:, None, :]   # inside each image
    wh = 4 + torch.rand(batch, G, 2, generator=g) * 60
    gt = torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)
    if integer:
        gt = gt.round()
    counts = torch.randint(0, G + 1, (batch,), generator=g)
    counts[0] = 0                                                   # always one empty image
    mask = torch.arange(G) < counts[:, None]
    gt[~mask] = float("nan")                                        # padding content must not matter
    labels = torch.randint(0, num_classes, (batch, G), generator=g)
    # Predictions: boxes around the points, some degenerate (x2 < x1).
    ext = torch.rand(batch, A, 4, generator=g) * 40 - 4
    pred = torch.cat((points - ext[..., :2], points + ext[..., 2:]), dim=-1)
    scores = torch.rand(batch, A, num_classes, generator=g)
    valid = valid_prior_mask(sizes, strides, pad)
    return scores, pred, priors, gt, labels, mask, valid


def assert_same(ours, ref):
    assert torch.equal(ours.gt_index, ref.gt_index)
    assert torch.equal(ours.labels, ref.labels)
    assert torch.equal(ours.positive, ref.positive)
    assert torch.equal(ours.candidate_positive, ref.candidate_positive)
    torch.testing.assert_close(ours.iou, ref.iou, rtol=0, atol=0)
    torch.testing.assert_close(ours.metric, ref.metric, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ours.target, ref.target, rtol=1e-6, atol=1e-9)
    # Candidate slots: the same number per gt; the positive ones identical (zero-metric fillers
    # are an arbitrary choice in both).
    assert torch.equal(ours.candidates >= 0, ref.candidates >= 0)
    assert torch.equal(ours.candidates.masked_fill(~ours.candidate_positive, -1),
                       ref.candidates.masked_fill(~ref.candidate_positive, -1))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_valid", [False, True])
def test_batched_matches_reference(seed, use_valid):
    scores, pred, priors, gt, labels, mask, valid = random_batch(seed, integer=seed % 2 == 1)
    valid = valid if use_valid else None
    ours = task_aligned_assign(scores, pred, priors, gt, labels, mask, valid)
    ref = task_aligned_assign_reference(scores, pred, priors, gt.nan_to_num(), labels, mask, valid)
    assert ours.positive.any()
    assert_same(ours, ref)


def test_result_does_not_depend_on_slice_size(monkeypatch):
    scores, pred, priors, gt, labels, mask, valid = random_batch(7, max_boxes=9)
    whole = task_aligned_assign(scores, pred, priors, gt, labels, mask, valid)
    monkeypatch.setattr(tal, "DENSE_CHUNK_ELEMENTS", 1)             # one group of priors per slice
    sliced = task_aligned_assign(scores, pred, priors, gt, labels, mask, valid)
    for name in ("gt_index", "labels", "positive", "metric", "iou", "target", "candidate_positive"):
        assert torch.equal(getattr(whole, name), getattr(sliced, name)), name


def test_low_precision_inputs_are_computed_in_fp32():
    scores, pred, priors, gt, labels, mask, valid = random_batch(3)
    pred = pred.round()                                             # exactly representable in bf16
    half = task_aligned_assign(scores.bfloat16(), pred.bfloat16(), priors, gt, labels, mask, valid)
    full = task_aligned_assign(scores.bfloat16().float(), pred, priors, gt, labels, mask, valid)
    assert half.target.dtype == torch.float32
    assert torch.equal(half.gt_index, full.gt_index) and torch.equal(half.target, full.target)


def test_gradients_do_not_flow():
    scores, pred, priors, gt, labels, mask, valid = random_batch(4)
    scores.requires_grad_(True)
    pred.requires_grad_(True)
    out = task_aligned_assign(scores, pred, priors, gt, labels, mask, valid)
    assert not out.target.requires_grad and not out.metric.requires_grad


# ---------------------------------------------------------------------------------------------
# Input validation


def valid_inputs():
    scores, pred, priors, gt, labels, mask, valid = random_batch(0)
    return dict(scores=scores, pred_boxes=pred, priors=priors, gt_boxes=gt.nan_to_num(), gt_labels=labels,
                gt_mask=mask, prior_valid=valid)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(scores=d["scores"][0]), r"scores: expected shape \(B, A, K\)"),
    (lambda d: d.update(pred_boxes=d["pred_boxes"][:, :-1]), r"pred_boxes: expected \(B, A\)"),
    (lambda d: d.update(pred_boxes=d["pred_boxes"][..., :3]), r"pred_boxes: expected shape \(B, A, 4\)"),
    (lambda d: d.update(priors=d["priors"][:-1]), r"priors: expected A = \d+ rows"),
    (lambda d: d.update(gt_boxes=d["gt_boxes"][:2], gt_labels=d["gt_labels"][:2], gt_mask=d["gt_mask"][:2]),
     r"gt_boxes: expected batch size B = 3"),
    (lambda d: d.update(gt_labels=d["gt_labels"][:, :-1]), r"gt_labels: expected shape \(B, G\)"),
    (lambda d: d.update(gt_labels=d["gt_labels"].float()), r"gt_labels: expected an integer tensor"),
    (lambda d: d.update(gt_mask=d["gt_mask"].long()), r"gt_mask: expected a bool tensor"),
    (lambda d: d.update(prior_valid=d["prior_valid"][:, :-1]), r"prior_valid: expected shape \(B, A\)"),
    (lambda d: d.update(scores=d["scores"] * 4 - 2), r"scores: expected probabilities in \[0, 1\]"),
])
def test_bad_inputs_raise_clear_errors(change, message):
    inputs = valid_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=message):
        task_aligned_assign(**inputs)


def test_bad_gt_boxes_raise_with_their_position():
    inputs = valid_inputs()
    b, g = inputs["gt_mask"].nonzero()[0].tolist()
    inputs["gt_boxes"][b, g] = torch.tensor([5.0, 5.0, 2.0, 8.0])  # x2 < x1
    with pytest.raises(ValueError, match=rf"gt_boxes: expected x2 >= x1 and y2 >= y1.*\(image {b}, box {g}\)"):
        task_aligned_assign(**inputs)
    inputs["gt_boxes"][b, g, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"gt_boxes: expected finite coordinates.*\(image {b}, box {g}\)"):
        task_aligned_assign(**inputs)
    inputs = valid_inputs()
    inputs["gt_labels"][b, g] = 99
    with pytest.raises(ValueError, match=r"gt_labels: expected class indices in \[0, 5\), got 99"):
        task_aligned_assign(**inputs)


def test_bad_values_in_padding_are_ignored():
    inputs = valid_inputs()
    pad = ~inputs["gt_mask"]
    inputs["gt_boxes"][pad] = torch.tensor([float("nan"), 3.0, -1.0, float("inf")])
    inputs["gt_labels"][pad] = -7
    task_aligned_assign(**inputs)


def test_non_finite_predictions_raise():
    inputs = valid_inputs()
    inputs["pred_boxes"][1, 10, 2] = float("nan")
    with pytest.raises(ValueError, match=r"pred_boxes: expected finite coordinates.*\(1, 10\)"):
        task_aligned_assign(**inputs)
