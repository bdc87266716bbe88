"""The parallel-head baseline: ATSS's head (paper Fig. 3a, Table 1).

Two separate towers of four conv+GN+ReLU layers, one for classification and one for
localisation, then a 3x3 prediction conv on each (and, optionally, ATSS's centerness branch on
the regression tower). No interaction between the tasks, no alignment. The box decodings are the
T-Head's, so the two heads are interchangeable in the detector, the assigners and the losses.
Submodule names are MMDetection's ATSSHead names.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tood_lib.model.head_output import HeadOutput
from tood_lib.model.t_head import BIAS_PRIOR, ConvGN, Scale, TaskAlignedHead


class ParallelHead(nn.Module):
    """forward(features) -> HeadOutput with σ(cls logits) (B, K, H, W) and boxes (B, 4, H, W) per level."""

    def __init__(self, num_classes: int = 80, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 4, strides=(8, 16, 32, 64, 128), anchor_type: str = "anchor_free",
                 gn_groups: int = 32, centerness: bool = True, conv_bias: bool = False, anchor_scale: float = 8.0):
        super().__init__()
        self.num_classes, self.strides, self.anchor_type = num_classes, tuple(strides), anchor_type
        self.anchor_scale = float(anchor_scale)
        # conv_bias: FCOS w/ imprv's towers have biased convs before their GroupNorm (ATSS's do not)
        self.cls_convs = nn.ModuleList(ConvGN(in_channels if i == 0 else feat_channels, feat_channels, 3, gn_groups,
                                              bias=conv_bias) for i in range(stacked_convs))
        self.reg_convs = nn.ModuleList(ConvGN(in_channels if i == 0 else feat_channels, feat_channels, 3, gn_groups,
                                              bias=conv_bias) for i in range(stacked_convs))
        self.atss_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.atss_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.atss_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1) if centerness else None
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMDetection's ATSSHead init: N(0, 0.01) everywhere, biases 0, classification bias -4.595."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.atss_cls.bias, BIAS_PRIOR)

    # Box decoding is shared with the T-Head (same Scale / exp / DeltaXYWH conventions).
    decode = TaskAlignedHead.decode

    def forward_level(self, x: Tensor, level: int, return_internals: bool = False):
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        cls_logits = self.atss_cls(cls_feat)
        reg_raw = self.atss_reg(reg_feat)
        centerness = self.atss_centerness(reg_feat).float() if self.atss_centerness is not None else None
        with torch.autocast(device_type=x.device.type, enabled=False):
            scores = cls_logits.float().sigmoid()
            boxes = self.decode(reg_raw, level)
        internals = None
        if return_internals:
            internals = dict(cls_feat=cls_feat, reg_feat=reg_feat, cls_logits=cls_logits,
                             boxes_before=boxes, boxes_after=boxes, centerness=centerness)
        return scores, boxes, centerness, internals

    def forward(self, features: list[Tensor], return_internals: bool = False) -> HeadOutput:
        if len(features) != len(self.strides):
            raise ValueError(f"parallel head: expected {len(self.strides)} feature maps, got {len(features)}")
        outs = [self.forward_level(x, level, return_internals) for level, x in enumerate(features)]
        return HeadOutput(scores=[o[0] for o in outs], boxes=[o[1] for o in outs], strides=self.strides,
                          anchor_scale=self.anchor_scale,
                          centerness=[o[2] for o in outs] if self.atss_centerness is not None else None,
                          internals=[o[3] for o in outs] if return_internals else None)
