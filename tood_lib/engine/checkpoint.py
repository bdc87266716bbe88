"""Our own checkpoints: written atomically, read back exactly.

A checkpoint is a ``torch.save``d dict with ``model`` (the state_dict), ``config`` (the resolved
Config as a dict, so a file says which network it holds), ``categories`` (the training data's
COCO categories in label order, or None) and anything else the caller adds
(optimiser, scheduler, epoch, ...). It is first written to a temporary file in the same folder
and then renamed over the target, so a crash mid-write never leaves a truncated checkpoint.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from tood_lib.config import Config


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to ``path`` via a temporary file + fsync + rename (atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, model: nn.Module, cfg: Config | None = None, **extra) -> None:
    """Write model weights (+ config and extras) atomically."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    cfg = cfg if cfg is not None else getattr(model, "cfg", None)
    extra.setdefault("categories", getattr(model, "categories", None))
    atomic_torch_save(dict(model=model.state_dict(), config=cfg.to_dict() if cfg is not None else None, **extra), path)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, map_location="cpu") -> dict:
    """Read one of our checkpoints; with ``model``, load its weights strictly (every key, every shape).

    Returns the whole dict. A missing file or a file of another kind gets a clear error.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a checkpoint file (e.g. {path / 'last.pth'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 — any unpickling failure means "not our checkpoint"
        raise ValueError(f"{path} is not a readable tood_lib checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected a tood_lib checkpoint (a dict with 'model' and 'config'), found {keys}; "
                         "for official TOOD / MMDetection files use tood_lib.engine.official_checkpoint.load_official_checkpoint")
    if model is not None:
        target = getattr(model, "module", model)
        try:
            result = target.load_state_dict(ckpt["model"], strict=False)
        except RuntimeError as err:  # mis-shaped tensors
            raise ValueError(f"{path} does not fit this model: {err}") from None
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{path} does not fit this model: missing {result.missing_keys[:10]}, "
                             f"unexpected {result.unexpected_keys[:10]}")
    return ckpt
