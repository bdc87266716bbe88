"""T-Head ablation switches: without M, without O, without layer attention (issue 5's head grid)."""
import torch

from tood_lib.batch import make_batch
from tood_lib.config import apply_overrides, get_preset
from tood_lib.model.detector import build_model
from tood_lib.model.detector import total_loss
from tood_lib.model.t_head import TaskAlignedHead


def head(**switches):
    torch.manual_seed(0)
    return TaskAlignedHead(num_classes=3, in_channels=32, feat_channels=32, stacked_convs=6, gn_groups=8,
                           **switches).eval()


def features(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 32, s, s, generator=g) for s in (8, 4, 2, 1, 1)]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_without_prob_map_the_score_is_the_classifier_alone():
    full, ablated = head(), head(prob_map=False)
    assert ablated.cls_prob_module is None
    assert n_params(full) - n_params(ablated) == n_params(full.cls_prob_module)
    with torch.no_grad():
        out = ablated(features(), return_internals=True)
    for scores, d in zip(out.scores, out.internals):
        torch.testing.assert_close(scores, d["cls_logits"].sigmoid())
        assert d["prob_map"] is None


def test_without_offsets_the_boxes_are_not_moved():
    full, ablated = head(), head(offsets=False)
    assert ablated.reg_offset_module is None
    assert n_params(full) - n_params(ablated) == n_params(full.reg_offset_module)
    with torch.no_grad():
        out = ablated(features(), return_internals=True)
    for d in out.internals:
        assert d["offsets"] is None
        assert torch.equal(d["boxes_after"], d["boxes_before"])


def test_without_layer_attention_every_layer_has_weight_one():
    ablated = head(layer_attention=False)
    assert ablated.cls_decomp.layer_attention is None and ablated.reg_decomp.layer_attention is None
    with torch.no_grad():
        out = ablated(features(), return_internals=True)
        d = out.internals[0]
        assert torch.equal(d["cls_attention"], torch.ones(2, 6))
        # X_task = ReLU(GN(W_red · concat(X^1..X^N))): the plain 1x1 reduction of the stack
        stack = torch.cat(d["inter_feats"], dim=1)
        conv = ablated.cls_decomp.reduction_conv
        expected = torch.relu(conv.gn(torch.nn.functional.conv2d(stack, conv.conv.weight)))
        torch.testing.assert_close(d["cls_feat"], expected, atol=1e-5, rtol=1e-4)


def test_defaults_are_the_full_t_head():
    full = head()
    assert full.cls_prob_module is not None and full.reg_offset_module is not None
    assert full.cls_decomp.layer_attention is not None


def test_ablated_small_model_trains_from_config_overrides():
    cfg = apply_overrides(get_preset("tood_small"), ["model.head_prob_map=false", "model.head_offsets=false",
                                                      "model.head_layer_attention=false"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.head.cls_prob_module is None and model.head.reg_offset_module is None
    batch = make_batch([torch.randn(3, 64, 64)], [torch.tensor([[8.0, 8.0, 40.0, 48.0]])], [torch.tensor([2])])
    for epoch in (0, 1):  # the ATSS warm-up and TAL
        losses = model.loss(batch, epoch=epoch)
        loss = total_loss(losses)
        assert torch.isfinite(loss)
        loss.backward()
    assert all(p.grad is not None for p in model.head.tood_cls.parameters())
