"""TOOD = backbone → FPN → head, with ``loss`` for training and ``predict`` for inference; ``build_model``
makes one from a preset or Config."""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from tood_lib.batch import Batch
from tood_lib.config import Config, get_preset, validate
from tood_lib.criterion import compute_losses
from tood_lib.model.backbone import ResNetBackbone
from tood_lib.model.fpn import FPN
from tood_lib.model.head_output import HeadOutput
from tood_lib.model.parallel_head import ParallelHead
from tood_lib.model.t_head import TaskAlignedHead
from tood_lib.postprocess import postprocess


class TOOD(nn.Module):
    """The detector. ``epoch`` (pushed in by the trainer before every epoch) selects the ATSS
    warm-up or Task Alignment Learning in :meth:`loss`."""

    def __init__(self, cfg: Config, load_backbone_weights: bool = False):
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        self.backbone = ResNetBackbone(
            depth=m.depth, groups=m.groups, width_per_group=m.width_per_group, frozen_stages=m.frozen_stages,
            norm_eval=m.norm_eval, dcn_stages=m.dcn_stages,
            pretrained=_backbone_weights(m.backbone_weights, m.depth) if load_backbone_weights else False,
            style=m.backbone_style, norm_trainable=m.backbone_norm_trainable)
        self.neck = FPN(self.backbone.out_channels, m.fpn_channels, num_outs=len(m.strides), extra_source=m.fpn_extra_source)
        if m.head == "t_head":
            self.head = TaskAlignedHead(m.num_classes, m.fpn_channels, m.feat_channels, m.stacked_convs, m.strides,
                                        m.anchor_type, m.num_dcn_head, m.gn_groups, m.degenerate_box_fallback,
                                        m.head_prob_map, m.head_offsets, m.head_layer_attention, m.anchor_scale)
        else:
            self.head = ParallelHead(m.num_classes, m.fpn_channels, m.feat_channels, 4, m.strides, m.anchor_type,
                                     m.gn_groups, m.centerness, m.head_conv_bias, m.anchor_scale)
        self.epoch = 0
        # The categories of the data set the weights were trained on, in label order, as COCO dicts
        # {"id", "name"}; set by the trainer, saved in checkpoints, None when unknown (official files).
        # Evaluation refuses a data set whose categories differ (see engine/inference.py).
        self.categories: list[dict] | None = None

    def forward(self, images: Tensor, return_internals: bool = False,
                backbone_features: list[Tensor] | None = None) -> HeadOutput:
        """images (B, 3, H, W), H and W multiples of 32 -> HeadOutput (per-level scores and boxes).

        ``backbone_features``: C3..C5 of these images computed beforehand by this (frozen) backbone;
        the backbone is then skipped (engine/feature_cache.py)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"TOOD: expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if backbone_features is None:
            # Items of a data set with cached features carry placeholder images filled with inf
            # (data/coco.py); no normalised image holds an inf. (Checked on the CPU only, where it costs
            # nothing; on a GPU it would force a sync.)
            if images.device.type == "cpu" and torch.isinf(images).any():
                raise ValueError("TOOD: the images hold inf: placeholders of a data set whose backbone features are "
                                 "cached; pass backbone_features=batch.features (or read the images)")
            backbone_features = self.backbone(images)
        features = self.neck(backbone_features)
        return self.head(features, return_internals=return_internals)

    def loss(self, batch: Batch, epoch: int | None = None, return_assignment: bool = False):
        """Losses of a batch (dict; backprop the sum of the ``loss_*`` entries, see :func:`total_loss`)."""
        out = self(batch.images, backbone_features=batch.features)
        losses, assignment = compute_losses(out, batch, self.cfg.tal, self.epoch if epoch is None else epoch)
        return (losses, assignment) if return_assignment else losses

    @torch.no_grad()
    def predict(self, batch: Batch, **overrides) -> list[dict[str, Tensor]]:
        """Detections per image: dicts of ``boxes`` (N, 4) in original-image pixels, ``scores``, ``labels``.

        Keyword overrides replace the test config (nms_pre, score_thr, iou_thr, max_per_img).
        """
        out = self(batch.images, backbone_features=batch.features)
        test = {**self.cfg.test.__dict__, **overrides}
        return postprocess(out, batch.image_sizes, batch.original_sizes, **test)


def _backbone_weights(setting: str | None, depth: int) -> bool | str:
    """'imagenet' -> torchvision's ImageNet weights (True); 'builtin_shapes' -> our ResNet pretrained on
    the built-in shapes (made on first use, engine/pretrain.py); a path -> that file; None -> random init."""
    if setting is None:
        return False
    if setting == "builtin_shapes":
        from tood_lib.engine.pretrain import shapes_backbone

        return str(shapes_backbone(depth))
    return True if setting == "imagenet" else setting


def total_loss(losses: dict[str, Tensor]) -> Tensor:
    """Sum of the entries whose name starts with ``loss``."""
    return sum(v for k, v in losses.items() if k.startswith("loss"))


def build_model(cfg_or_name: Config | str, load_backbone_weights: bool = False):
    """Build the detector of a preset (name) or Config.

    ``load_backbone_weights=True`` loads the recipe's ImageNet weights (``model.backbone_weights``)
    through torchvision, with a clear message when they cannot be had offline. It is off by
    default so that building a model never touches the network.
    """
    cfg = get_preset(cfg_or_name) if isinstance(cfg_or_name, str) else validate(copy.deepcopy(cfg_or_name))
    return TOOD(cfg, load_backbone_weights=load_backbone_weights)
