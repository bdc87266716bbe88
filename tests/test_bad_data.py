"""Bad data never gives a wrong number (issue 13): every defect of a broken set, built by
tests/broken_data.py from the built-in data and from COCO Tiny, gets its exact policy and count;
evaluation on the broken set scores a fixed set of detections exactly as on its clean subset."""
import hashlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from broken_data import edit_annotations, make_broken_split, make_small_split, write_16bit_gray, write_oversized_png
from tood_lib.cli import main
from tood_lib.config import DataConfig, apply_overrides, get_preset
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.data.check import POLICIES, DataCheckError, check_split
from tood_lib.data.coco import CocoDetection, coco_tiny_root, load_coco_annotations
from tood_lib.data.decode import read_image
from tood_lib.engine.checkpoint import save_checkpoint
from tood_lib.engine.evaluate import evaluate_coco
from tood_lib.engine.inference import evaluate_dataset
from tood_lib.model.detector import build_model

TINY = coco_tiny_root()
needs_tiny = pytest.mark.skipif(TINY is None, reason="COCO Tiny not found (set COCO_TINY or put it at ../shared/coco_tiny)")
SOURCES = ["builtin", pytest.param("tiny", marks=needs_tiny)]


@pytest.fixture(scope="module")
def builtin_root(tmp_path_factory):
    return build_builtin_dataset(tmp_path_factory.mktemp("src") / "builtin", num_train=24, num_val=20,
                                 image_size=(96, 128), progress=False)


@pytest.fixture(scope="module", params=SOURCES)
def broken(request, builtin_root, tmp_path_factory):
    source = builtin_root if request.param == "builtin" else TINY
    return make_broken_split(source, tmp_path_factory.mktemp(request.param) / "broken", "val")


def test_every_defect_is_counted_with_its_policy(broken):
    report = check_split(broken["root"], "val", progress=False)
    found = {defect: f.count for defect, f in report.findings.items()}
    assert found == broken["expected"]
    assert report.usable_image_ids == broken["kept_ids"]
    assert not report.stops
    table = report.table(max_examples=None)
    for defect, count in broken["expected"].items():
        row = next(line for line in table.splitlines() if line.strip().startswith(defect))
        assert f" {count} " in row and f" {POLICIES[defect][0]} " in row
    for name in ("truncated", "zero_byte", "text", "folder", "missing", "resized", "gray", "cmyk"):
        assert str(broken["files"][name]) in table  # every image problem names its file
    assert "987654321" in table  # the annotation of an unknown image is named by its image id


def _key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


class Oracle(nn.Module):
    """A 'model' whose detections are a fixed, imperfect function of the clean ground truth of the
    image it is shown (recognised by its pixels): jittered boxes with random scores, one false
    positive per image. The same detections on the broken set and on its clean subset must score
    the same."""

    def __init__(self, clean: CocoDetection):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.cfg = apply_overrides(get_preset("tood_small"), [f"model.num_classes={len(clean.cat_ids)}"])
        self.categories = None
        self.by_pixels = {}
        for index in range(len(clean)):
            item = clean[index]
            rng = np.random.default_rng(item["image_id"])
            anns = [a for a in clean.coco.imgToAnns.get(item["image_id"], []) if not a["iscrowd"]]
            h, w = item["original_size"]
            boxes = [[x + rng.normal(0, 0.08 * bw), y + rng.normal(0, 0.08 * bh), x + bw, y + bh]
                     for x, y, bw, bh in (a["bbox"] for a in anns)] + [[0, 0, w / 3, h / 3]]
            labels = [clean.cat_ids.index(a["category_id"]) for a in anns] + [0]
            self.by_pixels[_key(item["image"])] = dict(
                boxes=torch.tensor(boxes, dtype=torch.float32).clamp(min=0),
                scores=torch.tensor(rng.uniform(0.05, 1.0, len(boxes)), dtype=torch.float32),
                labels=torch.tensor(labels))

    def predict(self, batch, **_):
        out = []
        for image, (h, w) in zip(batch.images, batch.image_sizes.tolist()):
            out.append(self.by_pixels[_key(image[:, :h, :w].contiguous())])
        return out


