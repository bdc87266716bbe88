"""The PCC breakdown (analysis/pcc_breakdown.py) on hand-made dense predictions whose answer is known."""
import math

import torch

from tood_lib.analysis.alignment import DensePrediction, instance_alignment
from tood_lib.analysis.pcc_breakdown import object_breakdown, summarise_breakdown


def one_level_prediction(shift_of, score_of):
    """An 8x8 level of stride 10 (points at 5, 15, ..., 75). Every anchor predicts the object's box
    [20, 20, 60, 60] shifted right by shift_of(point) pixels, with score score_of(point, shift)."""
    ys, xs = torch.meshgrid(torch.arange(8) * 10 + 5.0, torch.arange(8) * 10 + 5.0, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], 1)
    priors = torch.cat([points - 5, points + 5], 1)
    gt = torch.tensor([20.0, 20, 60, 60])
    shifts = torch.tensor([shift_of(p) for p in points])
    boxes = gt.repeat(len(points), 1) + torch.stack([shifts, torch.zeros_like(shifts)] * 2, 1)
    scores = torch.tensor([[score_of(p, s)] for p, s in zip(points, shifts)])
    return DensePrediction(scores, boxes, priors, torch.ones(len(points), dtype=torch.bool), [(8, 8)], (10,)), gt


def test_inside_ranked_by_iou_outside_against_it():
    inside = lambda p: 20 < p[0] < 60 and 20 < p[1] < 60  # noqa: E731
    # each anchor's box is shifted by a distinct amount (distinct IoUs); inside, the score falls as the shift
    # grows (score order = IoU order); outside, it rises with the shift (the opposite order), all below inside
    shift_of = lambda p: float(p[0] / 10 + p[1] / 100)  # noqa: E731
    score_of = lambda p, s: 0.5 - 0.01 * float(s) if inside(p) else 0.001 * float(s)  # noqa: E731
    pred, gt = one_level_prediction(shift_of, score_of)
    rows = object_breakdown(pred, gt[None], torch.tensor([0]))
    assert len(rows) == 1
    r = rows[0]
    assert r["pool"] == 64 and math.isclose(r["inside_share"], 16 / 50, rel_tol=1e-6)  # 4x4 points inside; the top 50 hold all 16
    assert math.isclose(r["pcc_inside"], 1.0, abs_tol=1e-9) and math.isclose(r["pcc_outside"], -1.0, abs_tol=1e-9)
    assert math.isclose(r["pcc_all_inside"], 1.0, abs_tol=1e-9)
    assert r["iou_inside"] > r["iou_outside"] and r["score_inside"] > r["score_outside"]
    assert math.isclose(r["score_inside"], float(pred.scores[:, 0].sort(descending=True).values[:16].mean()
                                               / pred.scores.max()), rel_tol=1e-6)
    # Table 6's PCC is the breakdown's top-50 PCC
    table6 = instance_alignment(pred, gt[None], torch.tensor([0]))[0]
    assert math.isclose(r["pcc_top50"], table6["pcc"], abs_tol=1e-12)
    # the top 10 are all inside, in IoU order
    assert math.isclose(r["pcc_top10"], 1.0, abs_tol=1e-9)


def test_small_pools_are_left_out_and_summary_counts_objects():
    pred, gt = one_level_prediction(lambda p: 0.0 if p[0] < 10 and p[1] < 10 else 500.0, lambda p, s: 0.3)
    # only one anchor's box overlaps the object (the others are shifted 500 px away): no rank correlation
    assert object_breakdown(pred, gt[None], torch.tensor([0])) == []
    pred, gt = one_level_prediction(lambda p: float(p[0] / 10), lambda p, s: 1.0 / (1 + float(s)))
    import pandas as pd

    summary = summarise_breakdown(pd.DataFrame(object_breakdown(pred, gt[None], torch.tensor([0]))))
    assert summary["objects"] == 1 and 0 < summary["inside_share"] <= 1
