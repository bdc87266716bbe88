"""Real COCO files end to end: the R-50 preset trains on COCO Tiny through the real loader."""
import pytest
import torch

from tood_lib.config import apply_overrides, get_preset
from tood_lib.data.coco import coco_tiny_root
from tood_lib.engine.trainer import Trainer

ROOT = coco_tiny_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="COCO Tiny not found (shared/coco_tiny beside the project, "
                                                     "or set COCO_TINY)")


def test_r50_from_random_weights_fits_a_coco_tiny_batch(tmp_path):
    # reduced size: short side 192, long side <= 320; no flip, so the same batch repeats exactly.
    # From random weights the frozen ImageNet BatchNorm statistics of the recipe mean nothing, so
    # BatchNorm trains here (norm_eval off, nothing frozen).
    cfg = apply_overrides(get_preset("tood_r50_fpn_1x_coco"), [
        "data.img_scale=320,192", "data.flip_prob=0", "train.batch_size=2", "train.warmup_iters=1",
        "model.backbone_weights=none", "model.norm_eval=false", "model.frozen_stages=-1"])
    trainer = Trainer(cfg, ROOT, tmp_path / "run", num_workers=0, progress=False, evaluate_at_end=False)
    trainer.model.train()
    trainer.train_set.set_epoch(0)
    batch, metas = trainer.train_set.collate([trainer.train_set[i] for i in range(2)])
    assert all(m["file_name"].endswith(".jpg") for m in metas) and batch.gt_mask.sum() > 0
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    # From scratch at batch 2 the recipe's 0.01 sends the box regression off (exp of growing logits).
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    losses = []
    for _ in range(16):  # the ATSS warm-up phase (epoch 0), as a run from scratch starts
        out = trainer.model.loss(batch, epoch=0)
        loss = out["loss_cls"] + out["loss_bbox"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses
