"""Our stand-in for ImageNet pretraining at CPU scale: a ResNet-18 trained to classify the shapes
of the built-in training split, cropped out one object at a time.

Why: every detector of the paper is fine-tuned from the *same* ImageNet-pretrained backbone, with
stage 1 frozen and BatchNorm in eval mode; only the head and the assignment change. From-scratch
training needs thousands of steps before detectors can be compared, which two CPU cores cannot
afford. So a backbone is first trained on an object-centric classification task (what ImageNet is),
and the detectors start from it with the official freezing rules: the small preset (the README's
main job) from the shipped ``SHIPPED`` file, the CPU-scale ablation grid from its own. The crops come
from the training split only, so nothing about the validation images leaks into the backbone.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from tood_lib.data.decode import read_rgb_image

CROP = 64  # crop side in pixels; the objects are 12-55 px in the 128-px detection images
CONTEXT = 1.2  # crop a box this much larger than the object, as ImageNet images hold context


def object_crops(root: str | Path, split: str = "train", size: int = CROP, mean=(123.675, 116.28, 103.53),
                 std=(58.395, 57.12, 57.375), max_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every annotated object of a COCO-format split (of its first ``max_images`` images) as a square
    crop: -> (N, 3, size, size) normalised images and (N,) labels 0..K-1 (categories in id order)."""
    root = Path(root)
    data = json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())
    cat_index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append(ann)
    crops, labels = [], []
    for image in data["images"][:max_images]:
        anns = by_image.get(image["id"], [])
        if not anns:
            continue
        picture = read_rgb_image(root / f"{split}2017" / image["file_name"])
        for ann in anns:
            x, y, w, h = ann["bbox"]
            side = max(w, h) * CONTEXT
            cx, cy = x + w / 2, y + h / 2
            box = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
            crop = picture.crop(box)  # zero-padded where the box leaves the image
            crops.append(np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32))
            labels.append(cat_index[ann["category_id"]])
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    images = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return images.contiguous(), torch.tensor(labels)


class ShapeClassifier(nn.Module):
    """A torchvision ResNet (the detector's backbone) with global pooling and a linear classifier."""

    def __init__(self, depth: int = 18, num_classes: int = 10):
        super().__init__()
        import torchvision

        self.net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)

    def forward(self, x):
        return self.net(x)


def pretrain_backbone(root: str | Path, out_path: str | Path, depth: int = 18, epochs: int = 6, batch_size: int = 64,
                      lr: float = 0.02, seed: int = 0, progress: bool = True, max_images: int | None = None,
                      crop_size: int = CROP) -> dict:
    """Train ResNet-``depth`` on the crops of ``root``'s train split and save its weights (torchvision
    key names, without ``fc``) to ``out_path``; -> {"train_accuracy", "val_accuracy", "seconds", ...}.

    Recipe: SGD with momentum 0.9, weight decay 1e-4, cosine LR from ``lr`` (0.1 does not learn at
    all from scratch here; 0.02 does), random horizontal flips; the val split's crops give the held-out accuracy (reported, never trained on).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    train_x, train_y = object_crops(root, "train", size=crop_size, max_images=max_images)
    val_x, val_y = object_crops(root, "val", size=crop_size, max_images=max_images)
    if not len(train_x):
        raise ValueError(f"no annotated objects in {root}'s train split to pretrain on")
    num_classes = len(json.loads((Path(root) / "annotations" / "instances_train2017.json").read_text())["categories"])
    model = ShapeClassifier(depth, num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    total = epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=total, desc="backbone pretraining", disable=not progress, dynamic_ncols=True)
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(steps_per_epoch):
            index = order[i * batch_size:(i + 1) * batch_size]
            x, y = train_x[index], train_y[index]
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
            bar.update(1)
    bar.close()
    model.eval()
    with torch.no_grad():
        def accuracy(x, y):
            return float(torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)]).eq(y).float().mean())
        stats = dict(train_accuracy=accuracy(train_x, train_y), val_accuracy=accuracy(val_x, val_y),
                     train_crops=len(train_x), val_crops=len(val_x), epochs=epochs, depth=depth, crop_size=crop_size,
                     seconds=round(time.perf_counter() - start, 1))
    state = {k: v for k, v in model.net.state_dict().items() if not k.startswith("fc.")}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(out_path)
    out_path.with_suffix(".json").write_text(json.dumps(stats, indent=2))
    return stats


# The small preset's backbone (``model.backbone_weights="builtin_shapes"``): this recipe on the default
# built-in data set. Its result ships with the repository (SHIPPED, the weights stored in fp16: 22 MB),
# because a good backbone takes 5 minutes to make on 2 cores and the main job has 10 minutes in all;
# ``python -m tood_lib pretrain-backbone`` makes it again. Without the shipped file (or for another
# depth) it is made on first use and cached in data/pretrained/.
SHAPES_RECIPE = dict(epochs=12, crop_size=64, batch_size=64, lr=0.02, seed=0)
SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "resnet18_builtin_shapes.pth"


def save_half(state: dict, stats: dict, out_path: str | Path) -> Path:
    """Write a backbone state dict with its floating tensors in fp16 (half the size; fine-tuning starts
    from them in fp32) and its stats next to it as JSON; -> the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    tmp = out_path.with_suffix(".tmp")
    torch.save(half, tmp)
    tmp.replace(out_path)
    out_path.with_suffix(".json").write_text(json.dumps(stats, indent=2))
    return out_path


