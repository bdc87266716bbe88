"""The T-Head's internals (analysis/head_internals.py) and their drawings (analysis/head_maps.py, the layer
attention's in analysis/layer_attention.py, Table 1's counts in analysis/complexity.py): what they draw, and where."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

from tood_lib.analysis import complexity as cx  # noqa: E402
from tood_lib.analysis import head_internals as hi  # noqa: E402
from tood_lib.analysis import head_maps as hm  # noqa: E402
from tood_lib.analysis import layer_attention as la  # noqa: E402
from tood_lib.analysis.complexity import PAPER_TABLE1  # noqa: E402
from tood_lib.config import get_preset  # noqa: E402
from tood_lib.data.transforms import resize_and_normalize  # noqa: E402
from tood_lib.model.detector import build_model  # noqa: E402

STRIDE = 8


def hand_made_level(h=4, w=5, k=3, n=6, c=4, b=1):
    """One level's internals with known values: everything flat except what a test sets."""
    return dict(
        inter_feats=[torch.full((b, c, h, w), float(i + 1)) for i in range(n)],
        cls_attention=torch.linspace(0.1, 0.6, n).repeat(b, 1), reg_attention=torch.linspace(0.6, 0.1, n).repeat(b, 1),
        cls_feat=torch.ones(b, c, h, w), reg_feat=torch.ones(b, c, h, w),
        cls_logits=torch.full((b, k, h, w), -6.0), prob_logits=torch.full((b, 1, h, w), -6.0),
        prob_map=torch.full((b, 1, h, w), -6.0).sigmoid(), offsets=torch.zeros(b, 8, h, w),
        boxes_before=torch.zeros(b, 4, h, w), boxes_after=torch.zeros(b, 4, h, w))


def set_box(d, i, j, before, after, score_logit=4.0, label=1):
    """Give location (i, j) a confident class ``label`` and boxes (stride units)."""
    d["cls_logits"][0, label, i, j] = score_logit
    d["prob_logits"][0, 0, i, j] = score_logit
    d["prob_map"] = d["prob_logits"].sigmoid()
    d["boxes_before"][0, :, i, j] = torch.tensor(before)
    d["boxes_after"][0, :, i, j] = torch.tensor(after)


def image(h=32, w=40):
    return np.full((h, w, 3), 128, dtype=np.uint8)


@pytest.fixture(scope="module")
def small_internals():
    """Real internals of an untrained tood_small on a 64x64 batch of two images."""
    torch.manual_seed(0)
    model = build_model(get_preset("tood_small")).train()
    out = hi.head_internals(model, torch.randn(2, 3, 64, 64))
    assert model.training  # the mode is given back
    return out.internals