def test_oracle_scores_the_same_on_the_broken_set_as_on_its_clean_subset(broken, tmp_path):
    cfg = DataConfig(img_scale=(128, 96))
    clean = CocoDetection(broken["clean_root"], "val", cfg, train=False, verbose=False)
    damaged = CocoDetection(broken["root"], "val", cfg, train=False, verbose=False)
    assert damaged.image_ids == clean.image_ids == broken["kept_ids"]
    oracle = Oracle(clean)
    expected = evaluate_dataset(oracle, clean, progress=False)
    result = evaluate_dataset(oracle, damaged, out_dir=tmp_path, progress=False)
    assert 0.2 < expected.box_ap < 0.95  # a non-trivial number, so that a wrong box moves it
    np.testing.assert_allclose(result.stats.to_numpy(), expected.stats.to_numpy(), rtol=0, atol=1e-12)
    ids = [d["image_id"] for d in json.loads((tmp_path / "detections_val.json").read_text())]
    per_image = {i: ids.count(i) for i in set(ids)}
    assert set(per_image) <= set(broken["kept_ids"])  # never an image that was left out, never twice
    assert per_image == {i: len(oracle.by_pixels[_key(damaged[damaged.image_ids.index(i)]["image"])]["boxes"])
                         for i in per_image}
    # the same detections scored against the raw file (no repairs; the 3-number bbox, which crashes
    # pycocotools, taken out) give another number: this test can fail
    raw_json = json.loads((broken["root"] / "annotations" / "instances_val2017.json").read_text())
    raw_json["annotations"] = [a for a in raw_json["annotations"] if len(a["bbox"]) == 4]
    (tmp_path / "raw.json").write_text(json.dumps(raw_json))
    raw = load_coco_annotations(tmp_path / "raw.json")
    results = json.loads((tmp_path / "detections_val.json").read_text())
    assert evaluate_coco(raw, results, image_ids=broken["kept_ids"]).box_ap != pytest.approx(expected.box_ap, abs=1e-6)


def test_clipped_boxes_are_the_training_targets_and_the_ground_truth(broken):
    ds = CocoDetection(broken["root"], "val", DataConfig(img_scale=(128, 96), flip_prob=0.0), train=False, verbose=False)
    image_id = broken["role"]["partly_outside"]
    index = ds.image_ids.index(image_id)
    info = ds.coco.imgs[image_id]
    boxes, _ = ds.ground_truth(index)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= info["width"]).all() and (boxes[:, 3] <= info["height"]).all()
    gt = [a["bbox"] for a in ds.coco.imgToAnns[image_id] if not a["iscrowd"]]
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in gt], dtype=torch.float32)
    torch.testing.assert_close(boxes, xyxy)  # the evaluation ground truth is the very same boxes
    assert any(b[0] == 0 for b in gt) and any(math.isclose(b[0] + b[2], info["width"]) for b in gt)
    assert all(math.isfinite(v) for a in ds.coco.dataset["annotations"] for v in a["bbox"])  # NaN/inf dropped
    ids = [a["id"] for a in ds.coco.dataset["annotations"]]
    assert len(ids) == len(set(ids))  # renumbered: pycocotools keeps every box
    assert ds.stats["clipped"] == 2 and ds.stats["unreadable_images"] == 5 and ds.stats["size_mismatch_images"] == 1


def test_training_split_drops_with_counts_and_never_substitutes(builtin_root, tmp_path, capsys):
    b = make_broken_split(builtin_root, tmp_path / "broken", "train")
    ds = CocoDetection(b["root"], "train", DataConfig(img_scale=(128, 96)), train=True)
    printed = capsys.readouterr().out
    assert "training image without boxes" in printed and "unreadable image file" in printed
    assert ds.report.count("training image without boxes") == 1 and b["empty_id"] not in ds.image_ids
    assert ds.image_ids == [i for i in b["kept_ids"] if i != b["empty_id"]]
    for index in range(len(ds)):
        item = ds[index]
        assert item["image_id"] == ds.image_ids[index]  # each item is its own image
        h, w = item["image_size"]
        assert len(item["boxes"]) and (item["boxes"] >= 0).all() and (item["boxes"][:, 2] <= w + 1e-4).all()
    # a file that breaks after the check is named, never replaced by the next image
    ds.file_path(0).write_bytes(b"")
    with pytest.raises(ValueError, match=str(ds.file_path(0))):
        ds[0]


