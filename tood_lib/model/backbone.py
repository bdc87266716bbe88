"""The backbone: a torchvision ResNet / ResNeXt that hands C3, C4, C5 to the FPN (spec §1.1).

TOOD uses MMDetection's "pytorch"-style ResNet, whose stride-2 sits in the 3x3 conv of a
bottleneck — exactly torchvision's layout, so we build the network with torchvision's own
constructors and keep its children (``conv1, bn1, relu, maxpool, layer1..layer4``) as our own
attributes. The state_dict keys are therefore ``conv1.weight``, ``layer1.0.downsample.0.weight``,
... — the reference checkpoint's ``backbone.*`` keys without the prefix, and the torchvision
ImageNet files load without renaming. ``fc`` and ``avgpool`` are dropped: a detector never uses them.

Three training conventions of the reference live here too:

- ``frozen_stages``: the first stages get ``requires_grad=False`` *and* stay in eval mode
  (0 = stem, 1 = stem + layer1, ...). The reference freezes stem + layer1.
- ``norm_eval``: every BatchNorm stays in eval mode during training, because detection batches
  (2-4 images per GPU) are far too small to estimate batch statistics; the running statistics
  from ImageNet are used as they are. The affine weights of unfrozen stages are still trained.
- ``dcn_stages``: DCNv2 in place of the 3x3 conv of every bottleneck of the chosen stages (the
  R-101 / X-101 DCN variants), with the pretrained 3x3 weight and a zero offset/mask predictor.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from tood_lib.model.dcn import ModulatedDeformConv2d

# (depth, groups, width_per_group) -> (torchvision constructor name, weights enum name).
# The weights are the ones MMDetection uses: mmcv's ``torchvision://resnet50`` is IMAGENET1K_V1.
# For ResNeXt-101-64x4d the reference uses ``open-mmlab://resnext101_64x4d``, which torchvision
# does not ship; torchvision's only weights for that network are offered instead (a local
# open-mmlab file can be given as ``pretrained=path``).
_ARCHS = {
    (18, 1, 64): ("resnet18", "ResNet18_Weights"),
    (34, 1, 64): ("resnet34", "ResNet34_Weights"),
    (50, 1, 64): ("resnet50", "ResNet50_Weights"),
    (101, 1, 64): ("resnet101", "ResNet101_Weights"),
    (101, 64, 4): ("resnext101_64x4d", "ResNeXt101_64X4D_Weights"),
}
_CONSTRUCTORS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
_BASIC_BLOCK_DEPTHS = (18, 34)  # BasicBlock nets: no grouped convs, no DCN (as in mmdet)


# open-mmlab's detectron caffe ResNets (``open-mmlab://detectron/resnet50_caffe``), FCOS w/ imprv's backbone
CAFFE_WEIGHTS_URL = {50: "https://download.openmmlab.com/pretrain/third_party/resnet50_caffe-788b5fa3.pth",
                     101: "https://download.openmmlab.com/pretrain/third_party/resnet101_caffe-3ad79236.pth"}


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights are neither in the torch hub cache nor downloadable."""


