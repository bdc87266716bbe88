"""The task-alignment measurements behind notebook 02 (Fig. 1 maps, best anchors, Table 6 statistics)."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from tood_lib.analysis import alignment as al
from tood_lib.assign import task_aligned_assign
from tood_lib.boxes import box_iou
from tood_lib.model.priors import multilevel_priors, prior_points


def make_prediction(seed=0, sizes=((8, 8), (4, 4), (2, 2)), strides=(8, 16, 32), K=3) -> al.DensePrediction:
    g = torch.Generator().manual_seed(seed)
    priors = torch.cat(multilevel_priors(sizes, strides))
    A = len(priors)
    points = prior_points(priors)
    half = torch.rand(A, 2, generator=g) * 20 + 4
    boxes = torch.cat((points - half, points + half), dim=1)
    return al.DensePrediction(torch.rand(A, K, generator=g), boxes, priors, torch.ones(A, dtype=torch.bool),
                              list(sizes), strides)


def test_level_maps_and_levels_index_the_flat_priors():
    pred = make_prediction()
    values = torch.arange(len(pred.priors), dtype=torch.float32)
    assert pred.level_starts == [0, 64, 80]
    assert pred.level_map(values, 1).shape == (4, 4)
    assert pred.level_map(values, 1)[2, 3] == 64 + 2 * 4 + 3
    assert [pred.level_of(i) for i in (0, 63, 64, 79, 80, 83)] == [0, 0, 1, 1, 2, 2]
    assert pred.level_of_all().tolist() == [0] * 64 + [1] * 16 + [2] * 4


def test_alignment_values_are_the_assigners_metric():
    pred = make_prediction()
    gt = torch.tensor([[10.0, 12.0, 50.0, 44.0]])
    label = torch.tensor([1])
    a = task_aligned_assign(pred.scores[None], pred.boxes[None], pred.priors, gt[None], label[None],
                            torch.ones(1, 1, dtype=torch.bool), alpha=1.0, beta=6.0, topk=13)
    v = al.alignment_values(pred, gt[0], 1, alpha=1.0, beta=6.0)
    pos = a.positive[0]
    assert pos.any()
    torch.testing.assert_close(v["metric"][pos], a.metric[0, pos])
    torch.testing.assert_close(v["iou"][pos], a.iou[0, pos])
    # and with other exponents the formula is s^α·u^β
    v2 = al.alignment_values(pred, gt[0], 1, alpha=0.5, beta=2.0)
    torch.testing.assert_close(v2["metric"], pred.scores[:, 1] ** 0.5 * box_iou(pred.boxes, gt)[:, 0] ** 2)


def test_invalid_priors_score_zero():
    pred = make_prediction()
    pred.valid[:10] = False
    v = al.alignment_values(pred, torch.tensor([0.0, 0.0, 60.0, 60.0]), 0)
    assert (v["metric"][:10] == 0).all() and (v["score"][:10] == 0).all()


def test_best_anchors_pick_highest_score_and_highest_iou_inside_the_object():
    pred = make_prediction()
    gt = torch.tensor([16.0, 16.0, 48.0, 48.0])
    inside = al.inside_object(pred, gt)
    idx = inside.nonzero().squeeze(1)
    cls_i, loc_i = int(idx[0]), int(idx[-1])
    pred.scores[:, 2] = 0.1
    pred.scores[cls_i, 2] = 0.9
    pred.scores[0, 2] = 1.0  # outside the object: ignored
    pred.boxes[loc_i] = gt + torch.tensor([1.0, 0.0, 0.0, 0.0])
    best = al.best_anchors(pred, gt, 2)
    assert best["cls_index"] == cls_i and best["loc_index"] == loc_i and not best["same"]
    assert best["cls_score"] == pytest.approx(0.9)
    assert best["loc_iou"] == pytest.approx(31 * 32 / (32 * 32))
    centre = torch.tensor([32.0, 32.0])
    assert best["cls_distance"] == pytest.approx(float((pred.points[cls_i] - centre).norm()))


def test_rank_correlation():
    x = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.7])
    assert al.rank_correlation(x, x * 2) == pytest.approx(1.0)
    assert al.rank_correlation(x, -x) == pytest.approx(-1.0)
    y = torch.tensor([0.2, 0.1, 0.4, 0.3, 0.5])
    ranks = lambda v: np.argsort(np.argsort(v.numpy()))  # noqa: E731
    assert al.rank_correlation(x, y) == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert np.isnan(al.rank_correlation(x[:1], y[:1]))
    assert np.isnan(al.rank_correlation(x, torch.ones(5)))


def test_instance_alignment_ranks_each_objects_own_predictions():
    pred = make_prediction(sizes=((8, 8),), strides=(8,), K=2)
    gts = torch.tensor([[0.0, 0.0, 30.0, 30.0], [34.0, 34.0, 64.0, 64.0]])
    labels = torch.tensor([0, 1])
    # predictions near object 0: score increases with IoU (aligned); near object 1: decreases (misaligned)
    ious = box_iou(pred.boxes, gts)
    owner = ious.argmax(1)
    best = ious.max(1).values
    pred.scores[:, 0] = torch.where(owner == 0, best, pred.scores[:, 0])
    pred.scores[:, 1] = torch.where(owner == 1, 1 - best, pred.scores[:, 1])
    rows = al.instance_alignment(pred, gts, labels, top_pcc=50, top_iou=10)
    assert [r["gt"] for r in rows] == [0, 1]
    assert rows[0]["pcc"] == pytest.approx(1.0)
    assert rows[1]["pcc"] < 0
    mine0 = ((owner == 0) & (best > 0)).nonzero().squeeze(1)
    assert rows[0]["num_predictions"] == len(mine0)
    top10 = best[mine0].sort(descending=True).values[:10]  # aligned: the top-10 by score are the top-10 by IoU
    assert rows[0]["iou_top"] == pytest.approx(float(top10.mean()))
    summary = al.summarise_alignment(pd.DataFrame(rows))
    assert summary["objects"] == 2
    assert summary["PCC"] == pytest.approx((rows[0]["pcc"] + rows[1]["pcc"]) / 2)


def test_top_pcc_limits_the_predictions_ranked():
    pred = make_prediction(sizes=((8, 8),), strides=(8,), K=1)
    gts = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    iou = box_iou(pred.boxes, gts)[:, 0]
    order = pred.scores[:, 0].argsort(descending=True)
    rows = al.instance_alignment(pred, gts, torch.tensor([0]), top_pcc=5, top_iou=3)
    assert rows[0]["pcc"] == pytest.approx(al.rank_correlation(pred.scores[order[:5], 0], iou[order[:5]]))
    assert rows[0]["iou_top"] == pytest.approx(float(iou[order[:3]].mean()))


def test_plots_draw_what_they_say():
    pred = make_prediction()
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    gt = torch.tensor([8.0, 8.0, 40.0, 40.0])
    fig = al.plot_alignment_panel(image, {"epoch 1": pred, "epoch 4": pred}, gt, 0, "circle")
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("result" in t for t in titles) == 2 and sum("IoU" in t for t in titles) == 2
    fig = al.plot_level_maps(image, pred, gt, 0)
    levels = al.informative_levels(pred, gt, 0)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 3 * len(levels) and levels  # 3 quantities x the levels that have something to show
    from matplotlib.colors import LogNorm
    for ax in panels[2 * len(levels):]:  # the t row: log scale, and no empty panel
        heat = ax.get_images()[1]
        assert isinstance(heat.norm, LogNorm) and (~np.ma.getmaskarray(heat.get_array())).any()
    values = al.alignment_values(pred, gt, 0)
    best = float(values["metric"].max())
    for lvl in range(len(pred.strides)):
        assert (lvl in levels) == (float(pred.level_map(values["metric"], lvl).max()) >= 1e-3 * best)
    fig = al.plot_metric_surface()
    assert any("TOOD default" in ax.get_title() for ax in fig.axes)
    a = task_aligned_assign(pred.scores[None], pred.boxes[None], pred.priors, gt[None, None], torch.tensor([[0]]),
                            torch.ones(1, 1, dtype=torch.bool))
    table = al.positives_table(a)
    assert len(table) == int(a.positive.sum())
    # t̂'s maximum equals the best IoU among the positives (paper §3.2.2)
    assert table["t_hat"].max() == pytest.approx(table["iou"].max(), rel=1e-5)
    fig = al.plot_normalised_targets(table)
    assert len(fig.axes) == 1
    fig = al.plot_assigned_positives(image, pred, gt[None], {"TAL": a, "TAL again": a})
    points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert points == int(a.positive.sum())