def test_head_internals_shapes(small_internals):
    assert len(small_internals) == 5
    for lvl, d in enumerate(small_internals):
        h = w = max(1, -(-64 // (8 * 2 ** lvl)))
        assert len(d["inter_feats"]) == 6 and d["inter_feats"][0].shape == (2, 64, h, w)
        assert d["cls_attention"].shape == d["reg_attention"].shape == (2, 6)
        assert d["offsets"].shape == (2, 8, h, w) and d["prob_map"].shape == (2, 1, h, w)
        assert d["cls_logits"].shape == (2, 10, h, w) and d["boxes_after"].shape == (2, 4, h, w)
        # the head's score is sqrt(σ(Z)·M), Eq. 5
        assert hi.aligned_scores(d).shape == (2, 10, h, w)
        assert torch.all(hi.aligned_scores(d) <= 1)


def test_denormalize_undoes_the_transform():
    rgb = torch.randint(0, 256, (3, 16, 16)).float()
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    normalised, _, _ = resize_and_normalize(rgb, (16, 16), mean, std)
    back = hi.denormalize(normalised, mean, std)
    assert back.shape == (16, 16, 3) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, rgb.permute(1, 2, 0).byte().numpy())


def test_network_inputs_on_a_tiny_builtin_set(tmp_path):
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import CocoDetection

    cfg = get_preset("tood_small")
    root = build_builtin_dataset(tmp_path / "b", num_train=1, num_val=2, image_size=(96, 128), progress=False)
    val = CocoDetection(root, "val", cfg.data, train=False)
    batch, views = hi.network_inputs(val, [0, 1])
    assert batch.images.shape[0] == 2
    h, w = views[0]["image"].shape[:2]
    assert (h, w) == tuple(val[0]["image_size"]) and views[0]["image"].dtype == np.uint8
    np.testing.assert_allclose(views[0]["boxes"], val[0]["boxes"].numpy())  # resized pixels, not original


def test_offset_arrows_start_at_anchor_points_and_end_where_each_side_is_read():
    d = hand_made_level()
    set_box(d, 2, 3, [2.0, 1.0, 4.0, 3.0], [2.0, 1.0, 4.0, 3.0])
    # side c reads (dy, dx) = (O[2c], O[2c+1]) in cells: left (0.5, -1), top (-1, 0), right (0, 2), bottom (1.5, 0.25)
    d["offsets"][0, :, 2, 3] = torch.tensor([0.5, -1.0, -1.0, 0.0, 0.0, 2.0, 1.5, 0.25])
    fig = hm.plot_offset_arrows(image(), [d], level=0, stride=STRIDE, k=1)  # default: the most confident location
    quivers = [c for c in fig.axes[0].collections if isinstance(c, Quiver)]
    labels = ["left side (x1)", "top side (y1)", "right side (x2)", "bottom side (y2)"]
    assert [q.get_label() for q in quivers] == labels
    expected_dydx = [(0.5, -1.0), (-1.0, 0.0), (0.0, 2.0), (1.5, 0.25)]
    for q, (dy, dx) in zip(quivers, expected_dydx):
        assert (q.X[0], q.Y[0]) == (3 * STRIDE, 2 * STRIDE)  # anchor point (j·s, i·s)
        assert (q.U[0], q.V[0]) == pytest.approx((dx * STRIDE, dy * STRIDE))  # in pixels
        assert (q.angles, q.scale_units, q.scale) == ("xy", "xy", 1)  # drawn to the data's scale
    # the box before alignment is drawn at B·s
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_label() == "box B at that location"]
    assert len(boxes) == 1 and boxes[0].get_xy() == (16.0, 8.0) and boxes[0].get_width() == 16.0
    plt.close(fig)

    # explicit points and an exaggeration factor
    fig = hm.plot_offset_arrows(image(), [d], level=0, points=[(2, 3), (0, 0)], exaggerate=10)
    q = [c for c in fig.axes[0].collections if isinstance(c, Quiver)][2]  # right side
    np.testing.assert_allclose(q.X, [24, 0])
    np.testing.assert_allclose(q.U, [2.0 * STRIDE * 10, 0])
    assert "x10" in fig.axes[0].get_title()
    plt.close(fig)


def test_top_locations_are_distinct_objects_in_pixels():
    d0, d1 = hand_made_level(), hand_made_level(h=2, w=3)
    set_box(d0, 1, 1, [0.5, 0.5, 1.5, 1.5], [0.6, 0.5, 1.5, 1.5], score_logit=5.0, label=2)
    set_box(d0, 1, 2, [0.6, 0.5, 1.6, 1.5], [0.6, 0.5, 1.6, 1.5], score_logit=4.0)  # a neighbour: NMS removes it
    set_box(d1, 0, 2, [1.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 1.0], score_logit=3.0, label=0)  # stride 16
    gt = np.array([[4.0, 4.0, 12.0, 12.0], [16.0, 0.0, 32.0, 16.0]])
    top = hi.top_locations([d0, d1], k=2, gt_boxes=gt)
    assert list(top["level"]) == [0, 1] and list(top["label"]) == [2, 0]
    assert (top.loc[0, "x"], top.loc[0, "y"]) == (8.0, 8.0) and (top.loc[1, "x"], top.loc[1, "y"]) == (32.0, 0.0)
    assert top.loc[0, "before"] == (4.0, 4.0, 12.0, 12.0) and top.loc[1, "after"] == (16.0, 0.0, 32.0, 16.0)
    assert top.loc[0, "iou_before"] == pytest.approx(1.0) and top.loc[0, "iou_after"] < 1.0
    assert top.loc[0, "score"] == pytest.approx(float(torch.tensor(5.0).sigmoid()))  # sqrt(σ·σ) = σ


