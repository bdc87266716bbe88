"""The assignment explorer widget: every control changes the positives exactly as the assigner says."""
import matplotlib

matplotlib.use("Agg")

import pytest
import torch

pytest.importorskip("ipywidgets")

from tood_lib.analysis.assignment_explorer import AssignmentExplorer, explain_assignment, run_assigner  # noqa: E402
from tood_lib.assign import atss_assign, task_aligned_assign  # noqa: E402
from tood_lib.config import get_preset  # noqa: E402
from tood_lib.data.builtin import build_builtin_dataset  # noqa: E402
from tood_lib.data.coco import CocoDetection  # noqa: E402
from tood_lib.engine.checkpoint import save_checkpoint  # noqa: E402
from tood_lib.model.detector import build_model  # noqa: E402
from tood_lib.model.priors import multilevel_priors, valid_prior_mask  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with two checkpoints of differently initialised small models, and a tiny val set."""
    tmp = tmp_path_factory.mktemp("explorer")
    root = build_builtin_dataset(tmp / "data", num_train=2, num_val=6, progress=False)
    cfg = get_preset("tood_small")
    run_dir = tmp / "run"
    run_dir.mkdir()
    for epoch in (1, 2):
        torch.manual_seed(100 + epoch)
        save_checkpoint(run_dir / f"epoch_{epoch}.pth", build_model(cfg), cfg)
    return run_dir, CocoDetection(root, "val", cfg.data, train=False)


def direct_call(explorer, epoch, index, assigner, alpha=1.0, beta=6.0, topk=13):
    """The assigner called straight on the model's output, as the training criterion does."""
    item = explorer.dataset[index]
    batch, _ = explorer.dataset.collate([item])
    model = explorer.model(epoch)
    with torch.no_grad():
        out = model(batch.images)
    level_priors = multilevel_priors(out.feature_sizes, out.strides)
    priors = torch.cat(level_priors)
    valid = valid_prior_mask(out.feature_sizes, out.strides, batch.pad_shapes)
    if assigner == "ATSS":
        return atss_assign(priors, [len(p) for p in level_priors], batch.gt_boxes, batch.gt_labels, batch.gt_mask,
                           valid, topk=9)
    return task_aligned_assign(out.flat_scores(), out.flat_boxes(pixels=True), priors, batch.gt_boxes,
                               batch.gt_labels, batch.gt_mask, valid, alpha=alpha, beta=beta, topk=topk)


def same_positives(result, direct):
    return torch.equal(result.assignment.positive[0], direct.positive[0]) and \
        torch.equal(result.assignment.gt_index[0], direct.gt_index[0])


def test_every_control_matches_a_direct_assigner_call(run):
    run_dir, val = run
    ex = AssignmentExplorer(run_dir, dataset=val, draw=False)
    assert ex.checkpoint.value == 2 and ex.assigner.value == "TAL"
    assert same_positives(ex.result, direct_call(ex, 2, 0, "TAL"))
    seen = set()
    for alpha, beta, topk in ((0.0, 6.0, 13), (2.5, 6.0, 13), (2.5, 1.0, 13), (2.5, 1.0, 3), (1.0, 6.0, 30)):
        ex.alpha.value, ex.beta.value, ex.topk.value = alpha, beta, topk
        direct = direct_call(ex, 2, 0, "TAL", alpha, beta, topk)
        assert same_positives(ex.result, direct), (alpha, beta, topk)
        torch.testing.assert_close(ex.result.assignment.target, direct.target)
        seen.add(tuple(ex.result.assignment.positive[0].nonzero().squeeze(1).tolist()))
    assert len(seen) >= 3  # the sliders really change the positives
    ex.topk.value = 3
    assert (ex.result.objects["positives"] <= 3).all()

    ex.assigner.value = "ATSS"
    assert same_positives(ex.result, direct_call(ex, 2, 0, "ATSS"))
    assert ex.alpha.disabled and ex.topk.disabled

    ex.assigner.value = "TAL"
    ex.topk.value = 13
    ex.checkpoint.value = 1
    assert same_positives(ex.result, direct_call(ex, 1, 0, "TAL"))
    ex.image.value = 3
    assert ex.object.options and ex.object.value == 0
    assert same_positives(ex.result, direct_call(ex, 1, 3, "TAL"))


def test_summary_and_tables_describe_the_selected_object(run):
    run_dir, val = run
    ex = AssignmentExplorer(run_dir, dataset=val, draw=False)
    index = max(range(len(val)), key=lambda i: len(val.ground_truth(i)[1]))
    ex.image.value = index
    ex.object.value = len(ex.object.options) - 1
    r = ex.result
    g = ex.object.value
    assert f"object {g}" in ex.summary.value
    assert r.per_level["positives"].sum() == int((r.assignment.gt_index[0] == g).sum())
    assert r.objects["positives"].sum() == int(r.assignment.num_positive[0])
    assert set(r.positives["prior"]) == set((r.assignment.gt_index[0] == g).nonzero().squeeze(1).tolist())
    before = ex.summary.value
    ex.alpha.value = 2.0
    assert ex.summary.value != before and "α = 2.0" in ex.summary.value


