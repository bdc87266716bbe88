"""The whole detector: forward, losses in both phases, fp32 and bf16 autocast, gradient flow, inference."""
import pytest
import torch

from tood_lib.batch import make_batch
from tood_lib.config import apply_overrides, get_preset
from tood_lib.model.detector import build_model
from tood_lib.model.detector import total_loss


def small_model(**overrides):
    torch.manual_seed(0)
    cfg = get_preset("tood_small")
    return build_model(apply_overrides(cfg, [f"{k}={v}" for k, v in overrides.items()]))


def two_images():
    """Two images of different sizes, the second without boxes (so the batch is padded)."""
    torch.manual_seed(1)
    images = [torch.randn(3, 128, 160), torch.randn(3, 96, 128)]
    boxes = [torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 30.0, 150.0, 120.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 4]), torch.zeros(0, dtype=torch.long)]
    return make_batch(images, boxes, labels)


@pytest.mark.parametrize("epoch", [0, 5], ids=["atss-warmup", "tal"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_forward_and_loss_on_two_images_one_empty(epoch, autocast):
    model = small_model().train()
    batch = two_images()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(batch.images)
        losses, assignment = model.loss(batch, epoch=epoch, return_assignment=True)
    # the alignment math, the assigner and the losses stay in fp32 even under autocast
    assert all(s.dtype == torch.float32 for s in out.scores) and all(b.dtype == torch.float32 for b in out.boxes)
    for name in ("loss_cls", "loss_bbox"):
        assert losses[name].dtype == torch.float32 and torch.isfinite(losses[name]), name
        assert losses[name] > 0
    assert assignment.target.dtype == torch.float32
    assert assignment.positive[0].sum() > 0 and assignment.positive[1].sum() == 0  # empty image: background only
    total_loss(losses).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_gradients_reach_m_o_scales_and_layer_attention():
    model = small_model().train()
    losses = model.loss(two_images(), epoch=5)  # TAL phase
    total_loss(losses).backward()
    head = model.head
    checks = {
        "M (probability map)": head.cls_prob_module[2].weight,
        "O (offset map)": head.reg_offset_module[2].weight,
        "Scales": torch.stack([s.scale for s in head.scales]),
        "cls layer attention": head.cls_decomp.layer_attention[2].weight,
        "reg layer attention": head.reg_decomp.layer_attention[0].weight,
    }
    for name, param in checks.items():
        grad = param.grad if param.is_leaf else torch.stack([s.scale.grad for s in head.scales])
        assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_the_epoch_switches_from_atss_to_tal():
    model = small_model()
    batch = two_images()
    switch = model.cfg.tal.warmup_epochs
    model.epoch = switch - 1
    _, warm = model.loss(batch, return_assignment=True)
    model.epoch = switch
    _, tal = model.loss(batch, return_assignment=True)
    assert torch.all(warm.target[warm.positive] == 1.0)  # ATSS: binary targets
    assert torch.all(tal.target[tal.positive] < 1.0)  # TAL: t̂ ≤ best IoU < 1 for an untrained model
    cfg = get_preset("tood_r50_fpn_1x_coco")
    assert cfg.tal.warmup_epochs == 4


def test_warmup_normalisers_count_positives_and_tal_normalisers_sum_t_hat():
    model = small_model()
    batch = two_images()
    losses, a = model.loss(batch, epoch=0, return_assignment=True)
    assert losses["normalizer_cls"].item() == pytest.approx(a.positive.sum().item())
    losses, a = model.loss(batch, epoch=9, return_assignment=True)
    assert a.target.sum() > 0
    assert losses["normalizer_cls"].item() == pytest.approx(a.target.sum().item(), rel=1e-5)
    assert losses["normalizer_bbox"].item() == pytest.approx(losses["normalizer_cls"].item(), rel=1e-5)


def test_parallel_head_and_anchor_based_variants_train():
    for overrides in (dict(**{"model.head": "parallel"}), dict(**{"model.anchor_type": "anchor_based"})):
        model = small_model(**overrides).train()
        for epoch in (0, 5):
            losses = model.loss(two_images(), epoch=epoch)
            assert all(torch.isfinite(v) for v in losses.values())
            total_loss(losses).backward()
    assert "loss_centerness" in small_model(**{"model.head": "parallel"}).loss(two_images(), epoch=0)


def test_predict_returns_rescaled_detections():
    model = small_model().eval()
    batch = make_batch([torch.randn(3, 64, 96)], original_sizes=[(128, 192)])
    dets = model.predict(batch, score_thr=0.0, max_per_img=7)
    assert len(dets) == 1 and dets[0]["boxes"].shape == (7, 4)
    assert dets[0]["boxes"][:, 2].max() <= 192 and dets[0]["boxes"][:, 3].max() <= 128
    assert dets[0]["labels"].max() < 10


def test_r50_forward_and_loss_fp32():
    torch.manual_seed(0)
    model = build_model("tood_r50_fpn_1x_coco").train()
    batch = make_batch([torch.randn(3, 160, 224), torch.randn(3, 128, 128)],
                       [torch.tensor([[20.0, 30.0, 120.0, 140.0]]), torch.zeros(0, 4)],
                       [torch.tensor([17]), torch.zeros(0, dtype=torch.long)])
    for epoch in (0, 4):
        losses = model.loss(batch, epoch=epoch)
        assert torch.isfinite(total_loss(losses))
    assert [s.shape[1] for s in model(batch.images).scores] == [80] * 5


def test_bad_inputs_say_what_was_expected():
    model = small_model()
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got \(3, 64, 64\)"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="x2>=x1"):
        make_batch([torch.zeros(3, 64, 64)], [torch.tensor([[30.0, 10.0, 20.0, 40.0]])], [torch.tensor([0])])
    with pytest.raises(ValueError, match="NaN"):
        make_batch([torch.zeros(3, 64, 64)], [torch.tensor([[float("nan"), 10.0, 20.0, 40.0]])], [torch.tensor([0])])
    with pytest.raises(ValueError, match=r"expected shape \(3, H, W\)"):
        make_batch([torch.zeros(64, 64)])
