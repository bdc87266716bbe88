"""The feature pyramid: C3-C5 -> P3-P7, exactly MMDetection's FPN as TOOD configures it (spec §1.2).

    P5 = conv3x3(L5)            L5 = lateral1x1(C5)
    P4 = conv3x3(L4)            L4 = lateral1x1(C4) + nearest_up(L5)
    P3 = conv3x3(L3)            L3 = lateral1x1(C3) + nearest_up(L4)
    P6 = conv3x3/2(P5)          ``add_extra_convs='on_output'``: from the P5 *output*, not C5
    P7 = conv3x3/2(P6)          ``relu_before_extra_convs=False``: no ReLU in between

No normalisation and no activation anywhere. Upsampling goes to the lower level's exact size
(``size=``, not ``scale_factor=2``), which matters when an input side is not a multiple of 32.
The attribute names ``lateral_convs`` / ``fpn_convs`` fix the state_dict keys; the reference
checkpoint has the same names with an extra ``.conv`` (its ConvModule wrapper).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """[C3 (B, c3, H/8, W/8), C4, C5] -> [P3 .. P7], each (B, out_channels, H/s, W/s), s = 8 .. 128.

    Args:
        in_channels: channels of the backbone features given to ``forward``, finest first.
        out_channels: channels of every pyramid level (256).
        num_outs: number of outputs; the ``num_outs - len(in_channels)`` extra levels are made by
            stride-2 3x3 convs, the first on the coarsest FPN output, each next one on the previous.
        extra_source: "output" (TOOD, ATSS, FCOS: P6 from P5) or "input" (FoveaBox: P6 from C5).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5,
                 extra_source: str = "output"):
        super().__init__()
        in_channels = list(in_channels)
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs={num_outs} is smaller than the number of inputs ({len(in_channels)}).")
        if extra_source not in ("output", "input"):
            raise ValueError(f"extra_source: expected 'output' or 'input', got {extra_source!r}")
        self.in_channels, self.out_channels, self.num_outs = in_channels, out_channels, num_outs
        self.extra_source = extra_source
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        output_convs = [nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels]
        first_in = in_channels[-1] if extra_source == "input" else out_channels
        extra_convs = [nn.Conv2d(first_in if i == 0 else out_channels, out_channels, 3, stride=2, padding=1)
                       for i in range(num_outs - len(in_channels))]
        # One list for both, as in the reference: indices 0..2 are P3..P5, 3 and 4 make P6 and P7.
        self.fpn_convs = nn.ModuleList(output_convs + extra_convs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (gain 1) and zero biases on every conv, as the reference."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """features [C3, C4, C5] -> [P3, P4, P5, P6, P7]."""
        if len(features) != len(self.lateral_convs):
            raise ValueError(f"FPN expects {len(self.lateral_convs)} feature maps, got {len(features)}.")
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        # Top-down: coarsest first, each level adds the (already merged) level above it.
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        for i, conv in enumerate(self.fpn_convs[len(laterals):]):
            outs.append(conv(features[-1] if i == 0 and self.extra_source == "input" else outs[-1]))
        return outs