def test_lost_anchors_are_candidates_taken_by_a_neighbour(run):
    """Two overlapping objects: priors inside both go to the one with the higher IoU; the other loses them."""
    run_dir, val = run
    ex = AssignmentExplorer(run_dir, dataset=val, draw=False)
    pred, _, _, _ = ex.prediction(2, 0)
    gt_boxes = torch.tensor([[20.0, 20.0, 100.0, 100.0], [36.0, 28.0, 116.0, 108.0]])
    gt_labels = torch.tensor([0, 0])
    a = run_assigner(pred, gt_boxes, gt_labels, "ATSS")
    r = explain_assignment(pred, gt_boxes, gt_labels, a, 0, "ATSS", 1.0, 6.0)
    passed = [set(a.candidates[0, g][a.candidate_positive[0, g]].tolist()) for g in range(2)]
    shared = passed[0] & passed[1]
    assert shared, "the two boxes should compete for some priors"
    lost0 = {p for p in passed[0] if int(a.gt_index[0, p]) == 1}
    assert r.objects.loc[0, "lost_to_neighbours"] == len(lost0)
    assert r.objects.loc[0, "lost_to_neighbours"] + r.objects.loc[1, "lost_to_neighbours"] == len(shared)
    assert r.per_level["lost"].sum() == len(lost0)
    if lost0:
        assert r.objects.loc[0, "taken_by"] == "1"


def test_drawing_shows_the_levels_that_hold_candidates(run):
    run_dir, val = run
    ex = AssignmentExplorer(run_dir, dataset=val, draw=True)
    assert len(ex.plot.outputs) == 1  # the figure is in the Output widget
    from tood_lib.analysis.assignment_explorer import plot_explorer

    pred, gt_boxes, _, image = ex.prediction(2, 0)
    fig = plot_explorer(image, pred, gt_boxes, ex.result, 0, "TAL")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    cand = ex.result.assignment.candidates[0, 0]
    holding = sorted({int(pred.level_of_all()[i]) for i in cand[cand >= 0]})
    assert [t.split(" ")[0] for t in titles] == [f"P{l + 3}" for l in holding]  # no empty panel
    fig = plot_explorer(image, pred, gt_boxes, ex.result, 0, "TAL", levels=range(5))
    assert [ax.get_title().split(" ")[0] for ax in fig.axes if ax.get_title()] == ["P3", "P4", "P5", "P6", "P7"]


def test_the_notebook_shows_a_picture_where_widgets_cannot_run(run):
    """The explorer's own output carries the widget and a PNG of its current view: a static viewer
    (GitHub, nbviewer, an untrusted notebook) renders the PNG."""
    import base64

    run_dir, val = run
    ex = AssignmentExplorer(run_dir, dataset=val, draw=True)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == ex.png and ex.png.startswith(b"\x89PNG")
    before = ex.png
    ex.beta.value = 1.0  # a change redraws, and the picture follows the view
    assert ex.png != before


def test_the_image_shows_under_the_map(run):
    """The image is drawn opaque and the map leaves its faint cells transparent, so the learner sees which
    part of the object each positive sits on (the map once covered the whole image)."""
    import numpy as np

    from tood_lib.analysis.assignment_explorer import LOG_RANGE, plot_explorer

    run_dir, val = run
    ex = AssignmentExplorer(run_dir, dataset=val, draw=False)
    pred, gt_boxes, _, image = ex.prediction(2, 0)
    fig = plot_explorer(image, pred, gt_boxes, ex.result, 0, "TAL", levels=[0])
    panel = fig.axes[0]
    picture, heat = panel.images[0], panel.images[1]
    assert picture.get_alpha() in (None, 1.0) and np.array_equal(np.asarray(picture.get_array()), image)
    level = np.asarray(pred.level_map(ex.result.ranking, 0), dtype=float)
    # TAL's t on a log scale over LOG_RANGE below its maximum: smaller t is left transparent
    faint = level <= LOG_RANGE * float(ex.result.ranking.max())
    assert faint.any() and np.array_equal(np.ma.getmaskarray(heat.get_array()), faint)
    assert heat.norm.__class__.__name__ == "LogNorm"


def test_unknown_assigner_is_a_clear_error(run):
    run_dir, val = run
    ex = AssignmentExplorer(run_dir, dataset=val, draw=False)
    pred, gt_boxes, gt_labels, _ = ex.prediction(2, 0)
    with pytest.raises(ValueError, match="assigner"):
        run_assigner(pred, gt_boxes, gt_labels, "IoU")