def test_decoded_size_mismatch_never_filters_boxes_against_the_wrong_size(builtin_root, tmp_path):
    b = make_broken_split(builtin_root, tmp_path / "broken", "val")
    ds = CocoDetection(b["root"], "val", DataConfig(img_scale=(128, 96)), train=False, verbose=False)
    assert b["role"]["resized"] not in ds.image_ids
    assert ds.stats["degenerate"] == 6  # the 6 broken boxes of one image, none of the resized image's boxes
    unchecked = CocoDetection(b["root"], "val", DataConfig(img_scale=(128, 96)), train=False, verbose=False,
                              check_images=False)
    index = unchecked.image_ids.index(b["role"]["resized"])
    with pytest.raises(ValueError, match="decodes to 118x90 but its annotation says 128x96"):
        unchecked[index]


@pytest.mark.parametrize("damage, message", [
    ("duplicate image id", "duplicate image id"), ("duplicate category id", "duplicate category id"),
    ("unknown category", "unknown category"), ("image without size", "image entry without id, file name or size"),
    ("one file under two ids", "image file under two image ids"), ("no images", "split without images"),
    ("iscrowd 'no'", "bad iscrowd value"), ("category without name", "category entry without id or name"),
    ("every image unreadable", "no usable image")])
def test_stop_policies_refuse_training_and_evaluation_and_check_data_exits_1(builtin_root, tmp_path, capsys, damage, message):
    b = make_broken_split(builtin_root, tmp_path / "broken", "val")
    path = b["root"] / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    if damage == "duplicate image id":
        data["images"].append({**data["images"][7], "file_name": "other.png"})
    elif damage == "duplicate category id":
        data["categories"].append({**data["categories"][0], "name": "again"})
    elif damage == "unknown category":
        data["annotations"][0]["category_id"] = 999
    elif damage == "one file under two ids":
        data["images"].append({**data["images"][7], "id": 10 ** 6})
    elif damage == "no images":
        data["images"] = []
    elif damage == "iscrowd 'no'":
        data["annotations"][0]["iscrowd"] = "no"
    elif damage == "category without name":
        del data["categories"][0]["name"]
    elif damage == "every image unreadable":  # each file exists but is not an image: all dropped, none left
        for image in data["images"]:
            file = b["root"] / "val2017" / image["file_name"]
            if not file.is_dir():  # the broken split's folder-named-like-an-image is unreadable already
                file.write_bytes(b"not an image")
    else:
        del data["images"][8]["width"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as err:
        CocoDetection(b["root"], "val", DataConfig(), train=False)
    assert str(path) in str(err.value)
    assert main(["check-data", "--data-root", str(b["root"]), "--splits", "val"]) == 1
    assert message in capsys.readouterr().out


def test_check_data_command_on_a_broken_set(broken, capsys):
    assert main(["check-data", "--data-root", str(broken["root"]), "--splits", "val", "--policies"]) == 0
    out = capsys.readouterr().out
    for defect, count in broken["expected"].items():
        assert any(line.strip().startswith(defect) and f" {count} " in line for line in out.splitlines())
    assert out.count("clipped to the image") == 1  # the policy list


# ---------------------------------------------------------------- eval and predict


@pytest.fixture(scope="module")
def small_checkpoint(builtin_root, tmp_path_factory):
    from tood_lib.data.coco import CocoDetection as Data

    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = apply_overrides(get_preset("tood_small"), ["data.img_scale=128,96"])
    torch.manual_seed(0)
    model = build_model(cfg)
    train = Data(builtin_root, "train", cfg.data, verbose=False)
    model.categories = [{"id": c, "name": n} for c, n in zip(train.cat_ids, train.class_names)]
    save_checkpoint(tmp / "small.pth", model)
    return tmp / "small.pth"


@needs_tiny
def test_eval_refuses_a_checkpoint_with_another_class_count(small_checkpoint, capsys, tmp_path):
    assert main(["eval", "--checkpoint", str(small_checkpoint), "--data-root", str(TINY), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "10 classes (circle, square" in err and "has 80 (person" in err
    assert not (tmp_path / "detections_val.json").exists()


def test_eval_refuses_other_category_ids_or_names(small_checkpoint, builtin_root, tmp_path, capsys):
    other = tmp_path / "other"
    (other / "annotations").mkdir(parents=True)
    (other / "val2017").symlink_to((builtin_root / "val2017").resolve(), target_is_directory=True)
    data = json.loads((builtin_root / "annotations" / "instances_val2017.json").read_text())
    data["categories"][3]["name"] = "kite"
    (other / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    assert main(["eval", "--checkpoint", str(small_checkpoint), "--data-root", str(other)]) == 2
    assert "label 3 is (id 4, 'diamond') in the model and (id 4, 'kite') in the data" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(small_checkpoint), "--data-root", str(builtin_root)]) == 0


def test_eval_on_a_broken_val_set_reports_what_it_left_out(small_checkpoint, builtin_root, tmp_path, capsys):
    b = make_broken_split(builtin_root, tmp_path / "broken", "val")
    assert main(["eval", "--checkpoint", str(small_checkpoint), "--data-root", str(b["root"]),
                 "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert f"scoring {len(b['kept_ids'])} of the 16 images" in out and "6 left out by the data check" in out
    ids = {d["image_id"] for d in json.loads((tmp_path / "ev" / "detections_val.json").read_text())}
    assert ids <= set(b["kept_ids"])


def test_predict_reports_each_bad_input_and_exits_1(small_checkpoint, builtin_root, tmp_path, capsys):
    b = make_broken_split(builtin_root, tmp_path / "broken", "val")
    good = b["files"]["gray"]
    bad = [b["files"][k] for k in ("truncated", "zero_byte", "text", "folder", "missing")]
    out_dir = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(small_checkpoint), "--out", str(out_dir), "--score-thr", "0",
                 str(bad[0]), str(good), *map(str, bad[1:])]) == 1
    captured = capsys.readouterr()
    for path in bad:
        assert f"error: {path}: cannot read it as an image" in captured.err
    assert "5 of 6 images could not be read" in captured.err
    assert [p.name for p in out_dir.iterdir()] == [f"{good.stem}_detections.png"]  # the good one after a bad one
    assert Image.open(out_dir / f"{good.stem}_detections.png").size == Image.open(good).size


def test_a_folder_given_as_checkpoint_is_called_a_folder(tmp_path, builtin_root, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path), "--data-root", str(builtin_root)]) == 2
    assert f"{tmp_path} is a folder; expected a checkpoint file" in capsys.readouterr().err


