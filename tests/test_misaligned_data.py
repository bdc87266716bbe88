"""The misalignment data sets: the class is a small off-centre mark, the box the body. The first
bench's version (data/misaligned_v1.py, written for sizes="single_level") and its redesign for the
multi-level bench (data/misaligned.py, sizes="multi_level")."""
import json

import numpy as np
import pytest

from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.data.check import check_split
from tood_lib.data.coco import CocoDetection
from tood_lib.data import misaligned
from tood_lib.data.misaligned import MARKS, draw_misaligned_scene
from tood_lib.data.misaligned_v1 import draw_misaligned_scene_v1
from tood_lib.data.synthetic import shape_mask

SEEDS = range(40)


@pytest.mark.parametrize("draw", [draw_misaligned_scene_v1, draw_misaligned_scene])
def test_scenes_are_deterministic(draw):
    a, b = draw(7), draw(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(draw(8)[0], a[0])


def test_v1_marks_sit_off_centre_inside_non_overlapping_bodies():
    offsets = []
    for seed in SEEDS:
        image, bodies, labels, marks = draw_misaligned_scene_v1(seed)
        assert len(bodies) == len(labels) == len(marks) >= 1 and set(labels.tolist()) <= set(range(len(MARKS)))
        for i, (body, mark) in enumerate(zip(bodies, marks)):
            assert body[0] <= mark[0] and body[1] <= mark[1] and mark[2] <= body[2] and mark[3] <= body[3]
            w, h = body[2] - body[0], body[3] - body[1]
            side = mark[2] - mark[0]
            assert 0.25 * min(w, h) <= side <= 0.35 * min(w, h)
            # how far the mark's centre is from the body's centre, in units of the body's half-size
            dx = abs((mark[0] + mark[2]) / 2 - (body[0] + body[2]) / 2) / (w / 2)
            dy = abs((mark[1] + mark[3]) / 2 - (body[1] + body[3]) / 2) / (h / 2)
            offsets.append(max(dx, dy))
            for other in bodies[i + 1:]:
                assert body[2] <= other[0] or other[2] <= body[0] or body[3] <= other[1] or other[3] <= body[1]
    assert min(offsets) > 0.2 and np.median(offsets) > 0.3  # the mark is never at the centre


@pytest.mark.parametrize("draw", [draw_misaligned_scene_v1, draw_misaligned_scene])
def test_the_mark_is_painted_in_one_colour_unlike_its_body(draw):
    for seed in SEEDS:
        image, bodies, labels, marks = draw(seed)
        for body, label, mark in zip(bodies, labels, marks):
            mask = shape_mask(MARKS[label], tuple(mark.tolist()), image.shape[:2])
            colours = np.unique(image[mask], axis=0)
            assert len(colours) == 1, f"seed {seed}: the mark is covered"
            centre = image[int((body[1] + body[3]) / 2), int((body[0] + body[2]) / 2)]
            if not mask[int((body[1] + body[3]) / 2), int((body[0] + body[2]) / 2)]:
                assert np.abs(colours[0].astype(int) - centre.astype(int)).max() >= 60


def test_redesigned_marks_follow_the_size_rule_and_sit_at_an_end_of_long_non_overlapping_bodies():
    sides, aspects, offsets = [], [], []
    for seed in SEEDS:
        image, bodies, labels, marks = draw_misaligned_scene(seed)
        assert len(bodies) == len(labels) == len(marks) >= 1 and set(labels.tolist()) <= set(range(len(MARKS)))
        for i, (body, mark) in enumerate(zip(bodies, marks)):
            assert body[0] <= mark[0] and body[1] <= mark[1] and mark[2] <= body[2] and mark[3] <= body[3]
            w, h = body[2] - body[0], body[3] - body[1]
            side = mark[2] - mark[0]
            expected = max(misaligned.MARK_FRACTION * min(w, h), misaligned.MIN_MARK * 320)
            assert side == pytest.approx(expected, rel=1e-5) and side <= misaligned.MAX_MARK_FRACTION * min(w, h) + 1e-3
            sides.append(np.sqrt(w * h) / 320)
            aspects.append(max(w, h) / min(w, h))
            long_axis = 0 if w >= h else 1
            centre, mark_centre = (body[:2] + body[2:]) / 2, (mark[:2] + mark[2:]) / 2
            assert abs(mark_centre[1 - long_axis] - centre[1 - long_axis]) < 1e-3  # centred across the long axis
            offsets.append(abs(mark_centre[long_axis] - centre[long_axis]) / (max(w, h) / 2))
            for other in bodies[i + 1:]:
                assert body[2] <= other[0] or other[2] <= body[0] or body[3] <= other[1] or other[3] <= body[1]
    low, high = misaligned.BODY_SIDES
    assert low * 0.7 <= min(sides) and max(sides) <= high * 1.01  # (the canvas clips the long side of big bodies)
    assert max(sides) / min(sides) > 3  # the bodies span octaves: the levels P3-P6
    assert np.median(aspects) > 1.8  # long bodies (the canvas shortens a few of the largest)
    assert np.median(offsets) > 0.4  # the mark sits towards an end, far from the centre


def test_bodies_differ_from_the_background_only_a_little():
    """Low-contrast bodies: their edges are hard on purpose (the box is the hard part)."""
    rng = np.random.default_rng(0)
    low, high = misaligned.BODY_CONTRAST
    for _ in range(200):
        background = rng.integers(60, 200, size=3)
        diff = np.abs(np.asarray(misaligned._body_colour(rng, background)) - background).max()
        assert low <= diff <= high


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_builtin_dataset(tmp_path_factory.mktemp("mis") / "misaligned", num_train=12, num_val=6,
                                 scenes="misaligned", progress=False)


def test_written_as_coco_with_mark_boxes(root):
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(MARKS)
    first = data["images"][0]
    image, bodies, labels, marks = draw_misaligned_scene_v1(first["scene_seed"])
    anns = [a for a in data["annotations"] if a["image_id"] == first["id"]]
    assert [a["category_id"] - 1 for a in anns] == labels.tolist()
    x, y, w, h = anns[0]["mark_bbox"]
    assert [x, y, x + w, y + h] == pytest.approx(marks[0].tolist(), abs=0.01)
    assert json.loads((root / "manifest.json").read_text())["scenes"] == "misaligned"
    report = check_split(root, "train", progress=False)
    assert not [f for f in report.findings.values() if f.policy != "ignore"]
    dataset = CocoDetection(root, "train", verbose=False)
    assert dataset.class_names == list(MARKS) and len(dataset) == 12


def test_unknown_scene_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="scenes"):
        build_builtin_dataset(tmp_path / "x", scenes="nope")


