"""Straightforward reference versions of both assigners: one image at a time, as the official code does.

These transcribe, step by step, the code TOOD was trained with (fcjian/TOOD, an MMDetection 2.14
fork): ``TaskAlignedAssigner.assign`` followed by the per-gt t̂ loop of ``TOODHead.get_targets``, and
``ATSSAssigner.assign``. They exist to check the batched versions in ``tal.py`` / ``atss.py``
against, to benchmark them, and to read: the comments quote what each step does in the original.

Like the original head, each image first drops its invalid priors (``flat_anchors[inside_flags]``),
assigns the remaining ones, then maps the result back to all A priors ("unmap"). Padded gt rows
are dropped the same way and indices mapped back to the padded numbering.

Deliberate differences from the original, none of which changes a result it defines:
- the top-m in TAL is ``min(topk, valid priors)`` (mmdet 3.x) instead of failing when fewer;
- ATSS takes the k nearest with a stable sort, so equidistant priors at the k-th place go to the
  lowest index; the original's ``topk`` leaves that order unspecified on CPU (CUDA's kernel picks
  the lowest indices too). TAL keeps ``topk``: ties at a positive t are measure-zero in practice.
- ATSS's threshold mean + std is computed around the largest candidate IoU (the same number in exact
  arithmetic). When all of a gt's candidates have the same IoU (a small gt inside anchors of one
  size), the original's ``mean(0)`` often rounds a hair above that IoU, and whether they pass then
  depends on summation order (layout, CPU vs CUDA); here they always pass, as exact arithmetic says.
- background rows get iou 0 rather than the original's -1e8 ("max_overlaps" of unassigned priors).
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor

from tood_lib.assign.assignment import Assignment
from tood_lib.boxes import box_iou

INF = 100000000  # the original's "-INF" marker for pairs that are not positive


def _anchor_centers(anchors: Tensor) -> tuple[Tensor, Tensor]:
    return (anchors[:, 0] + anchors[:, 2]) / 2.0, (anchors[:, 1] + anchors[:, 3]) / 2.0


def _inside_and_resolve(candidate_idxs: Tensor, is_pos: Tensor, anchors: Tensor, gt_bboxes: Tensor,
                        overlaps: Tensor, eps_inside: float):
    """The part both originals share: keep candidates whose anchor centre is inside the gt, then
    resolve anchors claimed by several gts by the highest IoU. Returns (is_pos, max_overlaps, argmax)."""
    num_bboxes, num_gt = overlaps.shape
    anchors_cx, anchors_cy = _anchor_centers(anchors)
    # "limit the positive sample's center in gt": index a (G·A,) copy of the centres with flat ids.
    candidate_idxs = candidate_idxs.clone()
    for gt_idx in range(num_gt):
        candidate_idxs[:, gt_idx] += gt_idx * num_bboxes
    ep_anchors_cx = anchors_cx.view(1, -1).expand(num_gt, num_bboxes).contiguous().view(-1)
    ep_anchors_cy = anchors_cy.view(1, -1).expand(num_gt, num_bboxes).contiguous().view(-1)
    candidate_idxs = candidate_idxs.view(-1)
    l_ = ep_anchors_cx[candidate_idxs].view(-1, num_gt) - gt_bboxes[:, 0]
    t_ = ep_anchors_cy[candidate_idxs].view(-1, num_gt) - gt_bboxes[:, 1]
    r_ = gt_bboxes[:, 2] - ep_anchors_cx[candidate_idxs].view(-1, num_gt)
    b_ = gt_bboxes[:, 3] - ep_anchors_cy[candidate_idxs].view(-1, num_gt)
    is_in_gts = torch.stack([l_, t_, r_, b_], dim=1).min(dim=1)[0] > eps_inside
    is_pos = is_pos & is_in_gts

    # "if an anchor box is assigned to multiple gts, the one with the highest iou will be selected."
    overlaps_inf = torch.full_like(overlaps, -INF).t().contiguous().view(-1)
    index = candidate_idxs.view(-1)[is_pos.view(-1)]
    overlaps_inf[index] = overlaps.t().contiguous().view(-1)[index]
    overlaps_inf = overlaps_inf.view(num_gt, -1).t()
    max_overlaps, argmax_overlaps = overlaps_inf.max(dim=1)
    return is_pos, max_overlaps, argmax_overlaps


def tal_assign_single(scores: Tensor, decode_bboxes: Tensor, anchors: Tensor, gt_bboxes: Tensor,
                      gt_labels: Tensor, alpha: float, beta: float, topk: int, eps_inside: float):
    """``TaskAlignedAssigner.assign`` for one image's valid priors.

    scores (n, K), decode_bboxes (n, 4), anchors (n, 4), gt_bboxes (g, 4), gt_labels (g,).
    Returns assigned_gt_inds (n,) 1-based (0 = background), max_overlaps (n,), assign_metrics (n,),
    candidate_idxs (m, g) and candidate is_pos (m, g) before conflict resolution.
    """
    num_gt, num_bboxes = gt_bboxes.size(0), anchors.size(0)
    # "compute alignment metric between all bbox (bbox of all pyramid levels) and gt"
    overlaps = box_iou(decode_bboxes, gt_bboxes).detach()                    # (n, g)
    bbox_scores = scores[:, gt_labels].detach()                              # (n, g)
    alignment_metrics = bbox_scores ** alpha * overlaps ** beta
    assigned_gt_inds = alignment_metrics.new_full((num_bboxes,), 0, dtype=torch.long)
    assign_metrics = alignment_metrics.new_zeros((num_bboxes,))
    if num_gt == 0 or num_bboxes == 0:
        empty = torch.zeros((0, num_gt), dtype=torch.long)
        return assigned_gt_inds, overlaps.new_zeros((num_bboxes,)), assign_metrics, empty, empty.bool()

    # "select top-k bbox as candidates for each gt"
    topk = min(topk, num_bboxes)
    _, candidate_idxs = alignment_metrics.topk(topk, dim=0, largest=True)  # (m, g)
    candidate_metrics = alignment_metrics[candidate_idxs, torch.arange(num_gt)]
    is_pos = candidate_metrics > 0

    is_pos, max_overlaps, argmax_overlaps = _inside_and_resolve(candidate_idxs, is_pos, anchors, gt_bboxes,
                                                                overlaps, eps_inside)
    assigned = max_overlaps != -INF
    assigned_gt_inds[assigned] = argmax_overlaps[assigned] + 1
    assign_metrics[assigned] = alignment_metrics[assigned, argmax_overlaps[assigned]]
    max_overlaps = max_overlaps.where(assigned, 0.0)
    return assigned_gt_inds, max_overlaps, assign_metrics, candidate_idxs, is_pos


def tal_targets_single(assigned_gt_inds: Tensor, assign_metrics: Tensor, assign_ious: Tensor) -> Tensor:
    """The t̂ loop of ``TOODHead.get_targets`` for one image: (n,) each -> t̂ (n,)."""
    norm_alignment_metrics = assign_metrics.new_zeros(assign_metrics.shape[0])
    pos_inds = torch.nonzero(assigned_gt_inds > 0).squeeze(1)
    pos_assigned_gt_inds = assigned_gt_inds[pos_inds] - 1
    for gt_inds in torch.unique(pos_assigned_gt_inds):
        gt_class_inds = pos_inds[pos_assigned_gt_inds == gt_inds]
        pos_alignment_metrics = assign_metrics[gt_class_inds]
        pos_ious = assign_ious[gt_class_inds]
        pos_norm_alignment_metrics = pos_alignment_metrics / (pos_alignment_metrics.max() + 10e-8) * pos_ious.max()
        norm_alignment_metrics[gt_class_inds] = pos_norm_alignment_metrics
    return norm_alignment_metrics


def _atss_nearest(distances: Tensor, k: int) -> Tensor:
    """Indices of the k smallest distances along dim 0, equal distances in index order: (n, g) -> (k, g)."""
    return distances.sort(dim=0, stable=True).indices[:k]


def atss_assign_single(anchors: Tensor, num_level_bboxes: Sequence[int], gt_bboxes: Tensor, topk: int,
                       eps_inside: float):
    """MMDetection 2.x ``ATSSAssigner.assign`` for one image's valid priors.

    anchors (n, 4), num_level_bboxes per-level counts (sum n), gt_bboxes (g, 4).
    Returns assigned_gt_inds (n,) 1-based, max_overlaps (n,), candidate_idxs (Σk_l, g), is_pos (Σk_l, g).
    """
    num_gt, num_bboxes = gt_bboxes.size(0), anchors.size(0)
    # "compute iou between all bbox and gt"
    overlaps = box_iou(anchors, gt_bboxes)                                   # (n, g)
    assigned_gt_inds = overlaps.new_full((num_bboxes,), 0, dtype=torch.long)
    if num_gt == 0 or num_bboxes == 0:
        empty = torch.zeros((0, num_gt), dtype=torch.long)
        return assigned_gt_inds, overlaps.new_zeros((num_bboxes,)), empty, empty.bool()

    # "compute center distance between all bbox and gt"
    gt_cx = (gt_bboxes[:, 0] + gt_bboxes[:, 2]) / 2.0
    gt_cy = (gt_bboxes[:, 1] + gt_bboxes[:, 3]) / 2.0
    gt_points = torch.stack((gt_cx, gt_cy), dim=1)
    bboxes_cx, bboxes_cy = _anchor_centers(anchors)
    bboxes_points = torch.stack((bboxes_cx, bboxes_cy), dim=1)
    distances = (bboxes_points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()

    # "on each pyramid level, for each gt, select k bbox whose center are closest to the gt center"
    candidate_idxs = []
    start_idx = 0
    for bboxes_per_level in num_level_bboxes:
        end_idx = start_idx + bboxes_per_level
        selectable_k = min(topk, bboxes_per_level)
        topk_idxs_per_level = _atss_nearest(distances[start_idx:end_idx, :], selectable_k)
        candidate_idxs.append(topk_idxs_per_level + start_idx)
        start_idx = end_idx
    candidate_idxs = torch.cat(candidate_idxs, dim=0)                        # (Σk_l, g)

    # "compute the mean and std, set mean + std as the iou threshold". The original writes
    # candidate_overlaps.mean(0) + candidate_overlaps.std(0); the same, taken around the largest
    # candidate IoU so that equal IoUs give exactly that IoU (see the module docstring).
    candidate_overlaps = overlaps[candidate_idxs, torch.arange(num_gt)]
    shift = candidate_overlaps.max(0).values
    deviations = candidate_overlaps - shift
    with warnings.catch_warnings():  # std of a single candidate is NaN (no positive), as in the original
        warnings.simplefilter("ignore", UserWarning)
        overlaps_thr_per_gt = shift + deviations.mean(0) + deviations.std(0)
    is_pos = candidate_overlaps >= overlaps_thr_per_gt[None, :]

    is_pos, max_overlaps, argmax_overlaps = _inside_and_resolve(candidate_idxs, is_pos, anchors, gt_bboxes,
                                                                overlaps, eps_inside)
    assigned = max_overlaps != -INF
    assigned_gt_inds[assigned] = argmax_overlaps[assigned] + 1
    max_overlaps = max_overlaps.where(assigned, 0.0)
    return assigned_gt_inds, max_overlaps, candidate_idxs, is_pos


def _unmap_image(out: Assignment, b: int, keep: Tensor, real_gts: Tensor, gt_labels: Tensor,
                 assigned_gt_inds: Tensor, max_overlaps: Tensor, metrics: Tensor, targets: Tensor,
                 candidate_idxs: Tensor, is_pos: Tensor, slots: Optional[Sequence[tuple[int, int, int]]] = None):
    """Write one image's result (over its valid priors and real gts) into the batch Assignment.

    keep (n,) valid prior ids, real_gts (g,) padded gt ids. ``slots`` (ATSS) lists per level the
    (first slot in the batch layout, first row in candidate_idxs, count) to place candidates level by level.
    """
    pos = assigned_gt_inds > 0
    priors_pos = keep[pos]
    local_gt = assigned_gt_inds[pos] - 1
    out.gt_index[b, priors_pos] = real_gts[local_gt]
    out.labels[b, priors_pos] = gt_labels[local_gt]
    out.positive[b, priors_pos] = True
    out.metric[b, priors_pos] = metrics[pos]
    out.iou[b, priors_pos] = max_overlaps[pos]
    out.target[b, priors_pos] = targets[pos]
    cand = keep[candidate_idxs].t()                                           # (g, rows), prior ids
    if slots is None:
        slots = [(0, 0, cand.shape[1])]
    for dst, src, count in slots:
        out.candidates[b, real_gts, dst:dst + count] = cand[:, src:src + count]
        out.candidate_positive[b, real_gts, dst:dst + count] = is_pos.t()[:, src:src + count]


def _blank(B: int, A: int, G: int, k: int) -> Assignment:
    return Assignment(
        gt_index=torch.full((B, A), -1, dtype=torch.long), labels=torch.full((B, A), -1, dtype=torch.long),
        positive=torch.zeros((B, A), dtype=torch.bool), metric=torch.zeros((B, A)), iou=torch.zeros((B, A)),
        target=torch.zeros((B, A)), candidates=torch.full((B, G, k), -1, dtype=torch.long),
        candidate_positive=torch.zeros((B, G, k), dtype=torch.bool))


@torch.no_grad()
def task_aligned_assign_reference(scores: Tensor, pred_boxes: Tensor, priors: Tensor, gt_boxes: Tensor,
                                  gt_labels: Tensor, gt_mask: Tensor, prior_valid: Optional[Tensor] = None,
                                  alpha: float = 1.0, beta: float = 6.0, topk: int = 13,
                                  eps_inside: float = 0.01) -> Assignment:
    """Per-image loop over :func:`tal_assign_single` + :func:`tal_targets_single`; same arguments and
    result layout as :func:`tood_lib.assign.tal.task_aligned_assign` (CPU, no input checks)."""
    B, A, _ = scores.shape
    G = gt_boxes.shape[1]
    out = _blank(B, A, G, min(topk, A))
    for b in range(B):
        keep = torch.arange(A) if prior_valid is None else prior_valid[b].nonzero().squeeze(1)
        real_gts = gt_mask[b].nonzero().squeeze(1)
        if len(real_gts) == 0 or len(keep) == 0:
            continue                                                          # everything background
        labels = gt_labels[b, real_gts].long()
        assigned_gt_inds, max_overlaps, metrics, candidate_idxs, is_pos = tal_assign_single(
            scores[b, keep].float(), pred_boxes[b, keep].float(), priors[keep].float(),
            gt_boxes[b, real_gts].float(), labels, alpha, beta, topk, eps_inside)
        targets = tal_targets_single(assigned_gt_inds, metrics, max_overlaps)
        _unmap_image(out, b, keep, real_gts, labels, assigned_gt_inds, max_overlaps, metrics, targets,
                     candidate_idxs, is_pos)
    return out


@torch.no_grad()
def atss_assign_reference(priors: Tensor, num_level_priors: Sequence[int], gt_boxes: Tensor, gt_labels: Tensor,
                          gt_mask: Tensor, prior_valid: Optional[Tensor] = None, topk: int = 9,
                          eps_inside: float = 0.01) -> Assignment:
    """Per-image loop over :func:`atss_assign_single`; same arguments and result layout as
    :func:`tood_lib.assign.atss.atss_assign` (CPU, no input checks)."""
    B, G = gt_boxes.shape[:2]
    A = priors.shape[0]
    k_per_level = [min(topk, n) for n in num_level_priors]
    out = _blank(B, A, G, sum(k_per_level))
    level_of = torch.repeat_interleave(torch.arange(len(num_level_priors)), torch.tensor(list(num_level_priors)))
    for b in range(B):
        valid = torch.ones(A, dtype=torch.bool) if prior_valid is None else prior_valid[b]
        keep = valid.nonzero().squeeze(1)
        real_gts = gt_mask[b].nonzero().squeeze(1)
        if len(real_gts) == 0 or len(keep) == 0:
            continue
        # "num_level_anchors_inside": the per-level counts after dropping invalid priors.
        num_level_inside = [int(valid[level_of == lvl].sum()) for lvl in range(len(num_level_priors))]
        labels = gt_labels[b, real_gts].long()
        assigned_gt_inds, max_overlaps, candidate_idxs, is_pos = atss_assign_single(
            priors[keep].float(), num_level_inside, gt_boxes[b, real_gts].float(), topk, eps_inside)
        targets = (assigned_gt_inds > 0).float()
        # Level l's candidates go to slots [Σ_{l'<l} k_l', +min(k, valid on l)), the batched layout.
        slots, dst, src = [], 0, 0
        for k_full, n_inside in zip(k_per_level, num_level_inside):
            count = min(topk, n_inside)
            slots.append((dst, src, count))
            dst, src = dst + k_full, src + count
        _unmap_image(out, b, keep, real_gts, labels, assigned_gt_inds, max_overlaps, max_overlaps, targets,
                     candidate_idxs, is_pos, slots)
    return out
