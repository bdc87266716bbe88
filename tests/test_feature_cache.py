"""Cached backbone features (engine/feature_cache.py): exactly the live backbone's outputs, refused
when built for something else, and a training run on them equal to one on the live backbone."""
import json

import pytest
import torch

from tood_lib.config import apply_overrides, get_preset
from tood_lib.data.builtin import build_builtin_dataset
from tood_lib.data.coco import CocoDetection, collate
from tood_lib.engine.feature_cache import FeatureCache, build_feature_cache, cached_training_features, check_cache
from tood_lib.engine.trainer import Trainer
from tood_lib.model.detector import build_model

SMALL = ["model.frozen_stages=4", "model.norm_eval=true", "model.backbone_weights=none", "data.img_scale=64,64",
         "data.train_images=8", "train.batch_size=4", "train.epochs=2", "tal.warmup_epochs=1", "train.warmup_iters=1"]


def _cfg(extra=()):
    return apply_overrides(get_preset("tood_small"), SMALL + list(extra))


def _train_set(cfg):
    return CocoDetection(build_builtin_dataset(), "train", cfg.data, train=True, max_images=8, verbose=False)


def test_cached_features_are_the_live_backbone_outputs_for_both_flips(tmp_path):
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    data = _train_set(cfg)
    cached_training_features(model.backbone, data, tmp_path / "train.pt", progress=False)
    flips = set()
    for epoch in range(3):  # different epochs flip different images
        data.set_epoch(epoch)
        items = [data[i] for i in range(8)]
        flips |= {it["flipped"] for it in items}
        batch, _ = collate(items)
        assert torch.isinf(batch.images).all()  # placeholders: the files are not read
        data.features = None  # the same items read from disk, through the live backbone
        live = model.backbone(collate([data[i] for i in range(8)])[0].images)
        data.attach_features(FeatureCache(tmp_path / "train.pt"))
        for a, b in zip(live, batch.features):
            assert torch.equal(a, b)
    assert flips == {True, False}


def test_a_model_refuses_to_run_its_backbone_on_placeholders(tmp_path):
    cfg = _cfg()
    model = build_model(cfg)
    data = _train_set(cfg)
    cached_training_features(model.backbone, data, tmp_path / "train.pt", progress=False)
    batch, _ = collate([data[0], data[1]])
    with pytest.raises(ValueError, match="placeholders"):
        model(batch.images)
    out = model(batch.images, backbone_features=batch.features)
    assert torch.isfinite(out.flat_scores()).all()


def test_a_cache_for_other_weights_scale_or_backbone_is_refused(tmp_path):
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    data = _train_set(cfg)
    path = build_feature_cache(model.backbone, data, tmp_path / "train.pt", progress=False)
    with torch.no_grad():
        model.backbone.layer4[0].conv1.weight.add_(1e-3)
    with pytest.raises(ValueError, match="backbone"):
        check_cache(FeatureCache(path), model.backbone, data)
    other_scale = _cfg(["data.img_scale=96,96"])
    with pytest.raises(ValueError, match="img_scale"):
        check_cache(FeatureCache(path), build_model(other_scale).backbone, _train_set(other_scale))
    trainable = build_model(_cfg(["model.frozen_stages=1"]))
    with pytest.raises(ValueError, match="fully frozen"):
        build_feature_cache(trainable.backbone, data, tmp_path / "other.pt", progress=False)
    assert not (tmp_path / "other.pt").exists()


def test_a_cache_of_a_regenerated_data_set_is_refused(tmp_path):
    """Same folder, same image ids, other annotations (a generator changed): the old features are refused."""
    cfg = _cfg()
    root = build_builtin_dataset(tmp_path / "data", num_train=4, num_val=1, progress=False)
    data = CocoDetection(root, "train", cfg.data, train=True, verbose=False)
    backbone = build_model(cfg).backbone
    path = build_feature_cache(backbone, data, tmp_path / "train.pt", progress=False)
    check_cache(FeatureCache(path), backbone, data)  # as built: accepted
    annotations = root / "annotations" / "instances_train2017.json"
    annotations.write_text(annotations.read_text().replace('"iscrowd":0', '"iscrowd":0 ', 1))
    regenerated = CocoDetection(root, "train", cfg.data, train=True, verbose=False)
    assert regenerated.image_ids == data.image_ids
    with pytest.raises(ValueError, match="annotations"):
        check_cache(FeatureCache(path), backbone, regenerated)


def test_training_on_cached_features_equals_training_on_the_images(tmp_path):
    """Same seed, same steps (ATSS warm-up, then TAL), same evaluation: bitwise the same weights and AP."""
    cfg = _cfg()
    runs = {}
    for name, cache in (("live", None), ("cached", tmp_path / "features")):
        torch.manual_seed(0)
        trainer = Trainer(cfg, build_builtin_dataset(), tmp_path / name, seed=0, amp="off", progress=False,
                          feature_cache=cache, deterministic=True, eval_epochs=[1])
        result = trainer.fit()
        runs[name] = (trainer.model.state_dict(), result.box_ap, trainer.state.global_step)
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["train.pt", "train.pt.sha256", "val.pt",
                                                                        "val.pt.sha256"]
    (live, live_ap, steps), (cached, cached_ap, _) = runs["live"], runs["cached"]
    assert steps == 4 and live_ap == cached_ap
    assert all(torch.equal(live[k], cached[k]) for k in live)
    evals = [json.loads(line) for line in (tmp_path / "cached" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert [e["epoch"] for e in evals] == [1, 2]  # eval_epochs, then the final evaluation