def test_a_new_design_is_a_new_build(tmp_path, monkeypatch):
    from tood_lib.data import builtin

    root = build_builtin_dataset(tmp_path / "m", num_train=1, num_val=1, scenes="misaligned", sizes="multi_level", progress=False)
    assert json.loads((root / "manifest.json").read_text())["design"] == misaligned.DESIGN
    before = (root / "manifest.json").stat().st_mtime_ns
    build_builtin_dataset(root, num_train=1, num_val=1, scenes="misaligned", sizes="multi_level", progress=False)
    assert (root / "manifest.json").stat().st_mtime_ns == before  # same design: kept
    monkeypatch.setattr(builtin, "MISALIGNED_DESIGN", misaligned.DESIGN + 1)
    build_builtin_dataset(root, num_train=1, num_val=1, scenes="misaligned", sizes="multi_level", progress=False)
    assert json.loads((root / "manifest.json").read_text())["design"] == misaligned.DESIGN + 1


def test_version_1_draws_the_pixels_the_archived_grid_was_trained_on():
    """misaligned_v1 is frozen: these digests are of the original generator (commit 52bdfb8, the one the
    first bench's committed results used). Design 4 once moved v1's marks by sharing a constant with
    the redesign; this pins every array a scene returns (image, boxes, labels, marks)."""
    import hashlib

    from tood_lib.data.misaligned_v1 import draw_misaligned_scene_v1

    def digest(scene):
        h = hashlib.sha256()
        for array in scene:
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]

    expected = {0: "db0714390c6672a4", 1: "e1bfa4d4b09414c4", 2: "7355d87027863ac7", 7: "173c2f5dff11b314",
                1000: "37fc5e6dca373089", 1199: "3adc0d015e7a1550"}
    assert {seed: digest(draw_misaligned_scene_v1(seed)) for seed in expected} == expected
