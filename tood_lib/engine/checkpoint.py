"""Our own checkpoints: written atomically, read back exactly.

A checkpoint is a ``torch.save``d dict with ``model`` (the state_dict), ``config`` (the resolved
Config as a dict, so a file says which network it holds), ``categories`` (the training data's
COCO categories in label order, or None) and anything else the caller adds
(optimiser, scheduler, epoch, ...). It is first written to a temporary file in the same folder
and then renamed over the target (``engine/atomic.py``), so a crash mid-write never leaves a
truncated checkpoint, and a full disk leaves the previous one intact and says what to delete.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from tood_lib.config import Config
from tood_lib.engine import atomic
from tood_lib.engine.atomic import megabytes


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to ``path`` via a temporary file + fsync + rename (atomic on POSIX and Windows).
    A full disk raises ``atomic.DiskFull`` naming the older checkpoints beside it that would free space."""
    atomic.atomic_torch_save(obj, path, advice=_checkpoints_to_free)


def _checkpoints_to_free(path: Path) -> str:
    """What to delete when ``path`` does not fit: the other ``*.pth`` files beside it that hold bytes of
    their own. An ``epoch_N.pth`` that is a hard link of ``path`` (the trainer's end-of-epoch copy,
    Trainer.keep_epoch_copy) shares its bytes: deleting it frees nothing, so it is not offered."""
    own = [(p, p.stat().st_size) for p in sorted(path.parent.glob("*.pth")) if p != path and p.stat().st_nlink == 1]
    if not own:
        return ("Nothing beside it frees space (an epoch_N.pth that is a hard link of the current checkpoint "
                "shares its bytes): delete other runs' epoch_N.pth or other large files on that disk.")
    names = ", ".join(f"{p.name} ({megabytes(n)})" for p, n in own)
    return (f"Deleting older checkpoints in {path.parent} frees {megabytes(sum(n for _, n in own))}: {names} "
            "(an epoch_N.pth holds that epoch's weights only, e.g. for a time-lapse; training resumes from last.pth).")


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
