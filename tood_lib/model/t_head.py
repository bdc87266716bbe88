"""The Task-aligned Head (T-Head), paper §3.1 and Fig. 3, spec §1.4.

One head is shared by all pyramid levels (only the ``Scale`` is per level). For a level's feature
map X (B, C, H, W) it computes

1. task-interactive features X^1..X^N, X^k = ReLU(GN(conv3x3(X^{k-1}))), N = 6;
2. task decomposition: per task, layer attention w = σ(conv(ReLU(conv(GAP(X^{1..N}))))) ∈ (0,1)^N
   and X^task = ReLU(GN(W_red ∗ concat_k(w_k·X^k)));
3. raw predictions Z_cls = conv(X^cls) (K logits) and Z_reg = conv(X^reg) (4 numbers);
4. the task-aligned predictor: the probability map M (Eq. 5/7) gives
   P_align = sqrt(σ(Z_cls)·σ(M)), and the offset map O (Eq. 6/8) resamples each box side at its
   own place, B_align[c](y, x) = B[c](y + O[2c], x + O[2c+1]) (bilinear).

Names of the submodules are MMDetection's (``inter_convs``, ``cls_decomp.layer_attention``,
``tood_cls``, ``cls_prob_module``, ...), so official checkpoints load with a simple rename.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tood_lib.boxes import delta_xywh_decode, distance_to_box
from tood_lib.model.dcn import ModulatedDeformConv2d, safe_deform_conv2d
from tood_lib.model.head_output import HeadOutput
from tood_lib.model.priors import level_priors, prior_points

PRIOR_PROB = 0.01
BIAS_PRIOR = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)  # ≈ -4.595: σ(bias) = 0.01


class Scale(nn.Module):
    """A learnable scalar, one per pyramid level, initialised to 1.0."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class ConvGN(nn.Module):
    """conv (no bias) → GroupNorm → ReLU; ``conv`` may be a DCNv2 (modulated deformable) conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gn_groups: int,
                 deformable: bool = False, deform_groups: int = 4, bias: bool = False):
        super().__init__()
        padding = kernel_size // 2
        if deformable:
            self.conv = ModulatedDeformConv2d(in_channels, out_channels, kernel_size, padding=padding,
                                              deform_groups=deform_groups, bias=bias)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.gn = nn.GroupNorm(gn_groups, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.gn(self.conv(x)))


class TaskDecomposition(nn.Module):
    """Layer attention + 1x1 reduction, Eq. (1)-(3). X_inter (B, N·C, H, W) -> X_task (B, C, H, W).

    The attention weights w (B, N) are folded into the reduction conv's weight (official trick):
    W'_b = W_red ⊙ w_b per layer block, then X_task = W'_b · X_inter as a batched matrix product.
    That equals scaling each layer's channels by w_k and convolving, at a fraction of the memory.
    """

    def __init__(self, feat_channels: int, stacked_convs: int, gn_groups: int, layer_attention: bool = True):
        super().__init__()
        self.feat_channels, self.stacked_convs = feat_channels, stacked_convs
        in_channels = feat_channels * stacked_convs
        hidden = in_channels // (stacked_convs * 8)  # 1536 // 48 = 32 (official la_down_rate = 8·N)
        # layer_attention=False (an ablation, not in the paper's code): w ≡ 1, a plain 1x1 reduction of the stack
        self.layer_attention = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, stacked_convs, 1), nn.Sigmoid()) if layer_attention else None
        self.reduction_conv = ConvGN(in_channels, feat_channels, 1, gn_groups)

    def reset_parameters(self) -> None:
        for m in self.layer_attention or ():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.reduction_conv.conv.weight, std=0.01)

    def attention(self, pooled: Tensor) -> Tensor:
        """pooled (B, N·C, 1, 1) -> layer-attention weights w (B, N) (all ones without layer attention)."""
        if self.layer_attention is None:
            return pooled.new_ones(pooled.shape[0], self.stacked_convs)
        return self.layer_attention(pooled).flatten(1)

    def forward(self, inter_feat: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """inter_feat (B, N·C, H, W), pooled (B, N·C, 1, 1) -> (X_task (B, C, H, W), w (B, N))."""
        b, _, h, w = inter_feat.shape
        weights = self.attention(pooled)
        conv_weight = self.reduction_conv.conv.weight.reshape(1, self.feat_channels, self.stacked_convs, self.feat_channels)
        conv_weight = (weights.reshape(b, 1, self.stacked_convs, 1) * conv_weight).reshape(b, self.feat_channels, -1)
        feat = torch.bmm(conv_weight, inter_feat.reshape(b, -1, h * w)).reshape(b, self.feat_channels, h, w)
        return F.relu(self.reduction_conv.gn(feat)), weights


class _SigmoidGeometricMean(torch.autograd.Function):
    """sqrt(σ(x)·σ(y)) with its gradient written out: d/dx = ½·z·(1-σ(x)).

    Autograd through ``.sqrt()`` would multiply an infinite 1/(2·sqrt(0)) by a zero when a sigmoid
    underflows; the closed form never does (MMDetection's ``sigmoid_geometric_mean``, spec §6.1).
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:
        x_sigmoid, y_sigmoid = x.sigmoid(), y.sigmoid()  # y may be (B, 1, H, W) and broadcast over classes
        z = (x_sigmoid * y_sigmoid).sqrt()
        ctx.save_for_backward(x_sigmoid, y_sigmoid, z)
        return z

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x_sigmoid, y_sigmoid, z = ctx.saved_tensors
        half_grad_z = grad_output * z / 2
        grad_x = half_grad_z * (1 - x_sigmoid)
        grad_y = half_grad_z.sum(dim=1, keepdim=True) if y_sigmoid.shape[1] == 1 else half_grad_z
        return grad_x, grad_y * (1 - y_sigmoid)


def sigmoid_geometric_mean(cls_logits: Tensor, prob_logits: Tensor) -> Tensor:
    """P_align = sqrt(σ(Z_cls)·σ(M)): (B, K, H, W) and (B, 1, H, W) -> (B, K, H, W)."""
    return _SigmoidGeometricMean.apply(cls_logits, prob_logits)


def align_boxes(boxes: Tensor, offsets: Tensor) -> Tensor:
    """Resample each box side at its own offset location, Eq. (6) (the offsets O themselves are Eq. (8)).

    boxes (B, 4, H, W), offsets (B, 8, H, W) with (dy, dx) pairs per side -> (B, 4, H, W).
    A deformable 1x1 conv with unit weight, 4 groups and 4 offset groups is exactly a per-channel
    bilinear sampler with zero padding (official implementation).
    """
    weight = boxes.new_ones(boxes.shape[1], 1, 1, 1)
    return safe_deform_conv2d(boxes, offsets, weight)


class TaskAlignedHead(nn.Module):
    """The T-Head. forward(features) -> HeadOutput with P_align (B, K, H, W) and B_align (B, 4, H, W) per level."""

    def __init__(self, num_classes: int = 80, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 6, strides=(8, 16, 32, 64, 128), anchor_type: str = "anchor_free",
                 num_dcn: int = 0, gn_groups: int = 32, degenerate_box_fallback: bool = True,
                 prob_map: bool = True, offsets: bool = True, layer_attention: bool = True,
                 anchor_scale: float = 8.0):
        """prob_map, offsets, layer_attention: switch off M, O or the layer attention, for ablations
        (without M the score is σ(Z_cls); without O, B_align = B; without attention, w ≡ 1).
        anchor_scale: anchor side in strides (the anchor-based variant decodes against these boxes)."""
        super().__init__()
        if in_channels != feat_channels:
            raise ValueError(f"T-Head: in_channels ({in_channels}) must equal feat_channels ({feat_channels})")
        self.num_classes, self.strides, self.anchor_type = num_classes, tuple(strides), anchor_type
        self.degenerate_box_fallback = degenerate_box_fallback
        self.anchor_scale = float(anchor_scale)
        inter_channels = feat_channels * stacked_convs
        self.inter_convs = nn.ModuleList(
            ConvGN(feat_channels, feat_channels, 3, gn_groups, deformable=i < num_dcn) for i in range(stacked_convs))
        self.cls_decomp = TaskDecomposition(feat_channels, stacked_convs, gn_groups, layer_attention)
        self.reg_decomp = TaskDecomposition(feat_channels, stacked_convs, gn_groups, layer_attention)
        self.tood_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.tood_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.cls_prob_module = nn.Sequential(
            nn.Conv2d(inter_channels, feat_channels // 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels // 4, 1, 3, padding=1)) if prob_map else None
        self.reg_offset_module = nn.Sequential(
            nn.Conv2d(inter_channels, feat_channels // 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels // 4, 4 * 2, 3, padding=1)) if offsets else None
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation (spec §1.4.7); biases 0 unless stated."""
        for m in self.inter_convs:
            nn.init.normal_(m.conv.weight, std=0.01)
        for m in self.cls_prob_module or ():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        if self.cls_prob_module is not None:
            nn.init.constant_(self.cls_prob_module[-1].bias, BIAS_PRIOR)
        for m in self.reg_offset_module or ():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)
        self.cls_decomp.reset_parameters()
        self.reg_decomp.reset_parameters()
        nn.init.normal_(self.tood_cls.weight, std=0.01)
        nn.init.constant_(self.tood_cls.bias, BIAS_PRIOR)
        nn.init.normal_(self.tood_reg.weight, std=0.01)
        nn.init.zeros_(self.tood_reg.bias)

    def decode(self, reg: Tensor, level: int) -> Tensor:
        """Raw regression (B, 4, H, W) -> boxes (B, 4, H, W) before alignment, in stride units."""
        b, _, h, w = reg.shape
        stride = self.strides[level]
        priors = level_priors(h, w, stride, device=reg.device, anchor_scale=self.anchor_scale)  # (H·W, 4) pixels
        reg = reg.float().permute(0, 2, 3, 1).reshape(b, h * w, 4)
        if self.anchor_type == "anchor_free":
            # d = Scale_l(exp(Z_reg)) in stride units around the grid point (x, y)
            boxes = distance_to_box(prior_points(priors) / stride, self.scales[level](reg.exp()))
        else:
            boxes = delta_xywh_decode(priors, self.scales[level](reg)) / stride
        return boxes.reshape(b, h, w, 4).permute(0, 3, 1, 2).contiguous()

    def forward_level(self, x: Tensor, level: int, return_internals: bool = False):
        """x (B, C, H, W) -> (scores (B, K, H, W), boxes (B, 4, H, W) in stride units, internals dict or None)."""
        inter_feats = []
        for conv in self.inter_convs:
            x = conv(x)
            inter_feats.append(x)
        inter_feat = torch.cat(inter_feats, dim=1)
        pooled = F.adaptive_avg_pool2d(inter_feat, 1)  # computed once, shared by both tasks
        cls_feat, cls_attention = self.cls_decomp(inter_feat, pooled)
        reg_feat, reg_attention = self.reg_decomp(inter_feat, pooled)

        cls_logits = self.tood_cls(cls_feat)
        prob_logits = self.cls_prob_module(inter_feat) if self.cls_prob_module is not None else None
        reg_raw = self.tood_reg(reg_feat)
        offsets = self.reg_offset_module(inter_feat) if self.reg_offset_module is not None else None

        # The alignment math runs in fp32 even under autocast: sqrt of two sigmoids, exp of the
        # distances and the bilinear resampling all lose too much in 16 bits (spec §6.1).
        with torch.autocast(device_type=x.device.type, enabled=False):
            if prob_logits is not None:
                scores = sigmoid_geometric_mean(cls_logits.float(), prob_logits.float())
            else:
                scores = cls_logits.float().sigmoid()
            boxes = aligned = self.decode(reg_raw, level)
            if offsets is not None:
                aligned = align_boxes(boxes, offsets.float())
                if self.degenerate_box_fallback:
                    degenerate = (aligned[:, 0:1] > aligned[:, 2:3]) | (aligned[:, 1:2] > aligned[:, 3:4])
                    aligned = torch.where(degenerate.expand_as(aligned), boxes, aligned)

        internals = None
        if return_internals:  # prob_logits, prob_map and offsets are None where the ablation removed them
            internals = dict(inter_feats=inter_feats, cls_attention=cls_attention, reg_attention=reg_attention,
                             cls_feat=cls_feat, reg_feat=reg_feat, cls_logits=cls_logits, prob_logits=prob_logits,
                             prob_map=prob_logits.float().sigmoid() if prob_logits is not None else None,
                             offsets=offsets, boxes_before=boxes, boxes_after=aligned)
        return scores, aligned, internals

    def forward(self, features: list[Tensor], return_internals: bool = False) -> HeadOutput:
        """features: P3..P7, each (B, C, H_l, W_l) -> HeadOutput (per level lists)."""
        if len(features) != len(self.strides):
            raise ValueError(f"T-Head: expected {len(self.strides)} feature maps (strides {self.strides}), got {len(features)}")
        outs = [self.forward_level(x, level, return_internals) for level, x in enumerate(features)]
        return HeadOutput(scores=[o[0] for o in outs], boxes=[o[1] for o in outs], strides=self.strides,
                          anchor_scale=self.anchor_scale, internals=[o[2] for o in outs] if return_internals else None)
