"""Parameter and multiply-accumulate counts, as in the paper's Table 1.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` — PyTorch's own counter, which sees
every convolution and matrix product the forward pass actually runs (including the ``bmm`` of
the folded layer-attention reduction, which a module-hook counter would miss, spec §5). It
reports FLOPs = 2 x MACs; we divide by two to report MACs, which is what the paper's "FLOPs"
column counts (mmcv's convention). Not counted: bias additions, GroupNorm/BatchNorm, ReLU,
sigmoid, pooling, upsampling and the 1x1 deformable resampling of the box map — together well
under 1% of the total.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode



def _paper_table1() -> dict[str, dict[str, float]]:
    """Table 1's size columns of the ATSS (anchor-free) rows, TOOD's own configuration, from
    ``tood_lib/paper_data/table1.csv``: {"t_head" | "parallel": {head_params_m, total_params_m,
    head_gmacs, total_gmacs}} (the paper's "FLOPs" are MACs)."""
    from tood_lib.analysis.paper_tables import paper_table

    table = paper_table(1)
    rows = table[table["detector"] == "ATSS (anchor-free)"].set_index("head")
    columns = dict(head_params_m="head_params_m", total_params_m="total_params_m", head_gmacs="head_gflops",
                   total_gmacs="total_gflops")
    return {key: {ours: float(rows.at[head, theirs]) for ours, theirs in columns.items()}
            for key, head in (("t_head", "T-head"), ("parallel", "parallel"))}


PAPER_TABLE1 = _paper_table1()  # (params M, MACs G) at 1280x800, paper Table 1


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, trainable and per-part (backbone/neck/head) parameter counts."""
    counts = dict(total=sum(p.numel() for p in model.parameters()),
                  trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
    for name, child in model.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
        counts[f"{name}_trainable"] = sum(p.numel() for p in child.parameters() if p.requires_grad)
    return counts


def _mmcv_extra_hooks(model: nn.Module, counts: dict[str, int]) -> list:
    """Forward hooks adding what mmcv's ``get_flops`` counts beyond convolutions and matrix products:
    a conv's bias (one per output element), BatchNorm / GroupNorm (two per element: normalise and
    scale), ReLU modules (one per element) and max-pooling (one per input element)."""
    hooks = []

    def hook(part: str, kind: str):
        def count(module, inputs, output):
            n = output.numel()
            if kind == "norm":
                n *= 2
            elif kind == "pool":
                n = inputs[0].numel()
            counts[part] = counts.get(part, 0) + n
        return count

    for name, module in model.named_modules():
        part = name.split(".")[0]
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            hooks.append(module.register_forward_hook(hook(part, "bias")))
        elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            hooks.append(module.register_forward_hook(hook(part, "norm")))
        elif isinstance(module, nn.ReLU):
            hooks.append(module.register_forward_hook(hook(part, "relu")))
        elif isinstance(module, nn.MaxPool2d):
            hooks.append(module.register_forward_hook(hook(part, "pool")))
    return hooks


@torch.no_grad()
def count_macs(model: nn.Module, height: int = 800, width: int = 1280, convention: str = "pytorch") -> dict[str, int]:
    """MACs of one forward pass on a (1, 3, height, width) image: total and per top-level part.

    ``convention="pytorch"``: convolutions and matrix products only (``FlopCounterMode``).
    ``convention="mmcv"``: plus what mmcv's ``get_flops`` adds, which the paper's Table 1 used
    (biases, normalisation, ReLU modules, max-pooling; see ``_mmcv_extra_hooks``). Our T-Head's
    ReLUs are functional calls, so, as in a count of the released code, they are not among them.
    Runs a real forward pass on zeros (a few seconds for R-50 at 1280x800 on a CPU).
    """
    if convention not in ("pytorch", "mmcv"):
        raise ValueError(f"convention: expected 'pytorch' or 'mmcv', got {convention!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    extra: dict[str, int] = {}
    hooks = _mmcv_extra_hooks(model, extra) if convention == "mmcv" else []
    counter = FlopCounterMode(display=False, depth=2)
    try:
        with counter:
            model(torch.zeros(1, 3, height, width, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    macs = dict(total=sum(flops.get("Global", {}).values()) // 2 + sum(extra.values()))
    for name, _ in model.named_children():
        macs[name] = sum(flops.get(f"{root}.{name}", {}).values()) // 2 + extra.get(name, 0)
    return macs


def measure_head_complexity(presets: Mapping[str, str] | None = None, height: int = 800, width: int = 1280) -> dict:
    """Build each preset (random weights, no download) and count it: {head: dict(head_params,
    total_params (trainable, as the paper counts), head_macs, total_macs)} at height x width.
    ``presets`` maps the head kind ("t_head", "parallel") to a preset name; default: the R-50 pair
    of Table 1. A few seconds per model on a CPU (one real forward pass at 1280x800)."""
    from tood_lib.config import get_preset
    from tood_lib.model.detector import build_model


    presets = presets or {"t_head": "tood_r50_fpn_1x_coco", "parallel": "atss_parallel_r50_fpn_1x_coco"}
    measured = {}
    for head, preset in presets.items():
        model = build_model(get_preset(preset))
        params, macs = count_parameters(model), count_macs(model, height, width)
        measured[head] = dict(head_params=params["head"], total_params=params["trainable"],
                              head_macs=macs["head"], total_macs=macs["total"])
    return measured


def complexity_table(measured: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """Counts from :func:`measure_head_complexity` beside the paper's Table 1 (ATSS rows = TOOD).

    One row per head; columns in pairs, ours then the paper's: head params (M), total params (M,
    trainable), head GMACs, total GMACs (the paper calls MACs "FLOPs")."""
    labels = {"t_head": "T-Head (TOOD)", "parallel": "parallel head (ATSS)"}
    rows = {}
    for head, m in measured.items():
        paper = PAPER_TABLE1[head]
        rows[labels.get(head, head)] = {
            "head params (M)": m["head_params"] / 1e6, "head params (M), paper": paper["head_params_m"],
            "total params (M)": m["total_params"] / 1e6, "total params (M), paper": paper["total_params_m"],
            "head GMACs": m["head_macs"] / 1e9, "head GMACs, paper": paper["head_gmacs"],
            "total GMACs": m["total_macs"] / 1e9, "total GMACs, paper": paper["total_gmacs"]}
    return pd.DataFrame.from_dict(rows, orient="index").round(2)


def head_complexity_table(height: int = 800, width: int = 1280) -> pd.DataFrame:
    """Table 1's size columns for the full R-50 models, counted by us and quoted from the paper."""
    return complexity_table(measure_head_complexity(height=height, width=width))