def test_boxes_before_after_draws_both_boxes_and_the_ground_truth():
    d = hand_made_level()
    set_box(d, 1, 1, [0.5, 0.5, 1.5, 1.5], [0.5, 0.25, 1.75, 1.5])
    gt = np.array([[4.0, 2.0, 14.0, 12.0]])
    fig = hm.plot_boxes_before_after(image(), [d], k=1, gt_boxes=gt)
    full = fig.axes[0]
    rects = {(r.get_xy(), r.get_width(), r.get_height(), r.get_linestyle()) for r in full.patches}
    assert ((4.0, 4.0), 8.0, 8.0, "--") in rects  # B, dashed
    assert ((4.0, 2.0), 10.0, 10.0, "-") in rects  # B_align, solid
    gt_rects = [r for r in full.patches if r.get_label() == "ground truth"]
    assert len(gt_rects) == 1 and gt_rects[0].get_xy() == (4.0, 2.0)
    assert "IoU with GT 0.64 → 1.00" in fig.axes[1].get_title()
    plt.close(fig)


def test_interactive_features_draw_the_channel_norms_on_the_image_grid():
    d = hand_made_level(h=4, w=5, c=4)
    fig = hm.plot_interactive_features(image(32, 40), [d], level=0)
    maps = [ax for ax in fig.axes if ax.get_images() and ax.get_title().startswith("$X")]
    assert len(maps) == 8  # X^1..X^6, X^cls, X^reg
    for k, ax in enumerate(maps[:6]):
        shown = ax.get_images()[0]
        np.testing.assert_allclose(shown.get_array(), np.full((4, 5), 2.0 * (k + 1)))  # ‖(k+1)·1_4‖₂
        # cell (i, j) is centred on its anchor point (j·s, i·s)
        assert list(shown.get_extent()) == [-4.0, 36.0, 28.0, -4.0]
        assert ax.get_xlim() == (0.0, 40.0)
    assert maps[0].get_images()[0].get_clim() == maps[5].get_images()[0].get_clim()  # one scale for the stack
    plt.close(fig)


def test_layer_attention_bars_are_the_difference_of_the_two_tasks(small_internals):
    trained = [dict(d, cls_attention=d["cls_attention"] * 0 + 0.9) for d in small_internals]
    fig = la.plot_layer_attention({"untrained": small_internals, "trained": trained})
    assert len(fig.axes) == 2  # one panel per model, the levels side by side in it
    for ax, internals in zip(fig.axes, (small_internals, trained)):
        bars = [p for p in ax.patches]
        assert len(bars) == 5 * 6  # five levels x six layers: w^cls_k - w^reg_k
        for lvl in range(5):
            heights = [p.get_height() for p in bars[6 * lvl:6 * lvl + 6]]
            expected = (internals[lvl]["cls_attention"] - internals[lvl]["reg_attention"]).mean(0).numpy()
            np.testing.assert_allclose(heights, expected, rtol=1e-5, atol=1e-7)
    # one zoomed, symmetric axis for every panel, wide enough for the largest bar
    low, high = fig.axes[0].get_ylim()
    assert low == -high and high >= max(abs(p.get_height()) for ax in fig.axes for p in ax.patches)
    assert high < 1.0
    # untrained: the layer-attention convs start at N(0, 0.001), so both tasks weight every layer alike
    assert all(abs(p.get_height()) < 0.01 for p in fig.axes[0].patches)
    plt.close(fig)
    fig = la.plot_layer_attention({"one image": small_internals}, image_index=1)
    heights = [p.get_height() for p in fig.axes[0].patches][:6]
    d = small_internals[0]
    np.testing.assert_allclose(heights, (d["cls_attention"][1] - d["reg_attention"][1]).numpy(), rtol=1e-5, atol=1e-7)
    plt.close(fig)
    split = la.attention_split(trained)
    assert split.loc["P3", "max_gap"] == pytest.approx(float((0.9 - small_internals[0]["reg_attention"].mean(0)).abs().max()),
                                                      rel=1e-5)