class ResNetBackbone(nn.Module):
    """ResNet / ResNeXt trunk. x (B, 3, H, W) -> [C3 (B, c3, H/8, W/8), C4 (.., H/16, W/16), C5 (.., H/32, W/32)].

    Args:
        depth: 18, 34, 50 or 101.
        groups, width_per_group: ResNeXt cardinality and per-group width (X-101-64x4d: 64, 4).
        frozen_stages: -1 freezes nothing, 0 the stem, k >= 1 the stem and layer1..layerk.
        norm_eval: keep every BatchNorm in eval mode even in ``train()``.
        dcn_stages: per stage (layer1..layer4), replace each bottleneck's 3x3 conv by DCNv2.
        pretrained: False (random init), True (torchvision ImageNet weights, from the torch hub
            cache or downloaded), or a path to a local ``.pth`` file.
        zero_init_residual: zero the last BN of each residual block at random init (MMDetection's
            default; irrelevant once pretrained weights are loaded).
        style: "pytorch" (stride in a stage's first 3x3 conv, torchvision's weights) or "caffe" (stride
            in its first 1x1 conv, open-mmlab's caffe weights; FCOS w/ imprv in the paper's Table 1).
        norm_trainable: False fixes every BatchNorm's affine weight and bias (MMDetection's caffe configs).
    """

    def __init__(self, depth: int = 50, groups: int = 1, width_per_group: int = 64, frozen_stages: int = 1,
                 norm_eval: bool = True, dcn_stages: Sequence[bool] = (False, False, False, False),
                 pretrained: bool | str | os.PathLike = False, *, zero_init_residual: bool = True,
                 style: str = "pytorch", norm_trainable: bool = True):
        super().__init__()
        if depth not in _CONSTRUCTORS:
            raise ValueError(f"ResNetBackbone: depth={depth} is not supported; choose one of {sorted(_CONSTRUCTORS)}.")
        if depth in _BASIC_BLOCK_DEPTHS and (groups, width_per_group) != (1, 64):
            raise ValueError(f"ResNet-{depth} is built from BasicBlocks, which have no grouped convs "
                             f"(got groups={groups}, width_per_group={width_per_group}); use depth 50 or 101.")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4 (-1: none, 0: stem, k: stem + layer1..k), "
                             f"got {frozen_stages}.")
        dcn_stages = tuple(bool(s) for s in dcn_stages)
        if len(dcn_stages) != 4:
            raise ValueError(f"dcn_stages needs one flag per stage (layer1..layer4), got {len(dcn_stages)}.")
        if any(dcn_stages) and depth in _BASIC_BLOCK_DEPTHS:
            raise ValueError(f"DCN replaces the 3x3 conv of a bottleneck; ResNet-{depth} has none (BasicBlocks).")

        if style not in ("pytorch", "caffe") or (style == "caffe" and depth in _BASIC_BLOCK_DEPTHS):
            raise ValueError(f"style: 'pytorch', or 'caffe' for bottleneck ResNets (depth 50/101), got {style!r} "
                             f"with depth {depth}.")
        self.depth, self.groups, self.width_per_group = depth, groups, width_per_group
        self.style, self.norm_trainable = style, norm_trainable
        self.frozen_stages, self.norm_eval, self.dcn_stages = frozen_stages, norm_eval, dcn_stages

        arch = _ARCHS.get((depth, groups, width_per_group))
        if arch is not None and arch[0] == "resnext101_64x4d":
            net = torchvision.models.resnext101_64x4d(weights=None, zero_init_residual=zero_init_residual)
        else:
            net = getattr(torchvision.models, _CONSTRUCTORS[depth])(
                weights=None, groups=groups, width_per_group=width_per_group, zero_init_residual=zero_init_residual)
        # Keep torchvision's children under their own names: the state_dict keys then match
        # both the torchvision files and the reference checkpoint's ``backbone.*`` keys.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

        if style == "caffe":  # the stride of a stage's first block sits in its 1x1 conv, not its 3x3
            for stage in self.stages()[1:]:
                stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
        if not norm_trainable:  # MMDetection's caffe configs: BN(requires_grad=False), affine fixed
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.weight.requires_grad_(False)
                    module.bias.requires_grad_(False)
        for stage, use_dcn in zip(self.stages(), dcn_stages):
            if use_dcn:
                for block in stage:
                    block.conv2 = _deformable_like(block.conv2)

        # Channels of the last block of layer2..4 (BasicBlock: bn2, Bottleneck: bn3).
        self.out_channels = [_block_out_channels(stage[-1]) for stage in (self.layer2, self.layer3, self.layer4)]

        if pretrained:
            self.load_pretrained(pretrained)
        self._freeze_stages()

    def stages(self) -> list[nn.Sequential]:
        """layer1..layer4, in order."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, 3, H, W) -> [C3, C4, C5] at strides 8, 16, 32 (C2 is computed but not returned)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]

    def train(self, mode: bool = True) -> "ResNetBackbone":
        """Like ``nn.Module.train``, but frozen stages and (with ``norm_eval``) every BN stay in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def _freeze_stages(self) -> None:
        """Stem (and layer1..layerk): no gradients, and eval mode so BN statistics never move."""
        frozen = []
        if self.frozen_stages >= 0:
            frozen += [self.conv1, self.bn1]
        frozen += self.stages()[:max(self.frozen_stages, 0)]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)

    # ------------------------------------------------------------------ pretrained weights
    def load_pretrained(self, pretrained: bool | str | os.PathLike) -> None:
        """Load ImageNet weights: ``True`` for torchvision's, or a path to a local file.

        A local file may be a torchvision state dict or an mmcv / open-mmlab file that wraps
        it under ``'state_dict'``; ``fc.*`` keys are ignored. DCN convs take the plain 3x3
        weight (same key, ``layerN.i.conv2.weight``) and keep their zero ``conv_offset``.
        """
        if pretrained is True and self.style == "caffe":
            raise PretrainedWeightsUnavailable(
                f"a caffe-style ResNet-{self.depth} needs caffe weights, not torchvision's. Download open-mmlab's "
                f"{CAFFE_WEIGHTS_URL.get(self.depth, 'resnet{depth}_caffe')} and set model.backbone_weights=PATH "
                "(and data.mean=122.7717,115.9465,102.9801 data.std=1,1,1, the caffe normalisation in RGB order).")
        if pretrained is True:
            state_dict = _download_torchvision_weights(self.depth, self.groups, self.width_per_group)
            source = "torchvision ImageNet weights"
        else:
            state_dict = _read_weight_file(pretrained)
            source = str(pretrained)
            if self.style == "caffe" and "conv1.weight" in _strip_prefixes(state_dict):
                # caffe weights expect BGR input; reversing conv1's input channels lets them read our RGB
                state_dict = _strip_prefixes(state_dict)
                state_dict["conv1.weight"] = state_dict["conv1.weight"].flip(1)
        self._load_backbone_state_dict(state_dict, source)

    def _load_backbone_state_dict(self, state_dict: Mapping[str, Tensor], source: str) -> None:
        state_dict = _strip_prefixes(state_dict)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        own = self.state_dict()
        # Keys the file may legitimately lack: the DCN offset predictors (they start at zero)
        # and BN's ``num_batches_tracked`` (absent from older files, unused with norm_eval).
        may_lack = {k for k in own if ".conv_offset." in k or k.endswith("num_batches_tracked")}
        missing = [k for k in own if k not in state_dict and k not in may_lack]
        unexpected = [k for k in state_dict if k not in own]
        misshaped = [f"{k}: backbone expects {tuple(own[k].shape)}, file has {tuple(state_dict[k].shape)}"
                     for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
        if missing or unexpected or misshaped:
            raise ValueError(
                f"The weights in {source} do not fit a ResNet-{self.depth} (groups={self.groups}, "
                f"width_per_group={self.width_per_group}) backbone:\n"
                + _list_block("missing", missing) + _list_block("unexpected", unexpected)
                + _list_block("wrong shape", misshaped))
        self.load_state_dict(state_dict, strict=False)


def _deformable_like(conv: nn.Conv2d) -> ModulatedDeformConv2d:
    """A DCNv2 with the same geometry as ``conv`` and its weight (bias-free, one deform group)."""
    dcn = ModulatedDeformConv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size[0],
                                stride=conv.stride[0], padding=conv.padding[0], dilation=conv.dilation[0],
                                groups=conv.groups, deform_groups=1, bias=False)
    with torch.no_grad():
        dcn.weight.copy_(conv.weight)  # keep torchvision's Kaiming init; the offset conv stays zero
    return dcn


