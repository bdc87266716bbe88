"""What the geometric schemes give each object, counted before training (analysis/assignment_coverage.py)."""
import torch

from tood_lib.ablations.grid import experiment_config
from tood_lib.analysis.assignment_coverage import assignment_coverage, coverage_summary, feature_sizes


def _item(boxes):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return dict(image=torch.zeros(3, 128, 128), boxes=boxes, labels=torch.zeros(len(boxes), dtype=torch.long),
                original_size=(128, 128))


def test_feature_sizes_follow_the_ceil_rule():
    assert feature_sizes(128, 96, (8, 16, 32, 64, 128)) == [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]


def test_an_anchor_sized_object_and_a_small_one():
    cfg = experiment_config("fcos_parallel", bench="single_level")  # anchors 8 strides wide, as on COCO
    # object 0 is exactly P3's anchor box at the point (64, 64) (8 x stride 8 = 64 px);
    # object 1 (12 px) is far smaller than any anchor box: its best IoU is (12/64)^2
    data = [_item([[32.0, 32.0, 96.0, 96.0], [100.0, 4.0, 112.0, 16.0]])]
    cov = assignment_coverage(data, cfg, images=1)
    assert len(cov) == 2 and cov["object"].tolist() == [0, 1]
    assert abs(cov.at[0, "best_anchor_iou"] - 1.0) < 1e-6
    assert abs(cov.at[1, "best_anchor_iou"] - (12 / 64) ** 2) < 1e-6
    assert abs(cov.at[0, "side"] - 64.0) < 1e-6 and abs(cov.at[1, "side"] - 12.0) < 1e-6
    assert cov.at[0, "pos_max_iou"] >= 1  # IoU 1 >= 0.5: a positive by the threshold itself
    assert cov.at[1, "pos_max_iou"] >= 1  # only through RetinaNet's low-quality matches
    assert (cov[[f"levels_{m}" for m in ("max_iou", "fcos", "atss", "fovea")]] <= 5).all().all()
    summary = coverage_summary(cov)
    assert summary.attrs["objects_below_pos_iou"] == 0.5
    assert summary.loc["max_iou", "objects_without_positive"] == 0.0


def test_counts_on_the_builtin_validation_images():
    from tood_lib.workbook import builtin_val_set

    cfg = experiment_config("fcos_parallel")
    val = builtin_val_set(cfg)
    cov = assignment_coverage(val, cfg, images=8, batch_size=4)
    assert cov["image"].nunique() <= 8 and len(cov) == sum(len(val[i]["boxes"]) for i in range(8))
    assert ((cov["best_anchor_iou"] > 0) & (cov["best_anchor_iou"] <= 1)).all()
    # every positive count has at least as many positives as levels, and none is negative
    for m in ("max_iou", "fcos", "atss", "fovea"):
        assert (cov[f"pos_{m}"] >= cov[f"levels_{m}"]).all() and (cov[f"levels_{m}"] >= 0).all()


def test_the_coverage_figure_draws_both_data_sets():
    import matplotlib
    matplotlib.use("Agg")
    from tood_lib.analysis.assignment_coverage import plot_coverage

    cfg = experiment_config("fcos_parallel")
    cov = assignment_coverage([_item([[32.0, 32.0, 96.0, 96.0], [100.0, 4.0, 112.0, 16.0]])], cfg, images=1)
    fig = plot_coverage({"a": cov, "b": cov})
    left, right = fig.axes
    assert sum(p.get_height() for p in left.patches) == 4  # 2 objects in each histogram
    assert len(right.patches) == 8  # 4 schemes x 2 data sets
