"""The one-line API and the predict / eval commands on one of our checkpoints."""
import pytest
import torch
from PIL import Image

from tood_lib.api import Detector, config_from_dict
from tood_lib.cli import main
from tood_lib.config import apply_overrides, get_preset
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.engine.checkpoint import save_checkpoint
from tood_lib.model.detector import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    data = build_builtin_dataset(tmp / "builtin", num_train=4, num_val=3, image_size=(96, 128), progress=False)
    cfg = apply_overrides(get_preset("tood_small"), ["data.img_scale=128,96"])
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(tmp / "small.pth", model)
    return tmp, data, model


def test_config_round_trips_through_a_dict():
    cfg = get_preset("tood_x101_64x4d_fpn_dconv_c4-c5_mstrain_2x_coco")
    assert config_from_dict(cfg.to_dict()) == cfg


def test_detector_api_matches_the_model(setup):
    tmp, data, model = setup
    image = Image.open(next((data / "val2017").iterdir()))
    det = Detector.from_checkpoint(tmp / "small.pth")(image, score_thr=0.0)
    assert set(det) == {"boxes", "scores", "labels", "levels", "class_names"}
    assert ((det["levels"] >= 0) & (det["levels"] < 5)).all()
    assert det["boxes"].shape[1] == 4 and len(det["boxes"]) == len(det["class_names"]) <= 100
    assert (det["boxes"][:, 2] <= image.width + 1e-3).all() and (det["boxes"][:, 3] <= image.height + 1e-3).all()


def test_predict_and_eval_commands(setup, tmp_path, capsys):
    tmp, data, _ = setup
    images = sorted((data / "val2017").iterdir())[:2]
    assert main(["predict", "--checkpoint", str(tmp / "small.pth"), "--out", str(tmp_path / "pred"),
                 "--score-thr", "0", *map(str, images)]) == 0
    drawn = sorted((tmp_path / "pred").iterdir())
    assert len(drawn) == 2 and Image.open(drawn[0]).size == Image.open(images[0]).size
    assert main(["eval", "--checkpoint", str(tmp / "small.pth"), "--data-root", str(data),
                 "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("box AP: ")
    assert (tmp_path / "eval" / "detections_val.json").is_file()
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pth"), "--data-root", str(data)]) == 2
