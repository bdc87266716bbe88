"""FCOS centre-sampling assignment against a plain per-point, per-object transcription."""
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tood_lib.assign import fcos_assign
from tood_lib.model.priors import multilevel_priors, prior_points

SIZES, STRIDES = [(8, 8), (4, 4), (2, 2)], (8, 16, 32)
RANGES = ((-1, 24), (24, 48), (48, 1e8))


def priors():
    return torch.cat(multilevel_priors(SIZES, STRIDES))


def reference_single(points, level_of, gts, radius=1.5):
    """For each point: the smallest-area object whose centre region holds it and whose size fits its level."""
    # Areas in float32, as the assigner computes them: two boxes of equal area in exact arithmetic can
    # differ in the last bit in float64, and the tie (lowest index wins) must break the same way.
    areas = ((gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])).tolist()
    out = []
    for p, lvl in zip(points.tolist(), level_of):
        s, (lo, hi) = STRIDES[lvl], RANGES[lvl]
        best, best_area = -1, None
        for g, (x1, y1, x2, y2) in enumerate(gts.tolist()):
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            rx1, ry1 = max(cx - radius * s, x1), max(cy - radius * s, y1)
            rx2, ry2 = min(cx + radius * s, x2), min(cy + radius * s, y2)
            inside = min(p[0] - rx1, p[1] - ry1, rx2 - p[0], ry2 - p[1]) > 0
            reach = max(p[0] - x1, p[1] - y1, x2 - p[0], y2 - p[1])
            area = areas[g]
            if inside and lo <= reach <= hi and (best_area is None or area < best_area):
                best, best_area = g, area
        out.append(best)
    return torch.tensor(out)


def run(gts, labels=None, valid=None):
    G = len(gts)
    labels = torch.arange(G) if labels is None else labels
    return fcos_assign(priors(), [h * w for h, w in SIZES], STRIDES, gts[None], labels[None],
                       torch.ones(1, G, dtype=torch.bool), valid, regress_ranges=RANGES)


def test_centre_region_level_range_and_smallest_area():
    big = [0.0, 0.0, 60.0, 60.0]      # near its centre the reach is 28-36: P4 (range 24-48)
    small = [20.0, 20.0, 36.0, 36.0]  # reach <= 24 near its centre: P3, inside the big one
    a = run(torch.tensor([big, small]))
    level_of = torch.repeat_interleave(torch.arange(3), torch.tensor([64, 16, 4]))
    pos = a.positive[0]
    assert (level_of[pos & (a.gt_index[0] == 1)] == 0).all() and (a.gt_index[0] == 1).any()
    assert (level_of[pos & (a.gt_index[0] == 0)] == 1).all() and (a.gt_index[0] == 0).any()
    # the P3 point at (24, 24) is inside both objects but only fits the small one's range: it is the small one's
    p = 3 * 8 + 3
    assert a.gt_index[0, p] == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 60), st.floats(0, 60), st.floats(4, 60), st.floats(4, 60)), min_size=1, max_size=4))
@example([(5.0, 1.2023234490317027, 4.0, 9.0), (5.0, 0.0, 4.0, 9.0)])  # equal areas: the tie goes to the first
def test_matches_the_reference(boxes):
    gts = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes])
    a = run(gts)
    level_of = torch.repeat_interleave(torch.arange(3), torch.tensor([64, 16, 4])).tolist()
    assert torch.equal(a.gt_index[0], reference_single(prior_points(priors()), level_of, gts))
    assert torch.equal(a.positive[0], a.gt_index[0] >= 0)


def test_invalid_priors_and_padding_never_match():
    gts = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    valid = torch.zeros(1, 84, dtype=torch.bool)
    assert not run(gts, valid=valid).positive.any()
    a = fcos_assign(priors(), [64, 16, 4], STRIDES, gts[None], torch.tensor([[0]]), torch.zeros(1, 1, dtype=torch.bool),
                    regress_ranges=RANGES)
    assert not a.positive.any()
