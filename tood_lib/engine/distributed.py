"""Process-group helpers for ``torchrun`` (NCCL on GPUs, gloo on CPUs). One process without torchrun."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """Join the process group torchrun describes (env RANK/WORLD_SIZE/LOCAL_RANK) -> (rank, world, local_rank).

    Without those variables (a plain ``python``), returns (0, 1, 0) and starts nothing. Under torchrun
    the group is made even for one process, so that a 1-process run takes the DDP/NCCL path too.
    """
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_reduce_flag(flag: bool, device) -> bool:
    """True on every process if ``flag`` is True on any of them."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
