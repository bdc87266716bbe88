"""The Table 2 assignment schemes wired into the criterion (tal.assigner after the warm-up)."""
import pytest
import torch

from tood_lib.batch import make_batch
from tood_lib.boxes import aligned_iou, box_iou
from tood_lib.config import apply_overrides, get_preset
from tood_lib.criterion import assign, compute_losses, scheme
from tood_lib.losses import focal_loss_with_probs
from tood_lib.model.detector import build_model
from tood_lib.model.detector import total_loss
from tood_lib.model.priors import valid_prior_mask


def small(assigner):
    cfg = apply_overrides(get_preset("tood_small"), [f"tal.assigner={assigner}", "tal.fcos_regress_ranges=-1,32,32,64,64,128,128,256,256,1e8"])
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def batch():
    return make_batch([torch.randn(3, 96, 96), torch.randn(3, 64, 96)],
                      [torch.tensor([[8.0, 8.0, 40.0, 48.0], [30.0, 20.0, 90.0, 80.0]]), torch.tensor([[10.0, 5.0, 50.0, 30.0]])],
                      [torch.tensor([2, 5]), torch.tensor([1])])


def test_warmup_is_atss_then_the_configured_scheme():
    _, cfg = small("fcos")
    assert [scheme(cfg.tal, e) for e in range(3)] == ["atss", "fcos", "fcos"]


@pytest.mark.parametrize("assigner", ["tal", "atss", "atss_qfl", "max_iou", "fcos", "fovea"])
def test_every_scheme_trains(assigner):
    model, cfg = small(assigner)
    model.train()
    losses = model.loss(batch(), epoch=cfg.tal.warmup_epochs)
    loss = total_loss(losses)
    assert torch.isfinite(loss) and int(losses["num_pos"]) > 0
    loss.backward()
    assert model.head.tood_reg.weight.grad.abs().sum() > 0


def losses_after_warmup(assigner):
    """(model, cfg, batch, head output, losses, Assignment) of the first epoch after the warm-up."""
    model, cfg = small(assigner)
    b = batch()
    with torch.no_grad():
        out = model(b.images)
        losses, a = compute_losses(out, b, cfg.tal, epoch=cfg.tal.warmup_epochs)
    return model, cfg, b, out, losses, a


def test_max_iou_ignore_band_takes_no_classification_loss():
    _, _, b, out, losses, a = losses_after_warmup("max_iou")
    assert a.ignored.any()
    scores = out.flat_scores().float()
    targets = torch.zeros_like(scores)
    targets[a.positive, a.labels[a.positive]] = 1.0
    keep = valid_prior_mask(out.feature_sizes, out.strides, b.pad_shapes) & ~a.ignored
    expected = (focal_loss_with_probs(scores, targets) * keep[..., None]).sum() / a.positive.sum()
    torch.testing.assert_close(losses["loss_cls"], expected, rtol=1e-5, atol=1e-6)


def test_atss_qfl_targets_are_the_predicted_boxes_iou():
    _, cfg, b, out, _, a = losses_after_warmup("atss_qfl")
    plain = assign(out, b, cfg.tal, "atss")
    assert torch.equal(a.positive, plain.positive)  # the positives are ATSS's
    pos = a.positive
    pred = out.flat_boxes(pixels=True)[pos]
    gt = b.gt_boxes.gather(1, a.gt_index.clamp(min=0)[..., None].expand(-1, -1, 4))[pos]
    torch.testing.assert_close(a.target[pos], aligned_iou(pred, gt).clamp(min=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aligned_iou(pred[:3], gt[:3]), box_iou(pred[:3], gt[:3]).diagonal())


def test_unknown_assigner_is_rejected():
    with pytest.raises(ValueError, match="tal.assigner"):
        apply_overrides(get_preset("tood_small"), ["tal.assigner=paa"])


def test_parallel_head_with_centerness_trains_with_the_iou_threshold_scheme():
    cfg = apply_overrides(get_preset("tood_small"), ["model.head=parallel", "tal.assigner=max_iou"])
    torch.manual_seed(0)
    model = build_model(cfg)
    losses = model.loss(batch(), epoch=cfg.tal.warmup_epochs)
    assert "loss_centerness" in losses and torch.isfinite(total_loss(losses))


def test_centerness_target_is_zero_outside_the_box():
    from tood_lib.losses import centerness_target

    points = torch.tensor([[5.0, 5.0], [15.0, 5.0], [-1.0, -1.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).expand(3, -1)
    torch.testing.assert_close(centerness_target(points, boxes), torch.tensor([1.0, 0.0, 0.0]))
