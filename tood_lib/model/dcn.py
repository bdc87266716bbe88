"""DCNv2: a modulated deformable convolution with its own offset/mask predictor.

The layout mirrors mmcv's ``ModulatedDeformConv2dPack`` so that official checkpoints load
unchanged: the module owns ``weight`` (and ``bias`` when asked for) and a plain ``conv_offset``
conv that predicts, per deformable group and kernel tap, a (dy, dx) offset pair and a mask logit.
mmcv splits that output in three equal chunks ``o1, o2, m`` and uses ``cat(o1, o2)`` as offsets
and ``sigmoid(m)`` as the mask; we do the same, then call ``torchvision.ops.deform_conv2d``,
which takes offsets in the same (dy, dx)-per-tap layout.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d


def safe_deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                       stride: int = 1, padding: int = 0, dilation: int = 1, mask: Tensor | None = None) -> Tensor:
    """``torchvision.ops.deform_conv2d`` that survives non-finite offsets.

    The CPU kernel turns a sampling position into memory indices; a NaN position makes that index
    undefined and the process can crash (a segfault, not an exception) once a run diverges. Non-finite
    offsets are replaced by 0 for the kernel and the output at those locations is set to NaN, so a
    diverging run still shows NaN where it should and the trainer can stop it with a clear message.
    offset (B, 2·G·kh·kw, H', W') -> output (B, C_out, H', W').
    """
    bad = ~torch.isfinite(offset)
    if not bad.any():
        return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    out = deform_conv2d(input, offset.masked_fill(bad, 0.0), weight, bias, stride=stride, padding=padding,
                        dilation=dilation, mask=mask)
    return out.masked_fill(bad.any(dim=1, keepdim=True), float("nan"))


class ModulatedDeformConv2d(nn.Module):
    """x (B, C_in, H, W) -> (B, C_out, H', W'). ``conv_offset`` starts at zero, so at
    initialisation every tap samples its regular grid position with mask sigmoid(0) = 0.5."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, groups: int = 1, deform_groups: int = 1,
                 bias: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * 3 * kernel_size * kernel_size,
                                     kernel_size, stride=stride, padding=padding, dilation=dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # mmcv: uniform(-1/sqrt(n), 1/sqrt(n)) for the main weight, zeros for the offset conv.
        n = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        nn.init.uniform_(self.weight, -1 / math.sqrt(n), 1 / math.sqrt(n))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        o1, o2, mask = self.conv_offset(x).chunk(3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        # deform_conv2d has no low-precision CPU kernel; run it in the input's dtype only on CUDA.
        dtype = x.dtype if x.is_cuda else torch.float32
        out = safe_deform_conv2d(x.to(dtype), offset.to(dtype), self.weight.to(dtype),
                            None if self.bias is None else self.bias.to(dtype),
                            stride=self.stride, padding=self.padding, dilation=self.dilation,
                            mask=mask.sigmoid().to(dtype))
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, deform_groups={self.deform_groups}")