def test_data_readme_documents_every_policy():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    for defect, (policy, what) in POLICIES.items():
        assert f"| {defect} | {policy} | {what} |" in readme, f"data/README.md lacks the row of {defect!r}"


def test_a_broken_val_file_stops_training_before_it_starts(builtin_root, tmp_path, capsys):
    import shutil

    from tood_lib.engine.trainer import Trainer

    root = tmp_path / "data"
    shutil.copytree(builtin_root, root)
    (root / "annotations" / "instances_val2017.json").write_text("")
    cfg = apply_overrides(get_preset("tood_small"), ["data.img_scale=128,96"])
    with pytest.raises(ValueError, match="instances_val2017.json is empty"):
        Trainer(cfg, root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
    assert main(["train", "--data-root", str(root), "--out", str(tmp_path / "run"), "--set", "data.img_scale=128,96"]) == 2
    assert "is empty" in capsys.readouterr().err


# ---------------------------------------------------------------- issue 21: six more holes


class PixelMeanSpy(nn.Module):
    """A 'model' for evaluate_dataset that records the mean 0..255 pixel value of every image it is shown
    (normalisation undone, padding cut off), in order, and detects one box on each."""

    def __init__(self, cfg):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.cfg, self.categories, self.means = cfg, None, []

    def predict(self, batch, **_):
        mean, std = torch.tensor(self.cfg.data.mean).view(3, 1, 1), torch.tensor(self.cfg.data.std).view(3, 1, 1)
        for image, (h, w) in zip(batch.images, batch.image_sizes.tolist()):
            self.means.append(float((image[:, :h, :w] * std + mean).mean()))
        return [dict(boxes=torch.tensor([[5.0, 5.0, 25.0, 15.0]]), scores=torch.tensor([0.9]), labels=torch.tensor([0]))
                for _ in batch.images]


def test_a_16bit_png_keeps_its_brightness_in_training_eval_and_predict(small_checkpoint, tmp_path, capsys):
    """Pillow's convert("RGB") clips 16-bit values to 255 (a white picture); every place that decodes an
    image must scale them to 8 bits instead, and the check counts the repair."""
    root = tmp_path / "data"
    make_small_split(root, "val", num_images=2)
    png = root / "val2017" / "000000000001.png"
    true_mean = write_16bit_gray(png, size=(40, 60))
    assert Image.open(png).mode == "I;16" and 75 < true_mean < 90
    report = check_split(root, "val", progress=False)
    assert {d: f.count for d, f in report.findings.items()} == {"16-bit image": 1}
    assert f"{png} (image 1): mode I;16" in report.table()

    cfg = apply_overrides(get_preset("tood_small"), ["model.num_classes=1", "data.img_scale=60,40"])
    mean, std = torch.tensor(cfg.data.mean).view(3, 1, 1), torch.tensor(cfg.data.std).view(3, 1, 1)
    train = CocoDetection(root, "val", cfg.data, train=True, verbose=False)
    item = train[0]
    assert item["image_id"] == 1 and item["image_size"] == (40, 60)  # not resized: these are the decoded pixels
    assert float((item["image"] * std + mean).mean()) == pytest.approx(true_mean, abs=1)
    spy = PixelMeanSpy(cfg)
    evaluate_dataset(spy, CocoDetection(root, "val", cfg.data, train=False, verbose=False), progress=False)
    assert spy.means == [pytest.approx(true_mean, abs=1), pytest.approx(80, abs=1e-3)]  # image 2 is RGB (80, 80, 80)

    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(small_checkpoint), "--out", str(out), "--score-thr", "1", str(png)]) == 0
    assert f"{png}: 0 detections -> {out / '000000000001_detections.png'} (16-bit image, mode I;16: scaled to 8 bits)" \
        in capsys.readouterr().out
    drawn = np.asarray(Image.open(out / "000000000001_detections.png"))  # nothing drawn at --score-thr 1: the picture
    assert drawn.shape == (40, 60, 3) and drawn.mean() == pytest.approx(true_mean, abs=1)


