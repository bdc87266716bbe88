"""Training signal of TOOD: assign priors, build targets, sum the losses, normalise (spec §2).

Epochs ``< warmup_epochs`` (official ``initial_epoch=4``) use the ATSS warm-up:
ATSS assignment on the anchor boxes, focal loss with binary targets, centerness-weighted GIoU,
normalised by the positive count and Σcenterness. Afterwards, Task Alignment Learning:
the task-aligned assigner on the *predictions*, the quality-focal loss against t̂, t̂-weighted
GIoU, both normalised by Σt̂. Every target is a constant (computed without gradient).

For the assignment ablation (paper Table 2), ``tal.assigner`` replaces TAL after the warm-up by a
fixed scheme trained like the warm-up ("atss"; "max_iou", RetinaNet's IoU thresholds, whose ignore
band takes no classification loss; "fcos", FCOS's centre sampling; "fovea", FoveaBox's, for Table 1)
or by "atss_qfl": ATSS positives
with quality-focal targets, the IoU of the predicted box (GFL's rule), which also weight the GIoU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tood_lib.assign import Assignment, atss_assign, fcos_assign, fovea_assign, max_iou_assign, task_aligned_assign
from tood_lib.batch import Batch
from tood_lib.boxes import aligned_iou
from tood_lib.config import TALConfig
from tood_lib.losses import (centerness_target, focal_loss_with_probs, normalizer, quality_focal_loss,
                             weighted_giou_loss)
from tood_lib.model.head_output import HeadOutput
from tood_lib.model.priors import multilevel_priors, prior_points, valid_prior_mask


def gather_assigned(values: Tensor, gt_index: Tensor) -> Tensor:
    """values (B, G, D), gt_index (B, A) with -1 for background -> (B, A, D) (background rows hold row 0)."""
    index = gt_index.clamp(min=0).unsqueeze(-1).expand(-1, -1, values.shape[-1])
    return values.gather(1, index)


def scheme(cfg: TALConfig, epoch: int) -> str:
    """The assignment scheme of an epoch: "atss" during the warm-up, then ``cfg.assigner``."""
    return "atss" if epoch < cfg.warmup_epochs else cfg.assigner


def assign(out: HeadOutput, batch: Batch, cfg: TALConfig, method: str) -> Assignment:
    """Run one assignment scheme (see ``scheme``) for a batch; no gradient flows."""
    if method == "tal":
        sizes, strides = out.feature_sizes, out.strides
        priors = torch.cat(out.priors())
        valid = valid_prior_mask(sizes, strides, batch.pad_shapes.to(priors.device))
        with torch.no_grad():
            return task_aligned_assign(out.flat_scores().detach(), out.flat_boxes(pixels=True).detach(), priors,
                                       batch.gt_boxes, batch.gt_labels, batch.gt_mask, valid,
                                       alpha=cfg.alpha, beta=cfg.beta, topk=cfg.topk)
    return geometric_assign(out.feature_sizes, out.strides, batch, cfg, method, device=out.scores[0].device,
                            anchor_scale=out.anchor_scale)


def geometric_assign(sizes, strides, batch: Batch, cfg: TALConfig, method: str, device=None,
                     anchor_scale: float = 8.0) -> Assignment:
    """A scheme that needs no predictions ("atss", "atss_qfl", "max_iou", "fcos", "fovea") for a batch
    whose feature maps have ``sizes`` [(H_l, W_l)] at ``strides``, with anchors ``anchor_scale``
    strides wide (``model.anchor_scale``); no gradient flows."""
    device = batch.gt_boxes.device if device is None else device
    level_priors = multilevel_priors(sizes, strides, device=device, anchor_scale=anchor_scale)
    priors = torch.cat(level_priors)
    counts = [len(p) for p in level_priors]
    valid = valid_prior_mask(sizes, strides, batch.pad_shapes.to(device))
    gts = (batch.gt_boxes, batch.gt_labels, batch.gt_mask)
    with torch.no_grad():
        if method in ("atss", "atss_qfl"):
            return atss_assign(priors, counts, *gts, valid, topk=cfg.atss_topk)
        if method == "max_iou":
            pos_thr, neg_thr = cfg.max_iou_thresholds
            return max_iou_assign(priors, *gts, valid, pos_iou_thr=pos_thr, neg_iou_thr=neg_thr)
        if method == "fcos":
            r = cfg.fcos_regress_ranges
            return fcos_assign(priors, counts, strides, *gts, valid, radius=cfg.fcos_radius,
                               regress_ranges=list(zip(r[0::2], r[1::2])))
        if method == "fovea":
            r = cfg.fovea_scale_ranges
            return fovea_assign(priors, counts, *gts, valid, sigma=cfg.fovea_sigma, scale_ranges=list(zip(r[0::2], r[1::2])))
    raise ValueError(f"unknown assignment scheme {method!r}")


def compute_losses(out: HeadOutput, batch: Batch, cfg: TALConfig, epoch: int) -> tuple[dict[str, Tensor], Assignment | None]:
    """Losses of one batch -> ({'loss_cls', 'loss_bbox'[, 'loss_centerness'], 'normalizer_cls',
    'normalizer_bbox', 'num_pos'}, the Assignment). The sum of the ``loss_*`` entries is what to backprop.
    Non-finite head outputs give NaN losses and no Assignment (the trainer stops on them)."""
    method = scheme(cfg, epoch)
    fixed = method in ("atss", "max_iou", "fcos", "fovea")  # binary targets and the focal loss
    scores = out.flat_scores().float()  # (B, A, K)
    boxes = out.flat_boxes(pixels=False).float()  # (B, A, 4) stride units
    if not (torch.isfinite(scores).all() and torch.isfinite(boxes).all()):
        # a diverged network: there is nothing to assign; hand back NaN losses for the trainer to stop on
        nan = (scores.sum() + boxes.sum()) * float("nan")
        return dict(loss_cls=nan, loss_bbox=nan, normalizer_cls=torch.tensor(float("nan")),
                    normalizer_bbox=torch.tensor(float("nan")), num_pos=torch.tensor(0)), None
    a = assign(out, batch, cfg, method)
    strides = out.flat_strides()  # (A,)
    pos = a.positive
    assigned_gt = gather_assigned(batch.gt_boxes.to(boxes), a.gt_index)[pos]  # (N, 4) pixels
    pos_strides = strides.expand_as(pos)[pos].unsqueeze(1)
    if method == "atss_qfl":  # GFL's soft target: the IoU of the predicted box with its object
        a.target[pos] = aligned_iou(boxes[pos].detach() * pos_strides, assigned_gt).clamp(min=0).to(a.target)

    # classification: y = t̂ (TAL), the IoU (ATSS+QFL) or 1 (fixed schemes) in the assigned class, 0 elsewhere
    cls_targets = torch.zeros_like(scores)
    cls_targets[pos, a.labels[pos]] = a.target[pos].to(scores.dtype)
    if fixed:
        valid = valid_prior_mask(out.feature_sizes, out.strides, batch.pad_shapes.to(scores.device))
        if a.ignored is not None:  # RetinaNet's band between its thresholds: no classification loss
            valid = valid & ~a.ignored
        loss_cls = (focal_loss_with_probs(scores, cls_targets, cfg.focal_alpha, cfg.focal_gamma) * valid[..., None]).sum()
    else:
        # official TaskAlignedFocalLoss: every prior of the batch, no label weights
        loss_cls = quality_focal_loss(scores, cls_targets, cfg.cls_gamma).sum()

    # regression: GIoU in stride units on the positives
    if method in ("max_iou", "fovea"):  # RetinaNet: a point may lie outside its object; FoveaBox: no centerness
        box_weight = torch.ones(len(assigned_gt), device=boxes.device)
    elif fixed:  # ATSS and FCOS weight the box loss by the centerness of the anchor point
        priors = torch.cat(out.priors(boxes.device))
        points = prior_points(priors).expand(len(pos), -1, -1)[pos]
        box_weight = centerness_target(points, assigned_gt)
    else:
        box_weight = a.target[pos].float()
    loss_bbox = weighted_giou_loss(boxes[pos], assigned_gt / pos_strides, box_weight, cfg.bbox_weight)

    norm_cls = normalizer(a.target.sum(), cfg.normalizer_eps)  # Σt̂, or the positive count in warm-up
    norm_bbox = normalizer(box_weight.sum(), cfg.normalizer_eps)  # Σt̂ over positives (= norm_cls), or Σcenterness
    losses = dict(loss_cls=loss_cls / norm_cls, loss_bbox=loss_bbox / norm_bbox)

    centerness = out.flat_centerness()
    if centerness is not None:  # ATSS's centerness branch (parallel head): BCE on positives
        priors = torch.cat(out.priors(boxes.device))
        points = prior_points(priors).expand(len(pos), -1, -1)[pos]
        target = centerness_target(points, assigned_gt)
        loss_ctr = F.binary_cross_entropy_with_logits(centerness[pos].float(), target, reduction="sum")
        losses["loss_centerness"] = loss_ctr / normalizer(pos.sum().float().clamp(min=1.0), cfg.normalizer_eps)

    stats = dict(normalizer_cls=torch.tensor(norm_cls), normalizer_bbox=torch.tensor(norm_bbox),
                 num_pos=pos.sum().detach())
    return {**losses, **stats}, a
