"""The misaligned data set's design check (analysis/misalignment_check.py): the declared rule, and the
measures it is computed from."""
import pandas as pd
import pytest
import torch

from tood_lib.analysis.misalignment_check import judge, mark_boxes, object_alignment, summarise
from tood_lib.config import apply_overrides, get_preset
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.data.coco import CocoDetection
from tood_lib.model.detector import build_model


def test_the_rule_needs_all_three_criteria():
    shapes = dict(gap_norm_median=0.3, pcc=0.7)
    good = dict(gap_norm_median=0.5, pcc=0.6, nearer_mark=0.7)
    assert judge(shapes, good)["passed"]
    for key, bad in (("gap_norm_median", 0.2), ("pcc", 0.8), ("nearer_mark", 0.4)):
        verdict = judge(shapes, dict(good, **{key: bad}))
        assert not verdict["passed"] and sum(not verdict[k] for k in ("distance", "pcc", "mark")) == 1


def test_summary_of_hand_made_objects():
    objects = pd.DataFrame(dict(gap_norm=[0.1, 0.3, 0.9], same=[True, False, False], pcc=[0.5, float("nan"), 0.7],
                                iou_top=[0.6, 0.7, 0.8], nearer_mark=[True, True, False]))
    s = summarise(objects)
    assert s["gap_norm_median"] == pytest.approx(0.3) and s["pcc"] == pytest.approx(0.6)
    assert s["nearer_mark"] == pytest.approx(2 / 3) and s["same_anchor"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    root = build_builtin_dataset(tmp_path_factory.mktemp("mc") / "m", num_train=2, num_val=4, scenes="misaligned",
                                 sizes="multi_level", progress=False)
    cfg = apply_overrides(get_preset("tood_small"), ["data.img_scale=128,128", "model.anchor_scale=2", "model.num_classes=4"])
    return CocoDetection(root, "val", cfg.data, train=False, verbose=False), cfg


def test_mark_boxes_follow_the_resize_and_lie_in_their_bodies(marked):
    dataset, _ = marked
    for i in range(len(dataset)):
        marks, bodies = mark_boxes(dataset, i), dataset[i]["boxes"]
        assert marks.shape == bodies.shape
        assert (marks[:, :2] >= bodies[:, :2] - 1e-3).all() and (marks[:, 2:] <= bodies[:, 2:] + 1e-3).all()


def test_object_alignment_measures_every_object(marked):
    dataset, cfg = marked
    torch.manual_seed(0)
    objects = object_alignment(build_model(cfg).eval(), dataset, progress=False)
    assert len(objects) == sum(len(dataset[i]["boxes"]) for i in range(len(dataset)))
    assert (objects["gap_norm"] >= 0).all() and objects["nearer_mark"].isin([True, False]).all()
    assert ((objects["cls_to_mark"] < objects["cls_to_centre"]) == objects["nearer_mark"]).all()


def test_every_recorded_attempt_carries_the_verdict_the_rule_gives_its_numbers():
    """results/misalignment_check_attempts.json keeps every design tried, failed ones included: each
    verdict must be the declared rule applied to the numbers beside it, and at the bench recipe."""
    import json

    from tood_lib.ablations.runs import RESULTS_DIR

    attempts = json.loads((RESULTS_DIR / "misalignment_check_attempts.json").read_text())["attempts"]
    assert len(attempts) >= 3
    for attempt in attempts:
        assert judge(attempt["shapes"], attempt["misaligned"]) == attempt["verdict"], attempt["design"]
        assert attempt["shapes"]["epochs"] == attempt["misaligned"]["epochs"]  # equal training


def test_the_committed_check_passes_at_the_declared_recipe():
    """results/misalignment_check.json: the declared rule, recomputed from its numbers, passes, on the
    seed-0 parallel + ATSS models of both data sets trained alike (the bench's recipe)."""
    import json

    from tood_lib.ablations.runs import RESULTS_DIR
    from tood_lib.analysis.misalignment_check import MODEL, RULE

    record = json.loads((RESULTS_DIR / "misalignment_check.json").read_text())
    assert record["rule"] == RULE and (record["model"]["experiment"], record["model"]["seed"]) == MODEL
    assert record["bench"] == "multi_level"
    verdict = judge(record["shapes"], record["misaligned"])
    assert verdict == record["verdict"] and verdict["passed"]
    for key in ("epochs", "lr_steps", "img_scale", "anchor_scale"):
        assert record["shapes"][key] == record["misaligned"][key]
