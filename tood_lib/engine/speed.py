"""How the Trainer lays out its model and batches for speed, without changing what is computed.

On the CPU, oneDNN's convolutions run in channels-last (NHWC) layout; with NCHW tensors every
convolution reorders its input, output and weight, forward and backward. Keeping the model's
weights and the images channels-last removes most of those copies (the layout propagates from
the images through every convolution). The arithmetic is the same; only the order of some
floating-point sums differs, so losses and gradients agree to fp32 round-off
(``benchmarks/bench_train_step.py --baseline`` checks it). GPUs keep PyTorch's default layout, and
so does a CPU run under torchrun (DistributedDataParallel's gradient buckets expect it; CPU DDP is for
testing the distributed path, not for speed).
"""
from __future__ import annotations

import torch
from torch import nn

from tood_lib.batch import Batch


def uses_channels_last(device: torch.device | str, distributed: bool = False) -> bool:
    return torch.device(device).type == "cpu" and not distributed


def prepare_model(model: nn.Module, device: torch.device | str, distributed: bool = False) -> nn.Module:
    """The model in the layout its device runs fastest in (in place; returned for chaining)."""
    if uses_channels_last(device, distributed):
        model.to(memory_format=torch.channels_last)
    return model


def prepare_batch(batch: Batch, device: torch.device | str, distributed: bool = False) -> Batch:
    """The batch's images in the model's layout (the other fields are untouched)."""
    if uses_channels_last(device, distributed):
        batch.images = batch.images.contiguous(memory_format=torch.channels_last)
    return batch