@pytest.mark.parametrize("suffix, mode", [(".png", "I;16"), (".tif", "I;16B"), (".pgm", "I")])
def test_16bit_grayscale_files_decode_scaled_not_clipped(tmp_path, suffix, mode):
    path = tmp_path / f"gray{suffix}"
    true_mean = write_16bit_gray(path)
    rgb, found = read_image(path)
    assert found == mode and rgb.mode == "RGB"
    assert np.asarray(rgb).mean() == pytest.approx(true_mean, abs=1)


def test_pixels_of_unknown_range_are_left_out_naming_the_file(tmp_path):
    root = tmp_path / "data"
    path = make_small_split(root, "val", num_images=2)
    tif = root / "val2017" / "float.tif"
    Image.fromarray(np.full((40, 60), 0.3, np.float32)).save(tif)  # mode F: 0..1? 0..255? unknown
    edit_annotations(path, lambda d: d["images"][0].update(file_name="float.tif"))
    report = check_split(root, "val", progress=False)
    assert report.usable_image_ids == [2]
    assert report.findings["unreadable image file"].examples == [
        f"{tif} (image 1): ValueError: 32-bit float pixels: their range is unknown, so they cannot be scaled to 8 bits"]


@pytest.mark.parametrize("file_name", ["000000000001.png", "./000000000001.png"])
def test_one_file_under_two_image_ids_stops_naming_the_file_and_both_ids(tmp_path, capsys, file_name):
    root = tmp_path / "data"
    path = make_small_split(root, "val", num_images=3)
    edit_annotations(path, lambda d: d["images"][2].update(file_name=file_name))  # image 3 names image 1's file
    assert main(["check-data", "--data-root", str(root), "--splits", "val"]) == 1
    out = capsys.readouterr().out
    assert f"image file under two image ids  1      stop    {root / 'val2017' / '000000000001.png'} is image 1 and image 3" in out
    with pytest.raises(DataCheckError, match="image file under two image ids") as err:
        CocoDetection(root, "val", DataConfig(img_scale=(60, 40)), train=True, verbose=False)
    assert str(path) in str(err.value)


