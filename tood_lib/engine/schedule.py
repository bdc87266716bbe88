"""The learning-rate schedule of the official recipe, and the rule for smaller batches (spec §3).

lr(iter, epoch) = base_lr · warm-up factor · 0.1^(number of steps passed)
- warm-up: linear over ``warmup_iters`` from ``warmup_ratio``·base_lr (mmcv's "linear" policy:
  factor = 1 − (1 − iter/warmup_iters)·(1 − ratio));
- steps: ×0.1 at the start of each epoch in ``lr_steps`` (epochs 8 and 11 of 12 for 1x).

Fewer images per step than the recipe's batch (``train.batch_size``: 16 for the paper's 4 GPUs x 4
images): the linear scaling rule multiplies the LR by batch/16 and, as suggested in
mmdetection#8290, stretches the warm-up by 16/batch so that it still covers the same number of
images. Gradient accumulation restores the batch instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

@dataclass
class LRSchedule:
    base_lr: float
    warmup_iters: int
    warmup_ratio: float
    lr_steps: tuple[int, ...]
    gamma: float = 0.1

    def __call__(self, iteration: int, epoch: int) -> float:
        """LR at optimiser step ``iteration`` (0-based, global) during ``epoch`` (0-based)."""
        lr = self.base_lr * self.gamma ** sum(epoch >= s for s in self.lr_steps)
        if iteration < self.warmup_iters:
            lr *= 1 - (1 - iteration / self.warmup_iters) * (1 - self.warmup_ratio)
        return lr


def scaled_schedule(train_cfg, effective_batch: int, scale_lr: bool = True) -> LRSchedule:
    """The recipe's schedule for an effective batch (images per optimiser step over all processes).

    ``train_cfg.lr`` is the LR of the recipe's own batch ``train_cfg.batch_size``."""
    factor = effective_batch / train_cfg.batch_size if scale_lr else 1.0
    warmup = train_cfg.warmup_iters if not scale_lr else math.ceil(train_cfg.warmup_iters / factor)
    return LRSchedule(train_cfg.lr * factor, warmup, train_cfg.warmup_ratio, tuple(train_cfg.lr_steps))
