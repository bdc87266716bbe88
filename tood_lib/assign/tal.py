"""Task-aligned assignment (TAL, spec §2.1-2.3), for a whole padded batch at once.

For every ground-truth box g of an image and every prior a, the alignment metric is

    t = s^α · u^β,   s = predicted probability of g's class at a,   u = IoU(predicted box at a, g).

Per gt, the top-m priors by t (m = 13, all pyramid levels together) are its candidates; a candidate
is positive when t > 0 and its anchor point lies strictly inside g (by more than 0.01 px). A prior
claimed by several gts goes to the one its predicted box overlaps most. Each positive's soft target
is t rescaled per instance so that the instance's best t maps to its best IoU:

    t̂ = t / (max t + 1e-7) · max u      (max over the positives assigned to that instance).

This reproduces the official implementation (fcjian/TOOD ``TaskAlignedAssigner.assign`` plus the
t̂ loop in ``TOODHead.get_targets``; ``reference.py`` transcribes them) without its per-image and
per-gt Python loops. Only the metric touches every (gt, prior) pair; everything after the top-m
works on the (B, G, m) candidates alone.

The dense part runs over slices of a few hundred priors at a time, for every (image, gt) row at
once, in a few work buffers that every slice reuses: freshly allocated multi-megabyte temporaries
cost more in page faults than the arithmetic itself. It keeps only the maximum t of each run of 16
priors, and the top-m is found from those (``_top_candidates``). Peak memory is bounded by the
buffer size, not by B·G·A. benchmarks/README.md has the numbers.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from tood_lib.assign.assignment import Assignment
from tood_lib.boxes import box_iou
from tood_lib.model.priors import prior_points

# Size of the dense part's work buffers, in elements: (B, G, n) and (B, K, n) slices of n priors.
# Large enough that per-op overhead is small, small enough to stay mostly in cache (tuned with
# benchmarks/bench_assigner.py).
DENSE_CHUNK_ELEMENTS = 1 << 20
# The dense part keeps one maximum per GROUP consecutive priors (see _top_candidates).
GROUP = 16

# The reference's epsilon in t̂; it writes it as ``10e-8``.
TARGET_EPS = 1e-7


# --------------------------------------------------------------------------------------------------
# Input checks shared with ATSS


def check_gt_inputs(gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, num_classes: Optional[int] = None) -> None:
    """Raise a ValueError unless gt_boxes (B, G, 4), gt_labels (B, G) integer, gt_mask (B, G) bool agree
    and every real (masked-in) box is finite with x2 >= x1 and y2 >= y1. Padding rows are not inspected."""
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes: expected shape (B, G, 4), got {tuple(gt_boxes.shape)}")
    B, G = gt_boxes.shape[:2]
    if tuple(gt_labels.shape) != (B, G):
        raise ValueError(f"gt_labels: expected shape (B, G) = {(B, G)} to match gt_boxes, got {tuple(gt_labels.shape)}")
    if gt_labels.dtype.is_floating_point or gt_labels.dtype == torch.bool:
        raise ValueError(f"gt_labels: expected an integer tensor of class indices, got dtype {gt_labels.dtype}")
    if tuple(gt_mask.shape) != (B, G):
        raise ValueError(f"gt_mask: expected shape (B, G) = {(B, G)} to match gt_boxes, got {tuple(gt_mask.shape)}")
    if gt_mask.dtype != torch.bool:
        raise ValueError(f"gt_mask: expected a bool tensor (False = padding), got dtype {gt_mask.dtype}")
    if G == 0:
        return
    not_finite = gt_mask & ~torch.isfinite(gt_boxes).all(dim=-1)
    if not_finite.any():
        b, g = not_finite.nonzero()[0].tolist()
        raise ValueError(f"gt_boxes: expected finite coordinates for real boxes, got {gt_boxes[b, g].tolist()} "
                         f"at (image {b}, box {g})")
    inverted = gt_mask & ((gt_boxes[..., 2] < gt_boxes[..., 0]) | (gt_boxes[..., 3] < gt_boxes[..., 1]))
    if inverted.any():
        b, g = inverted.nonzero()[0].tolist()
        raise ValueError(f"gt_boxes: expected x2 >= x1 and y2 >= y1 (x1, y1, x2, y2 order), got "
                         f"{gt_boxes[b, g].tolist()} at (image {b}, box {g})")
    if num_classes is not None:
        bad = gt_mask & ((gt_labels < 0) | (gt_labels >= num_classes))
        if bad.any():
            b, g = bad.nonzero()[0].tolist()
            raise ValueError(f"gt_labels: expected class indices in [0, {num_classes}), got {int(gt_labels[b, g])} "
                             f"at (image {b}, box {g})")


def check_priors(priors: Tensor, prior_valid: Optional[Tensor], batch_size: int) -> None:
    """Raise a ValueError unless priors is (A, 4) finite and prior_valid is None or (B, A) bool."""
    if priors.dim() != 2 or priors.shape[-1] != 4:
        raise ValueError(f"priors: expected shape (A, 4) anchor boxes shared by the batch, got {tuple(priors.shape)}")
    if not torch.isfinite(priors).all():
        raise ValueError("priors: expected finite coordinates, got NaN/inf")
    if prior_valid is not None:
        expected = (batch_size, priors.shape[0])
        if tuple(prior_valid.shape) != expected:
            raise ValueError(f"prior_valid: expected shape (B, A) = {expected}, got {tuple(prior_valid.shape)}")
        if prior_valid.dtype != torch.bool:
            raise ValueError(f"prior_valid: expected a bool tensor, got dtype {prior_valid.dtype}")


# --------------------------------------------------------------------------------------------------
# Pieces shared with ATSS


def topk_low_index_ties(values: Tensor, k: int, largest: bool = True,
                        tie_matters: Optional[Callable[[Tensor], Tensor]] = None) -> tuple[Tensor, Tensor]:
    """Top-k along the last dim where a tie at the k-th place goes to the lowest index.

    values (..., N) -> (top values (..., k), their indices (..., k)), best first.

    ``torch.topk`` leaves the choice among equal values unspecified on CPU; the CUDA kernel the
    original ran on takes the first ones it sees, i.e. the lowest indices. Ties are routine for
    ATSS's distances on a regular grid, so that rule is pinned here: ask topk for k+1, and only rows whose k-th and (k+1)-th values are equal are redone
    exactly (everything strictly better, then the lowest-index equal ones). ``tie_matters`` maps the
    k-th values (...,) to a bool mask of rows worth redoing (e.g. TAL ignores ties at t = 0, which
    can never become positives); None redoes every tied row. Requires k <= N.
    """
    n = values.shape[-1]
    if k >= n:
        # Everything is selected; no choice to make.
        return values.topk(n, dim=-1, largest=largest)
    vals, idx = values.topk(k + 1, dim=-1, largest=largest)
    tied = vals[..., k - 1] == vals[..., k]
    if tie_matters is not None:
        tied &= tie_matters(vals[..., k - 1])
    vals, idx = vals[..., :k].contiguous(), idx[..., :k].contiguous()
    if tied.any():
        rows = values[tied]                          # (R, N)
        kth = vals[tied][:, k - 1:k]                 # (R, 1)
        ahead = rows > kth if largest else rows < kth
        equal = rows == kth
        room = k - ahead.sum(dim=-1, keepdim=True)   # how many of the tied values fit
        take = ahead | (equal & (equal.cumsum(dim=-1) <= room))
        new_idx = take.nonzero()[:, 1].view(-1, k)   # exactly k per row, ascending index
        new_vals = rows.gather(-1, new_idx)
        # Best first, equal values in index order, like the untied rows.
        order = new_vals.sort(dim=-1, descending=largest, stable=True).indices
        vals[tied] = new_vals.gather(-1, order)
        idx[tied] = new_idx.gather(-1, order)
    return vals, idx


def inside_gt(points: Tensor, gt_boxes: Tensor, eps: float) -> Tensor:
    """Is each point strictly inside its box by more than eps? points (..., 2), gt_boxes (..., 4) -> (...) bool.

    The reference's test: min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01, so a point on the border,
    or within 0.01 px of it, is outside.
    """
    cx, cy = points[..., 0], points[..., 1]
    dist = torch.stack((cx - gt_boxes[..., 0], cy - gt_boxes[..., 1],
                        gt_boxes[..., 2] - cx, gt_boxes[..., 3] - cy), dim=-1)
    return dist.amin(dim=-1) > eps


def resolve_conflicts(cand_idx: Tensor, cand_pos: Tensor, cand_iou: Tensor, num_priors: int):
    """Give each prior claimed by several gts to the gt with the highest IoU (ties: lowest gt index).

    cand_idx (B, G, k) long prior indices, cand_pos (B, G, k) bool, cand_iou (B, G, k) float.
    Returns the winning (gt, prior) pairs as flat tensors, each (P,):
    ``batch``, ``gt``, ``prior`` indices and ``slot`` = the pair's flat position in the (B, G, k) candidates.

    The reference fills an (A, G) matrix with -inf except at positive pairs and takes the argmax over
    gts; torch.max returns the first maximum, i.e. the lowest gt index among equal IoUs. Here the same
    rule runs on the positive pairs only: a scatter-max of IoU per prior, then a scatter-min of the gt
    index among the pairs that reached it.
    """
    B, G, k = cand_idx.shape
    slot = cand_pos.reshape(-1).nonzero().squeeze(1)              # (P,) flat (b, g, j)
    batch = torch.div(slot, G * k, rounding_mode="floor")
    gt = torch.div(slot, k, rounding_mode="floor") % G
    prior = cand_idx.reshape(-1)[slot]
    iou = cand_iou.reshape(-1)[slot]
    key = batch * num_priors + prior                               # which (image, prior) a pair claims

    best_iou = iou.new_full((B * num_priors,), -float("inf"))
    best_iou.scatter_reduce_(0, key, iou, reduce="amax")
    at_best = iou == best_iou[key]
    first_gt = gt.new_full((B * num_priors,), G)
    first_gt.scatter_reduce_(0, key[at_best], gt[at_best], reduce="amin")
    win = at_best & (gt == first_gt[key])
    return batch[win], gt[win], prior[win], slot[win]


def empty_assignment(B: int, A: int, G: int, k: int, device, iou_dtype=torch.float32) -> Assignment:
    """All-background assignment: (B, A) outputs, candidates (B, G, k) all -1."""
    return Assignment(
        gt_index=torch.full((B, A), -1, dtype=torch.long, device=device),
        labels=torch.full((B, A), -1, dtype=torch.long, device=device),
        positive=torch.zeros((B, A), dtype=torch.bool, device=device),
        metric=torch.zeros((B, A), dtype=iou_dtype, device=device),
        iou=torch.zeros((B, A), dtype=iou_dtype, device=device),
        target=torch.zeros((B, A), dtype=iou_dtype, device=device),
        candidates=torch.full((B, G, k), -1, dtype=torch.long, device=device),
        candidate_positive=torch.zeros((B, G, k), dtype=torch.bool, device=device),
    )


def fill_assignment(out: Assignment, batch: Tensor, gt: Tensor, prior: Tensor, gt_labels: Tensor,
                    metric: Tensor, iou: Tensor) -> None:
    """Write the winning pairs (each (P,)) into the (B, A) fields of ``out``, in place.
    ``target`` is left alone (the caller's rule)."""
    A = out.gt_index.shape[1]
    flat = batch * A + prior
    out.gt_index.view(-1)[flat] = gt
    out.labels.view(-1)[flat] = gt_labels[batch, gt]
    out.positive.view(-1)[flat] = True
    out.metric.view(-1)[flat] = metric
    out.iou.view(-1)[flat] = iou


# --------------------------------------------------------------------------------------------------
# TAL


def _check_tal_inputs(scores, pred_boxes, priors, gt_boxes, gt_labels, gt_mask, prior_valid, topk):
    if scores.dim() != 3:
        raise ValueError(f"scores: expected shape (B, A, K) class probabilities, got {tuple(scores.shape)}")
    B, A, K = scores.shape
    if pred_boxes.dim() != 3 or pred_boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes: expected shape (B, A, 4) in pixels, got {tuple(pred_boxes.shape)}")
    if tuple(pred_boxes.shape[:2]) != (B, A):
        raise ValueError(f"pred_boxes: expected (B, A) = {(B, A)} to match scores, got {tuple(pred_boxes.shape[:2])}")
    if priors.dim() == 2 and priors.shape[0] != A:
        raise ValueError(f"priors: expected A = {A} rows to match scores, got {tuple(priors.shape)}")
    check_priors(priors, prior_valid, B)
    check_gt_inputs(gt_boxes, gt_labels, gt_mask, num_classes=K)
    if gt_boxes.shape[0] != B:
        raise ValueError(f"gt_boxes: expected batch size B = {B} to match scores, got {gt_boxes.shape[0]}")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk: expected a positive int, got {topk!r}")


def _coordinate_planes(boxes: Tensor) -> Tensor:
    """(..., 4) -> (4, ...) contiguous. Elementwise ops over a strided ``boxes[..., 0]`` run several
    times slower than over a contiguous plane, and the dense part is nothing but such ops."""
    return boxes.movedim(-1, 0).contiguous()


def _iou_(u: Tensor, tmp1: Tensor, tmp2: Tensor, gt: Tensor, gt_area: Tensor, pred: Tensor,
          pred_area: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of every (gt, prior) pair of a block, written into u without allocating.

    gt (4, B, G, 1) coordinate planes and gt_area (B, G, 1); pred (4, B, 1, n) and pred_area (B, 1, n);
    u, tmp1, tmp2 (B, G, n) buffers (the last two are scratch). The steps are box_iou's, in its
    order (overlap clamped at 0, union at eps), so the values are bit-identical to box_iou(gt, pred).
    """
    torch.minimum(gt[2], pred[2], out=u).sub_(torch.maximum(gt[0], pred[0], out=tmp2)).clamp_(min=0)
    torch.minimum(gt[3], pred[3], out=tmp1).sub_(torch.maximum(gt[1], pred[1], out=tmp2)).clamp_(min=0)
    overlap = u.mul_(tmp1)
    union = torch.add(gt_area, pred_area, out=tmp1).sub_(overlap).clamp_(min=eps)
    return overlap.div_(union)


def _pair_metric(scores: Tensor, pred_boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, prior: Tensor,
                 alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """t and u for given (gt, prior) pairs. prior (B, G, P) long -> t (B, G, P), u (B, G, P).

    Same arithmetic as the dense pass (box_iou's steps, then (s ** α) * (u ** β)), so the values
    are bit-identical to the ones it saw for the same pairs.
    """
    B, A, K = scores.shape
    G, P = prior.shape[1:]
    boxes = pred_boxes.gather(1, prior.view(B, G * P, 1).expand(-1, -1, 4)).view(B, G, P, 1, 4)
    u = box_iou(boxes, gt_boxes[:, :, None, None, :])[..., 0, 0]
    flat = (torch.arange(B, device=prior.device)[:, None, None] * A + prior) * K + gt_labels[..., None]
    s = scores.reshape(-1)[flat]
    if alpha != 1:
        s = s.pow(alpha)
    return s * u.pow(beta), u


def _group_maxima(scores: Tensor, pred_boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                  prior_valid: Optional[Tensor], alpha: float, beta: float) -> Tensor:
    """The only part that looks at every (gt, prior) pair: max of t over each run of GROUP priors.

    scores (B, A, K), pred_boxes (B, A, 4), gt_boxes (B, G, 4), gt_labels (B, G), prior_valid (B, A)
    or None -> (B, G, ceil(A / GROUP)). Invalid priors count as t = -inf.

    Priors are processed in slices of n at a time, each slice for all (image, gt) rows at once, in
    a few (B, G, n) buffers that every slice reuses: fresh multi-megabyte temporaries would cost
    more in page faults than the arithmetic itself. Slicing along priors (rather than gts) makes the
    score lookup cheap: the slice's scores are transposed to class-major once, after which each
    gt's row of scores is one contiguous copy. Scores outside [0, 1] raise a ValueError here.
    """
    B, A, K = scores.shape
    G = gt_boxes.shape[1]
    step = min(A, max(GROUP, DENSE_CHUNK_ELEMENTS // (B * max(G, K)) // GROUP * GROUP))
    pred = _coordinate_planes(pred_boxes)[:, :, None, :]            # (4, B, 1, A)
    pred_area = (pred[2] - pred[0]) * (pred[3] - pred[1])           # (B, 1, A), box_area's formula
    gt = _coordinate_planes(gt_boxes)[..., None]                    # (4, B, G, 1)
    gt_area = (gt[2] - gt[0]) * (gt[3] - gt[1])                     # (B, G, 1)
    score_rows = (torch.arange(B, device=scores.device)[:, None] * K + gt_labels).reshape(-1)  # (B*G,)
    invalid = None if prior_valid is None else ~prior_valid[:, None, :]

    # Flat buffers, viewed at each slice's width so the views stay contiguous.
    u_buf, tmp_buf, t_buf = (scores.new_empty(B * G * step) for _ in range(3))
    by_class_buf = scores.new_empty(B * K * step)
    group_max = scores.new_empty((B, G, -(-A // GROUP)))
    lowest, highest = scores.new_full((), float("inf")), scores.new_full((), -float("inf"))
    for a0 in range(0, A, step):
        n = min(step, A - a0)
        u, tmp, t = (buf[:B * G * n].view(B, G, n) for buf in (u_buf, tmp_buf, t_buf))
        _iou_(u, tmp, t, gt, gt_area, pred[..., a0:a0 + n], pred_area[..., a0:a0 + n])
        # s: transpose the slice's scores to (B, K, n), then copy out each gt's class row.
        by_class = by_class_buf[:B * K * n].view(B, K, n)
        by_class.copy_(scores[:, a0:a0 + n].transpose(1, 2))
        lo, hi = torch.aminmax(by_class)                            # input check, nearly free here
        lowest, highest = torch.minimum(lowest, lo), torch.maximum(highest, hi)
        torch.index_select(by_class.view(B * K, n), 0, score_rows, out=t.view(B * G, n))
        if alpha != 1:
            t.pow_(alpha)
        # Same operation order as the reference: (s ** α) * (u ** β).
        t.mul_(u.pow_(beta))
        if invalid is not None:
            t.masked_fill_(invalid[..., a0:a0 + n], -float("inf"))
        # Max over runs of GROUP priors (a0 is a multiple of GROUP; ceil_mode keeps a short last run).
        # max_pool1d is a dedicated kernel, several times faster than amax over a length-16 dim.
        g0 = a0 // GROUP
        maxima = F.max_pool1d(t.view(B * G, 1, n), GROUP, ceil_mode=True)
        group_max[..., g0:g0 + maxima.shape[-1]] = maxima.view(B, G, -1)
    if not (lowest >= 0 and highest <= 1):                          # also catches NaN
        raise ValueError(f"scores: expected probabilities in [0, 1] (sigmoid outputs, not logits), "
                         f"got values in [{lowest.item():.4g}, {highest.item():.4g}]")
    return group_max


def _top_candidates(scores: Tensor, pred_boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                    prior_valid: Optional[Tensor], alpha: float, beta: float, k: int):
    """Each gt's top-k priors by t: values t (B, G, k), prior indices (B, G, k), IoUs u (B, G, k).

    Best first; equal t at the k-th place go to the lowest prior index.

    Two stages, so that no top-k ever runs over all B·G·A values (torch.topk costs ~1 ns per element
    on CPU, as much as the metric itself): the dense pass keeps only the maximum t of every group
    of GROUP consecutive priors; the k best groups of a row hold its k best priors (each of those
    lies in a group whose maximum is at least the k-th best t, and at most k groups qualify, ties
    going to the lowest group index); the k·GROUP priors of those groups are then rescored exactly
    and ranked.
    """
    B, A, K = scores.shape
    group_max = _group_maxima(scores, pred_boxes, gt_boxes, gt_labels, prior_valid, alpha, beta)
    # Ties at t = 0 never matter: a zero-metric candidate cannot become positive.
    groups = topk_low_index_ties(group_max, min(k, group_max.shape[-1]), largest=True,
                                 tie_matters=lambda kth: kth > 0)[1]
    prior = (groups[..., None] * GROUP + torch.arange(GROUP, device=groups.device)).flatten(-2)
    outside = prior >= A                                            # past the end of the short group
    prior = prior.clamp_(max=A - 1)
    t, u = _pair_metric(scores, pred_boxes, gt_boxes, gt_labels, prior, alpha, beta)
    dropped = outside if prior_valid is None else outside | ~prior_valid.gather(1, prior.view(B, -1)).view_as(prior)
    t.masked_fill_(dropped, -float("inf"))
    # Rank: best t first, equal t by lowest prior index (sort by index, then a stable sort by t).
    by_index = prior.argsort(dim=-1)
    t, prior, u = t.gather(-1, by_index), prior.gather(-1, by_index), u.gather(-1, by_index)
    best = t.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    return t.gather(-1, best), prior.gather(-1, best), u.gather(-1, best)


@torch.no_grad()
def task_aligned_assign(scores: Tensor, pred_boxes: Tensor, priors: Tensor, gt_boxes: Tensor,
                        gt_labels: Tensor, gt_mask: Tensor, prior_valid: Optional[Tensor] = None,
                        alpha: float = 1.0, beta: float = 6.0, topk: int = 13,
                        eps_inside: float = 0.01) -> Assignment:
    """Task-aligned assignment of a padded batch (spec §2.2) with the normalised targets t̂ (§2.3).

    Args:
        scores: (B, A, K) class probabilities in [0, 1] (the head's aligned score P_align).
        pred_boxes: (B, A, 4) predicted boxes (x1, y1, x2, y2) in pixels. Degenerate boxes are fine.
        priors: (A, 4) anchor boxes in pixels; their centres are the anchor points used for the
            "inside the gt" test.
        gt_boxes: (B, G, 4) ground-truth boxes in pixels, padded to a common G.
        gt_labels: (B, G) long class indices.
        gt_mask: (B, G) bool, False marks padding rows (their contents are ignored).
        prior_valid: (B, A) bool, False for priors on the batch padding; those are never
            candidates. None means all valid.
        alpha, beta: exponents of t = s^alpha · u^beta.
        topk: m, candidates per gt over all levels jointly (min(m, valid priors) in practice).
        eps_inside: the anchor point must be inside the gt by more than this (pixels).

    Returns:
        An :class:`Assignment` with k = min(topk, A) candidate slots. ``metric`` is t of the assigned
        pair, ``iou`` its u ("max_overlaps"), ``target`` is t̂. Inputs are detached and computed in
        fp32; outputs are fp32.

    Ties: among equal t at the m-th place, the lowest prior index wins; among gts claiming a prior
    with equal IoU, the lowest gt index wins. When fewer than m priors have t > 0, the remaining
    candidate slots hold an arbitrary choice of t = 0 priors (as in the original); they can never be
    positive.
    """
    _check_tal_inputs(scores, pred_boxes, priors, gt_boxes, gt_labels, gt_mask, prior_valid, topk)
    B, A, K = scores.shape
    G = gt_boxes.shape[1]
    k = min(topk, A)
    out = empty_assignment(B, A, G, k, scores.device)
    if G == 0 or k == 0 or not gt_mask.any():
        return out

    # fp32 throughout: u^6 underflows quickly in half precision (spec §6.1).
    scores = scores.detach().float()
    pred_boxes = pred_boxes.detach().float()
    priors = priors.detach().float()
    gt_boxes = torch.where(gt_mask[..., None], gt_boxes.detach().float(), 0.0)  # padding rows -> inert zeros
    gt_labels = torch.where(gt_mask, gt_labels.long(), 0)

    if not torch.isfinite(pred_boxes).all():
        bad = (~torch.isfinite(pred_boxes)).any(-1).nonzero()[0].tolist()
        raise ValueError(f"pred_boxes: expected finite coordinates, got {pred_boxes[tuple(bad)].tolist()} "
                         f"at (image, prior) {tuple(bad)}")

    cand_t, cand_idx, cand_u = _top_candidates(scores, pred_boxes, gt_boxes, gt_labels, prior_valid,
                                               alpha, beta, k)
    real = gt_mask[..., None]                                      # (B, G, 1)

    # Slots past an image's number of valid priors hold invalid priors (t = -inf): not candidates.
    is_cand = (cand_t > -float("inf")) & real
    points = prior_points(priors)[cand_idx]                         # (B, G, k, 2)
    cand_pos = is_cand & (cand_t > 0) & inside_gt(points, gt_boxes[:, :, None, :], eps_inside)

    batch, gt, prior, slot = resolve_conflicts(cand_idx, cand_pos, cand_u, A)
    t = cand_t.reshape(-1)[slot]
    u = cand_u.reshape(-1)[slot]
    fill_assignment(out, batch, gt, prior, gt_labels, t, u)

    # t̂ per instance, over the positives it finally kept: t / (max t + 1e-7) * max u.
    instance = batch * G + gt
    max_t = t.new_zeros(B * G).scatter_reduce_(0, instance, t, reduce="amax")
    max_u = u.new_zeros(B * G).scatter_reduce_(0, instance, u, reduce="amax")
    out.target.view(-1)[batch * A + prior] = t / (max_t[instance] + TARGET_EPS) * max_u[instance]

    out.candidates = cand_idx.masked_fill_(~is_cand, -1)
    out.candidate_positive = cand_pos
    return out