def test_predict_names_and_skips_an_image_over_pillows_pixel_limit(small_checkpoint, builtin_root, tmp_path, capsys):
    huge = tmp_path / "huge.png"
    write_oversized_png(huge)  # 30000 x 20000
    good = sorted((builtin_root / "val2017").iterdir())[0]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(small_checkpoint), "--out", str(out), str(huge), str(good)]) == 1
    err = capsys.readouterr().err
    assert f"error: {huge}: cannot read it as an image (DecompressionBombError: Image size (600000000 pixels) exceeds " \
           "limit of" in err
    assert f"error: 1 of 2 images could not be read: {huge}" in err
    assert [p.name for p in out.iterdir()] == [f"{good.stem}_detections.png"]  # the image after it was processed
    # the data check (so train and eval too) leaves it out, named
    root = tmp_path / "data"
    path = make_small_split(root, "val", num_images=2)
    write_oversized_png(root / "val2017" / "000000000001.png")
    edit_annotations(path, lambda d: d["images"][0].update(width=30000, height=20000))
    ds = CocoDetection(root, "val", DataConfig(img_scale=(60, 40)), train=False, verbose=False)
    assert ds.image_ids == [2]
    assert ds.report.findings["unreadable image file"].examples[0].startswith(
        f"{root / 'val2017' / '000000000001.png'} (image 1): DecompressionBombError: ")


def _latin1_note(path):
    edit_annotations(path, lambda d: d["annotations"][1].update(note="cafe"))
    path.write_bytes(path.read_bytes().replace(b'"cafe"', b'"caf\xe9"'))  # "café" in Latin-1, not UTF-8


@pytest.mark.parametrize("damage, status, message", [
    (_latin1_note, 2, "is not UTF-8 text: byte 0xe9 at offset {offset} (line 1, in annotation id 2)"),
    (lambda path: edit_annotations(path, lambda d: d["annotations"][1].update(iscrowd="no")), 1,
     'bad iscrowd value  1      stop    annotation 2 of image 2: iscrowd "no" (expected 0 or 1)'),
    (lambda path: edit_annotations(path, lambda d: d["annotations"][1].update(iscrowd=2)), 1,
     "annotation 2 of image 2: iscrowd 2 (expected 0 or 1)"),
    (lambda path: edit_annotations(path, lambda d: d["annotations"][1].update(category_id=[1])), 1,
     "unknown category  1      stop    annotation 2 of image 2: category_id [1]")],
    ids=["latin-1", "iscrowd no", "iscrowd 2", "category id a list"])
def test_bad_values_in_the_annotation_file_name_the_file_and_the_annotation(tmp_path, capsys, damage, status, message):
    root = tmp_path / "data"
    path = make_small_split(root, "val", num_images=3)
    damage(path)
    assert main(["check-data", "--data-root", str(root), "--splits", "val"]) == status
    captured = capsys.readouterr()
    printed = captured.err if status == 2 else captured.out
    assert str(path) in printed
    assert message.format(offset=path.read_bytes().index(b"\xe9") if status == 2 else None) in printed


def test_boxes_of_an_image_of_the_wrong_size_are_not_also_counted_as_box_problems(tmp_path):
    root = tmp_path / "data"
    path = make_small_split(root, "val", num_images=2)  # 60x40 files

    def damage(data):
        data["images"][0].update(width=30, height=20)  # the JSON's size is wrong: its boxes fit the real 60x40
        data["annotations"] += [{"id": 3, "image_id": 1, "category_id": 1, "bbox": bbox, "area": 200.0, "iscrowd": 0}
                                for bbox in ([35, 5, 20, 10], [25, 5, 20, 10])]  # outside, partly outside 30x20
    edit_annotations(path, damage)
    report = check_split(root, "val", progress=False)
    assert {d: f.count for d, f in report.findings.items()} == {"decoded size differs from the JSON": 1}
    assert report.findings["decoded size differs from the JSON"].examples == [
        f"{root / 'val2017' / '000000000001.png'} (image 1): 60x40 on disk, 30x20 in the JSON; "
        "its 3 annotation(s) left out with it"]
    assert report.usable_image_ids == [2] and [a["image_id"] for a in report.coco.dataset["annotations"]] == [2]


def test_a_thin_box_is_shown_as_it_is_used_after_clipping(tmp_path):
    root = tmp_path / "data"
    path = make_small_split(root, "val", num_images=1)  # 60x40
    edit_annotations(path, lambda d: d["annotations"][0].update(bbox=[59.5, 5, 10, 10]))
    report = check_split(root, "val", progress=False, drop_empty=False)
    assert report.findings["thin box (w or h < 1 px)"].examples == [
        "annotation 1 of image 1: bbox [59.5, 5.0, 0.5, 10.0] (clipped from [59.5, 5, 10, 10])"]
    assert report.coco.dataset["annotations"][0]["bbox"] == [59.5, 5.0, 0.5, 10.0]
