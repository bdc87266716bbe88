"""The one-line Python API: load a detector from a checkpoint and run it on images.

    from tood_lib.api import Detector
    dets = Detector.from_checkpoint("runs/small/last.pth")("photo.jpg")   # boxes, scores, labels

Checkpoints can be our own (they carry their config) or official TOOD / MMDetection files
(then name the preset they belong to, e.g. ``preset="tood_r50_fpn_1x_coco"``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from tood_lib.batch import make_batch
from tood_lib.config import Config, DataConfig, ModelConfig, TALConfig, TestConfig, TrainConfig, get_preset
from tood_lib.data.decode import read_rgb_image, to_rgb
from tood_lib.data.transforms import resize_and_normalize, to_tensor_image
from tood_lib.model.detector import build_model


def config_from_dict(d: dict) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` (lists back to tuples)."""
    def section(cls, values):
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)

    return Config(name=d["name"], model=section(ModelConfig, d["model"]), tal=section(TALConfig, d["tal"]),
                  test=section(TestConfig, d["test"]), data=section(DataConfig, d["data"]),
                  train=section(TrainConfig, d["train"]))


def load_model(checkpoint: str | Path, preset: str | None = None, device: str = "cpu"):
    """A model with its weights from our checkpoint or an official one -> (model in eval mode, Config).

    ``model.categories`` holds the training data's categories when the checkpoint records them."""
    from tood_lib.engine.official_checkpoint import load_official_checkpoint

    path = Path(checkpoint)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a checkpoint file (e.g. {path / 'last.pth'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(raw, dict) and "model" in raw and isinstance(raw.get("config"), dict):
        cfg = config_from_dict(raw["config"])
        model = build_model(cfg)
        model.load_state_dict(raw["model"])
        model.categories = raw.get("categories")
    else:
        cfg = get_preset(preset or "tood_r50_fpn_1x_coco")
        model = build_model(cfg)
        load_official_checkpoint(model, raw)
    return model.to(device).eval(), cfg


class Detector:
    """Callable: image (path, PIL image or HxWx3 uint8 RGB array) -> dict(boxes (N,4) xyxy px, scores, labels,
    levels (the pyramid level, 0 = P3, each detection came from), class_names)."""

    def __init__(self, model, cfg: Config, class_names: list[str] | None = None):
        self.model, self.cfg = model, cfg
        known = [c["name"] for c in model.categories] if getattr(model, "categories", None) else None
        self.class_names = class_names or known or [str(i) for i in range(cfg.model.num_classes)]

    @classmethod
    def from_checkpoint(cls, checkpoint, preset: str | None = None, class_names=None, device: str = "cpu"):
        model, cfg = load_model(checkpoint, preset, device)
        return cls(model, cfg, class_names)

    @torch.no_grad()
    def __call__(self, image, score_thr: float | None = None) -> dict:
        if isinstance(image, (str, Path)):
            image = read_rgb_image(image)
        elif isinstance(image, Image.Image):
            image = to_rgb(image)  # 16-bit grayscale scaled to 8 bits, as for a file
        tensor = to_tensor_image(image)
        h, w = tensor.shape[1:]
        data = self.cfg.data
        normalized, _, _ = resize_and_normalize(tensor, data.img_scale, data.mean, data.std)
        batch = make_batch([normalized], original_sizes=[(h, w)], size_divisor=data.size_divisor)
        device = next(self.model.parameters()).device
        overrides = {} if score_thr is None else {"score_thr": score_thr}
        det = self.model.predict(batch.to(device), **overrides)[0]
        det = {k: v.cpu() for k, v in det.items()}
        det["class_names"] = [self.class_names[i] for i in det["labels"].tolist()]
        return det
