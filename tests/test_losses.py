"""The losses and normalisers of TAL and of the ATSS warm-up, on hand-computed cases (spec §2.4-2.7)."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tood_lib.losses import (centerness_target, focal_loss_with_probs, normalizer, quality_focal_loss,
                             reduce_mean, weighted_giou_loss)


def bce(p, y):
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_quality_focal_loss_positive_and_negative():
    probs = torch.tensor([[0.3, 0.2]])
    targets = torch.tensor([[0.8, 0.0]])  # class 0 is the assigned class with t̂ = 0.8
    loss = quality_focal_loss(probs, targets, gamma=2.0)
    torch.testing.assert_close(loss[0, 0], torch.tensor(bce(0.3, 0.8) * 0.5 ** 2))
    torch.testing.assert_close(loss[0, 1], torch.tensor(bce(0.2, 0.0) * 0.2 ** 2))  # p²·BCE(p, 0)
    # no α: swapping the role of the target does not reweight by 0.25/0.75
    assert loss.shape == (1, 2)


def test_quality_focal_loss_is_zero_at_the_target_and_matches_reference_form():
    probs = torch.rand(50, 7).clamp(0.01, 0.99)
    targets = torch.zeros(50, 7)
    targets[torch.arange(50), torch.randint(0, 7, (50,))] = torch.rand(50)
    ours = quality_focal_loss(probs, targets)
    # MMDetection's QFL(activated=True): negatives p²·BCE(p,0), positives |t−p|²·BCE(p,t)
    ref = torch.nn.functional.binary_cross_entropy(probs, torch.zeros_like(probs), reduction="none") * probs ** 2
    pos = targets > 0
    ref[pos] = torch.nn.functional.binary_cross_entropy(probs[pos], targets[pos], reduction="none") * (targets[pos] - probs[pos]).abs() ** 2
    torch.testing.assert_close(ours, ref)
    assert quality_focal_loss(torch.tensor([0.4]), torch.tensor([0.4])).item() == 0.0


def test_focal_loss_on_probabilities():
    probs = torch.tensor([0.3, 0.3])
    targets = torch.tensor([1.0, 0.0])
    loss = focal_loss_with_probs(probs, targets, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([bce(0.3, 1) * 0.25 * 0.7 ** 2, bce(0.3, 0) * 0.75 * 0.3 ** 2]))


def test_collapsed_scores_give_the_famous_25():
    # spec §6.8: with every positive's probability exactly 0, BCE clamps log at −100, so a positive
    # costs 0.25·1²·100 = 25 — the "loss_cls stuck at 25.0" of mmdetection#7952.
    loss = focal_loss_with_probs(torch.tensor([0.0]), torch.tensor([1.0]))
    assert loss.item() == pytest.approx(25.0)


def test_weighted_giou_loss():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    weight = torch.tensor([0.5, 0.9])
    giou = 1 / 7 - (9 - 7) / 9  # inter 1, union 7, enclosing 9
    expected = 2.0 * (0.5 * (1 - giou) + 0.9 * 0.0)
    assert weighted_giou_loss(pred, target, weight, loss_weight=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_giou_loss_without_positives_is_a_zero_that_keeps_the_graph():
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = weighted_giou_loss(pred, torch.zeros(0, 4), torch.zeros(0))
    assert loss.item() == 0.0 and loss.requires_grad


def test_centerness_target():
    c = centerness_target(torch.tensor([[2.0, 1.0], [2.0, 2.0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 2))
    torch.testing.assert_close(c, torch.tensor([math.sqrt(1.0 * 1 / 3), 1.0]))


def test_normalizer_rule():
    assert normalizer(torch.tensor(3.5)) == 3.5
    assert normalizer(torch.tensor(0.2)) == pytest.approx(0.2)  # official: no clamp at 1, only below 1e-12
    assert normalizer(torch.tensor(0.0)) == 1.0
    assert normalizer(torch.tensor(1e-13)) == 1.0
    assert normalizer(torch.tensor(0.2), eps=1.0) == 1.0  # MMDetection-like floor when asked for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, values, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results[rank] = (reduce_mean(torch.tensor(values[rank])).item(), normalizer(torch.tensor(values[rank])))
    finally:
        dist.destroy_process_group()


def test_normalizer_is_averaged_across_processes():
    values = [2.0, 5.0]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), values, results), nprocs=2, join=True)
        results = dict(results)
    assert results[0] == results[1] == (3.5, 3.5)