def test_probability_map_panels(small_internals):
    img = image(64, 64)
    gt = np.array([[8.0, 8.0, 40.0, 30.0]])
    fig = hm.plot_probability_map(img, small_internals, levels=[0, 2], gt_boxes=gt, with_scores=True)
    panels = [ax for ax in fig.axes if len(ax.get_images()) == 2]  # grey image + map
    assert len(panels) == 6  # 3 rows x 2 levels
    m = panels[0].get_images()[1]
    np.testing.assert_allclose(m.get_array(), small_internals[0]["prob_map"][0, 0].numpy(), rtol=1e-6)
    assert m.get_clim() == (0, 1)
    p_align = panels[5].get_images()[1].get_array()  # last row, level 2
    np.testing.assert_allclose(p_align, hi.aligned_scores(small_internals[2])[0].max(0).values.numpy(), rtol=1e-6)
    assert all(sum(p.get_label() == "ground truth" for p in ax.patches) == 1 for ax in panels)
    plt.close(fig)
    fig = hm.plot_training_change(img, {"a": small_internals, "b": small_internals}, level=1, gt_boxes=gt)
    assert sum(1 for ax in fig.axes if ax.get_images()) == 8
    plt.close(fig)


MEASURED = {  # exact counts (spec §5, tests/test_cli.py) and MACs close to what our counter gives
    "t_head": dict(head_params=4_823_790, total_params=31_975_150, head_macs=100.70e9, total_macs=201.0e9),
    "parallel": dict(head_params=4_918_618, total_params=32_069_978, head_macs=104.90e9, total_macs=205.3e9),
}


def check_table(table):
    """The tolerance tests/test_cli.py uses for Table 1: params to 2 decimals, MACs within 2%."""
    assert list(table.index) == ["T-Head (TOOD)", "parallel head (ATSS)"]
    for row, head in zip(table.index, ("t_head", "parallel")):
        paper = PAPER_TABLE1[head]
        assert table.loc[row, "head params (M)"] == paper["head_params_m"] == table.loc[row, "head params (M), paper"]
        assert table.loc[row, "total params (M)"] == paper["total_params_m"]
        assert table.loc[row, "head GMACs"] == pytest.approx(paper["head_gmacs"], rel=0.02)
        assert table.loc[row, "total GMACs"] == pytest.approx(paper["total_gmacs"], rel=0.02)
        assert table.loc[row, "head GMACs, paper"] == paper["head_gmacs"]
    # the paper's point: the T-Head is smaller and cheaper than the parallel head
    assert table["head params (M)"].iloc[0] < table["head params (M)"].iloc[1]
    assert table["head GMACs"].iloc[0] < table["head GMACs"].iloc[1]


def test_complexity_table_layout():
    table = cx.complexity_table(MEASURED)
    assert list(table.columns[::2]) == ["head params (M)", "total params (M)", "head GMACs", "total GMACs"]
    assert all(b == f"{a}, paper" for a, b in zip(table.columns[::2], table.columns[1::2]))  # paper beside ours
    check_table(table)


def test_measure_head_complexity_uses_our_counters():
    # The R-50 pair itself is counted by tests/test_cli.py (the same counters, ~25 s); here the wiring,
    # on the small preset: head and trainable parameters, MACs of one forward pass at 64x64.
    from tood_lib.analysis.complexity import count_macs, count_parameters

    measured = cx.measure_head_complexity({"t_head": "tood_small"}, height=64, width=64)["t_head"]
    model = build_model(get_preset("tood_small"))
    params, macs = count_parameters(model), count_macs(model, 64, 64)
    assert measured == dict(head_params=params["head"], total_params=params["trainable"], head_macs=macs["head"],
                            total_macs=macs["total"])
    assert 0 < measured["head_macs"] < measured["total_macs"]