def _block_out_channels(block: nn.Module) -> int:
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return last_bn.num_features


def _strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a DDP ``module.`` prefix, and keep only ``backbone.*`` of a detector checkpoint."""
    state_dict = dict(state_dict)
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return state_dict


def _read_weight_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a local weight file, unwrapped from ``{'state_dict': ...}`` / ``{'model': ...}``."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if "caffe" in path.name:
            hint = f"; get open-mmlab's caffe ResNets from {CAFFE_WEIGHTS_URL[50]} (or resnet101_caffe-3ad79236.pth)"
        raise FileNotFoundError(f"Backbone weight file not found: {path}{hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or a pickle that weights_only refuses
        raise ValueError(f"Could not read {path} as a PyTorch weight file: {err}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors).")
    return dict(obj)


def _download_torchvision_weights(depth: int, groups: int, width_per_group: int) -> dict[str, Tensor]:
    """torchvision's ImageNet weights from the torch hub cache, downloading them if needed."""
    arch = _ARCHS.get((depth, groups, width_per_group))
    if arch is None:
        known = ", ".join(f"depth={d} groups={g} width_per_group={w}" for d, g, w in _ARCHS)
        raise ValueError(f"torchvision has no ImageNet weights for depth={depth}, groups={groups}, "
                         f"width_per_group={width_per_group}; pretrained=True supports: {known}. "
                         f"Pass pretrained='/path/to/weights.pth' instead.")
    name, enum_name = arch
    weights = getattr(torchvision.models, enum_name).IMAGENET1K_V1
    url = weights.url
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(urlparse(url).path)
    try:
        return torch.hub.load_state_dict_from_url(url, model_dir=str(directory), map_location="cpu",
                                                  progress=True, check_hash=True, weights_only=True)
    except Exception as err:
        raise PretrainedWeightsUnavailable(
            f"Pretrained ImageNet weights for {name} ({enum_name}.IMAGENET1K_V1) are not available: they are "
            f"not in the torch hub cache and could not be downloaded ({type(err).__name__}: {err}).\n"
            f"  Download {url}\n"
            f"  and save it as the file {filename} in the directory {directory}\n"
            f"  (i.e. {directory / filename}; the directory follows $TORCH_HOME), "
            f"or pass pretrained='/path/to/{filename}'.") from None


def _list_block(title: str, items: list[str], limit: int = 10) -> str:
    if not items:
        return ""
    shown = "".join(f"    {item}\n" for item in items[:limit])
    more = f"    ... and {len(items) - limit} more\n" if len(items) > limit else ""
    return f"  {title} ({len(items)}):\n{shown}{more}"