def make_shapes_backbone(out_path: str | Path, depth: int = 18, progress: bool = True) -> dict:
    """Pretrain ResNet-``depth`` with SHAPES_RECIPE on the default built-in data set and save it in fp16
    at ``out_path``; -> the stats (accuracies, seconds, recipe)."""
    import tempfile

    from tood_lib.data.builtin import GENERATOR_VERSION, build_builtin_dataset

    root = build_builtin_dataset(progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "backbone.pth"
        stats = pretrain_backbone(root, full, depth=depth, progress=progress, **SHAPES_RECIPE)
        state = torch.load(full, map_location="cpu", weights_only=True)
    stats.update(recipe=SHAPES_RECIPE, data_generator_version=GENERATOR_VERSION, torch=torch.__version__)
    save_half(state, stats, out_path)
    return stats


def shapes_backbone(depth: int = 18, progress: bool = True) -> Path:
    """The path of a ResNet-``depth`` pretrained on the built-in shapes with ``SHAPES_RECIPE``: the
    shipped file for ResNet-18, else ``data/pretrained/resnet<depth>_shapes_<recipe>.pth``, made on
    first use (about 5 minutes for ResNet-18 on 2 CPU cores) and reused after. Concurrent callers
    wait for one another (a file lock).

    This is the small preset's stand-in for ImageNet weights, as ``"imagenet"`` downloads
    torchvision's for the COCO presets.
    """
    import fcntl

    from tood_lib.data.builtin import GENERATOR_VERSION, default_builtin_root

    if depth == 18 and SHIPPED.is_file():
        return SHIPPED
    r = SHAPES_RECIPE
    folder = default_builtin_root().parent / "pretrained"
    path = folder / (f"resnet{depth}_shapes_g{GENERATOR_VERSION}_crop{r['crop_size']}_e{r['epochs']}_b{r['batch_size']}"
                     f"_lr{r['lr']}_s{r['seed']}.pth")
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be making it right now
        if not path.is_file():
            print(f"[pretrain] ResNet-{depth} on the built-in shapes ({r['epochs']} epochs of {r['crop_size']}-px "
                  f"object crops), once: -> {path}", flush=True)
            stats = make_shapes_backbone(path, depth, progress)
            print(f"[pretrain] {stats['seconds']:.0f} s; held-out crop accuracy {stats['val_accuracy']:.1%}", flush=True)
    return path
