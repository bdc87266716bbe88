"""The small preset's shape-pretrained ResNet-18: the shipped file, how the preset finds it, how it is made."""
import json

import torch

from tood_lib.config import get_preset
from tood_lib.engine.pretrain import SHAPES_RECIPE, SHIPPED, save_half, shapes_backbone
from tood_lib.model.detector import build_model


def test_the_shipped_file_is_the_recipe_s_result_and_loads_into_the_small_preset():
    stats = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert stats["recipe"] == SHAPES_RECIPE and stats["depth"] == 18
    assert stats["val_accuracy"] > 0.9  # held-out crops: the backbone has learned the shapes
    assert shapes_backbone(18) == SHIPPED
    state = torch.load(SHIPPED, weights_only=True)
    assert state["conv1.weight"].dtype == torch.float16 and not any(k.startswith("fc.") for k in state)
    model = build_model(get_preset("tood_small"), load_backbone_weights=True)
    backbone = model.backbone.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        torch.testing.assert_close(backbone[key], state[key].float())
    # the official freezing rules: stem and stage 1 frozen, every BatchNorm in eval mode
    assert not model.backbone.conv1.weight.requires_grad and not any(p.requires_grad for p in model.backbone.layer1.parameters())
    model.train()
    assert not model.backbone.layer3[0].bn1.training


def test_save_half_keeps_integers_and_halves_floats(tmp_path):
    state = {"w": torch.randn(3, 3), "n": torch.tensor(7)}
    path = save_half(state, {"a": 1}, tmp_path / "x.pth")
    back = torch.load(path, weights_only=True)
    assert back["w"].dtype == torch.float16 and back["n"].dtype == torch.int64 and back["n"] == 7
    torch.testing.assert_close(back["w"].float(), state["w"], rtol=1e-3, atol=1e-3)
    assert json.loads(path.with_suffix(".json").read_text()) == {"a": 1}
