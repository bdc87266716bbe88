"""Property tests for both assigners: invariants that must hold on any input, and agreement with
the per-image reference, on small random problems drawn by hypothesis."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tood_lib.assign import atss_assign, task_aligned_assign
from tood_lib.assign.reference import atss_assign_reference, task_aligned_assign_reference
from tood_lib.boxes import box_iou
from tood_lib.model.priors import multilevel_priors, prior_points

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def problems(draw):
    """A small padded batch: priors on 1-3 levels, 0-5 boxes per image, optional invalid priors."""
    num_levels = draw(st.integers(1, 3))
    sizes = [(draw(st.integers(1, 5)), draw(st.integers(1, 5))) for _ in range(num_levels)]
    strides = [8 * 2 ** i for i in range(num_levels)]
    levels = multilevel_priors(sizes, strides)
    return dict(
        levels=levels, batch=draw(st.integers(1, 3)), G=draw(st.integers(0, 5)), K=draw(st.integers(1, 4)),
        integer=draw(st.booleans()), use_valid=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 31 - 1)),
        topk=draw(st.integers(1, 15)), eps=draw(st.sampled_from([0.01, 0.0, 2.0])))


def make_tensors(p):
    g = torch.Generator().manual_seed(p["seed"])
    priors = torch.cat(p["levels"])
    A, B, G, K = priors.shape[0], p["batch"], p["G"], p["K"]
    points = prior_points(priors)
    extent = float(points.max()) + 16
    xy = torch.rand(B, G, 2, generator=g) * extent
    wh = torch.rand(B, G, 2, generator=g) * extent / 2
    gt = torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)
    if p["integer"]:                                              # grid-aligned: equal distances and IoUs
        gt = (gt / 4).round() * 4
    mask = torch.rand(B, G, generator=g) < 0.7
    labels = torch.randint(0, K, (B, G), generator=g)
    # Predictions: mostly a box around the point, sometimes a gt (high IoU), sometimes degenerate.
    ext = torch.rand(B, A, 4, generator=g) * 24 - 2
    pred = torch.cat((points - ext[..., :2], points + ext[..., 2:]), dim=-1)
    if G:
        copy = torch.rand(B, A, generator=g) < 0.3
        pick = torch.randint(0, G, (B, A), generator=g)
        pred = torch.where(copy[..., None], gt.gather(1, pick[..., None].expand(-1, -1, 4)), pred)
    scores = torch.rand(B, A, K, generator=g)                     # continuous: no exact ties in t
    valid = torch.rand(B, A, generator=g) < 0.8 if p["use_valid"] else None
    return scores, pred, priors, gt, labels, mask, valid


def check_common_invariants(out, priors, gt, labels, mask, valid, eps, max_per_gt):
    B, A = out.gt_index.shape
    pos = out.positive
    assert torch.equal(pos, out.gt_index >= 0)
    assert torch.equal(pos, out.labels >= 0)
    # Zero-box images, and everything that is not positive, are pure background.
    empty = ~mask.any(dim=1)
    assert not pos[empty].any()
    for name in ("metric", "iou", "target"):
        assert (getattr(out, name)[~pos] == 0).all(), name
    if valid is not None:
        assert not pos[~valid].any()
        cand = out.candidates.clamp(min=0)
        is_cand = out.candidates >= 0
        assert valid.gather(1, cand.flatten(1)).view_as(cand)[is_cand].all()
    if not pos.any():
        return
    b, a = pos.nonzero(as_tuple=True)
    g = out.gt_index[b, a]
    # Each positive belongs to exactly one real gt, with that gt's class.
    assert mask[b, g].all()
    assert torch.equal(out.labels[b, a], labels[b, g])
    # Its anchor point is strictly inside that gt, by more than eps.
    pts = prior_points(priors)[a]
    box = gt[b, g]
    margin = torch.stack((pts[:, 0] - box[:, 0], pts[:, 1] - box[:, 1], box[:, 2] - pts[:, 0], box[:, 3] - pts[:, 1]))
    assert (margin.amin(0) > eps).all()
    # It passed every cut for that gt, and at most max_per_gt priors did so per gt.
    cand_of_g = out.candidates[b, g]                              # (P, k)
    slot = (cand_of_g == a[:, None]) & out.candidate_positive[b, g]
    assert (slot.sum(-1) == 1).all()
    assert (out.candidate_positive.sum(-1) <= max_per_gt).all()
    per_gt = torch.zeros(B, gt.shape[1], dtype=torch.long).index_put_((b, g), torch.ones_like(g), accumulate=True)
    assert (per_gt <= max_per_gt).all()
    assert not out.candidate_positive[~mask].any()


@SETTINGS
@given(problems())
def test_tal_invariants_and_reference(p):
    scores, pred, priors, gt, labels, mask, valid = make_tensors(p)
    out = task_aligned_assign(scores, pred, priors, gt, labels, mask, valid, topk=p["topk"], eps_inside=p["eps"])
    A = priors.shape[0]
    n_valid = torch.full((p["batch"],), A) if valid is None else valid.sum(1)
    m = n_valid.clamp(max=p["topk"])
    # At most m candidates (and so positives) per gt.
    assert ((out.candidates >= 0).sum(-1) <= m[:, None]).all()
    check_common_invariants(out, priors, gt, labels, mask, valid, p["eps"], p["topk"])

    pos = out.positive
    assert (out.metric[pos] > 0).all()
    assert (out.target >= 0).all() and (out.target <= 1).all()
    if pos.any():
        b, a = pos.nonzero(as_tuple=True)
        g = out.gt_index[b, a]
        # iou is the predicted box's IoU with the assigned gt; metric is s^α·u^β of that pair.
        u = box_iou(pred[b, a][:, None, :], gt[b, g][:, None, :])[:, 0, 0]
        torch.testing.assert_close(out.iou[b, a], u, rtol=0, atol=0)
        torch.testing.assert_close(out.metric[b, a], scores[b, a, labels[b, g]] * u ** 6)
        # Conflicts: among the gts for which the prior passed every cut, the assigned one has the
        # highest IoU, and the lowest index among equals.
        for bi, ai, gi in zip(b.tolist(), a.tolist(), g.tolist()):
            claims = ((out.candidates[bi] == ai) & out.candidate_positive[bi]).any(-1).nonzero().squeeze(1)
            ious = box_iou(pred[bi, ai][None], gt[bi, claims])[0]
            assert gi == claims[ious == ious.max()].min().item()
        # t̂: per gt, the max target is the best positive IoU (scaled by max t / (max t + 1e-7)).
        for bi, gi in set(zip(b.tolist(), g.tolist())):
            mine = out.gt_index[bi] == gi
            max_t, max_u = out.metric[bi, mine].max(), out.iou[bi, mine].max()
            torch.testing.assert_close(out.target[bi, mine].max(), max_t / (max_t + 1e-7) * max_u)
            assert out.target[bi, mine].max() <= max_u

    ref = task_aligned_assign_reference(scores, pred, priors, gt, labels, mask, valid, topk=p["topk"],
                                        eps_inside=p["eps"])
    assert torch.equal(out.gt_index, ref.gt_index)
    assert torch.equal(out.candidate_positive, ref.candidate_positive)
    torch.testing.assert_close(out.target, ref.target, rtol=1e-6, atol=1e-9)


@SETTINGS
@given(problems())
def test_atss_invariants_and_reference(p):
    _, _, priors, gt, labels, mask, valid = make_tensors(p)
    num_levels = [len(level) for level in p["levels"]]
    topk = min(p["topk"], 9)
    out = atss_assign(priors, num_levels, gt, labels, mask, valid, topk=topk, eps_inside=p["eps"])
    k_total = sum(min(topk, n) for n in num_levels)
    assert out.candidates.shape[-1] == k_total
    check_common_invariants(out, priors, gt, labels, mask, valid, p["eps"], k_total)

    pos = out.positive
    assert (out.target[pos] == 1).all()
    assert torch.equal(out.metric, out.iou)
    if pos.any():
        b, a = pos.nonzero(as_tuple=True)
        g = out.gt_index[b, a]
        u = box_iou(priors[a][:, None, :], gt[b, g][:, None, :])[:, 0, 0]
        torch.testing.assert_close(out.iou[b, a], u, rtol=0, atol=0)
        # Per level, at most k candidates, and the candidates of a level come from that level.
        bounds = torch.tensor([0] + num_levels).cumsum(0)
        slot = 0
        for lvl, n in enumerate(num_levels):
            block = out.candidates[..., slot:slot + min(topk, n)]
            inside = (block < 0) | ((block >= bounds[lvl]) & (block < bounds[lvl + 1]))
            assert inside.all()
            slot += min(topk, n)

    ref = atss_assign_reference(priors, num_levels, gt, labels, mask, valid, topk=topk, eps_inside=p["eps"])
    for name in ("gt_index", "labels", "positive", "iou", "target"):
        assert torch.equal(getattr(out, name), getattr(ref, name)), name
    assert torch.equal(out.candidates.sort(-1).values, ref.candidates.sort(-1).values)
