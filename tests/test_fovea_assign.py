"""FoveaBox assignment against a plain per-point, per-object transcription of FoveaHead's rule."""
import math

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tood_lib.assign import fovea_assign
from tood_lib.model.priors import multilevel_priors, prior_points

SIZES, STRIDES = [(8, 8), (4, 4), (2, 2)], (8, 16, 32)
RANGES = ((1, 24), (12, 48), (24, 1e4))  # overlapping, like FoveaBox's


def priors():
    return torch.cat(multilevel_priors(SIZES, STRIDES))


def reference_single(points, level_of, gts, sigma=0.4):
    """For each point: the smallest-area object whose scale fits the level and whose fovea holds the point."""
    # Areas in float32, as the assigner computes them: equal areas in exact arithmetic can differ in the
    # last bit in float64, and the tie (lowest index wins) must break the same way.
    areas = ((gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])).tolist()
    out = []
    for p, lvl in zip(points.tolist(), level_of):
        lo, hi = RANGES[lvl]
        best, best_area = -1, None
        for g, (x1, y1, x2, y2) in enumerate(gts.tolist()):
            w, h = x2 - x1, y2 - y1
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            fits = lo <= math.sqrt(w * h) <= hi
            inside = abs(p[0] - cx) <= sigma * w / 2 and abs(p[1] - cy) <= sigma * h / 2
            if fits and inside and (best_area is None or areas[g] < best_area):
                best, best_area = g, areas[g]
        out.append(best)
    return torch.tensor(out)


def run(gts, valid=None):
    G = len(gts)
    return fovea_assign(priors(), [h * w for h, w in SIZES], gts[None], torch.arange(G)[None],
                        torch.ones(1, G, dtype=torch.bool), valid, scale_ranges=RANGES)


def test_scale_picks_the_levels_and_the_fovea_is_the_shrunk_box():
    # √area 40: levels 2 and 3 (ranges 12-48 and 24-1e4), not level 1 (1-24)
    a = run(torch.tensor([[0.0, 0.0, 40.0, 40.0]]))
    level_of = torch.repeat_interleave(torch.arange(3), torch.tensor([64, 16, 4]))
    assert set(level_of[a.positive[0]].tolist()) == {1}  # the P4 point (16, 16) is in the fovea [12, 28]²; P5 has none
    points = prior_points(priors())[a.positive[0]]
    assert ((points - 20).abs() <= 0.4 * 40 / 2).all()
    # widen sigma: the fovea grows to the whole box, and P5's point (32, 32) comes in
    b = fovea_assign(priors(), [64, 16, 4], torch.tensor([[[0.0, 0.0, 40.0, 40.0]]]), torch.tensor([[0]]),
                     torch.ones(1, 1, dtype=torch.bool), sigma=1.0, scale_ranges=RANGES)
    assert set(level_of[b.positive[0]].tolist()) == {1, 2}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 60), st.floats(0, 60), st.floats(4, 60), st.floats(4, 60)), min_size=1, max_size=4))
@example([(0.0, 25.0, 25.41272566591315, 33.1830815765304), (0.0, 25.41272566591315, 25.41272566591315, 33.1830815765304)])  # equal areas
def test_matches_the_reference(boxes):
    gts = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes])
    a = run(gts)
    level_of = torch.repeat_interleave(torch.arange(3), torch.tensor([64, 16, 4])).tolist()
    assert torch.equal(a.gt_index[0], reference_single(prior_points(priors()), level_of, gts))
    assert torch.equal(a.positive[0], a.gt_index[0] >= 0)
    assert torch.equal(a.target[0], a.positive[0].float())


def test_invalid_priors_and_padding_never_match():
    gts = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    assert not run(gts, valid=torch.zeros(1, 84, dtype=torch.bool)).positive.any()
    a = fovea_assign(priors(), [64, 16, 4], gts[None], torch.tensor([[0]]), torch.zeros(1, 1, dtype=torch.bool),
                     scale_ranges=RANGES)
    assert not a.positive.any()
