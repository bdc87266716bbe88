"""A training run's folder (``python -m tood_lib train --out DIR``, or a grid run): which epochs it holds
(``epoch_N.pth``), and the model of any of them.

The trainer writes ``config.json`` beside the checkpoints; an ``epoch_N.pth`` beyond its schedule is an
earlier, longer run's leftover and is not listed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from tood_lib.api import load_model
from tood_lib.model.detector import build_model


def run_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """{epoch: path} of a run folder's ``epoch_N.pth`` files, in epoch order; with a ``config.json``,
    only the epochs of its schedule (a later epoch's file is an earlier, longer run's leftover)."""
    run_dir = Path(run_dir)
    try:
        epochs = json.loads((run_dir / "config.json").read_text())["train"]["epochs"]
    except (OSError, ValueError, KeyError):
        epochs = None
    found = {}
    for path in run_dir.glob("epoch_*.pth"):
        match = re.fullmatch(r"epoch_(\d+)\.pth", path.name)
        if match and (epochs is None or int(match.group(1)) <= epochs):
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def load_run_model(run_dir: str | Path, epoch: int | None = None, device: str = "cpu"):
    """(model in eval mode, Config) from a run folder's ``epoch_N.pth`` (default: the last epoch).

    ``epoch=0`` gives the network as its training started: the seed-0 initialisation, with the
    recipe's pretrained backbone where it has one (as the trainer builds it).
    """
    checkpoints = run_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"no epoch_N.pth checkpoints in {run_dir}")
    last = max(checkpoints)
    if epoch == 0:
        _, cfg = load_model(checkpoints[last], device=device)
        torch.manual_seed(0)
        return build_model(cfg, load_backbone_weights=bool(cfg.model.backbone_weights)).to(device).eval(), cfg
    epoch = last if epoch is None else epoch
    if epoch not in checkpoints:
        raise ValueError(f"{run_dir} has checkpoints for epochs {list(checkpoints)}, not {epoch}")
    return load_model(checkpoints[epoch], device=device)
