"""What the notebooks share: where their figures go, and a small trained model to look at.

Every notebook starts from :func:`workbook_run`, the run folder of a trained ``tood_small`` on the
built-in data. It is, in this order: the folder named by ``$TOOD_WORKBOOK_RUN``; the README's main
command's run (``runs/quickstart``, 10 epochs) once that has finished; or else a short run of 200
steps that the first notebook trains (a few minutes on 2 CPU cores, then reused from ``runs/``), so
the series runs top to bottom on any laptop and in CI without a manual step. Its epoch
checkpoints let the notebooks compare the model at different stages of training (the first epoch
is the ATSS warm-up, the rest are Task Alignment Learning).

Figures go to ``figures/`` (or ``TOOD_FIGURES_DIR``, which the tests set to a temporary folder).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKBOOK_RUN = REPO_ROOT / "runs" / "workbook_small"
# A short version of the small preset's schedule, 200 optimiser steps: the first 400 training
# images, epoch 1 is the ATSS warm-up, epochs 2-4 are TAL, the LR drops by 10x for the last epoch.
# About 1.5 min on 2 CPU cores with bf16 kernels, 4 min without.
WORKBOOK_OVERRIDES = ["data.train_images=400", "train.epochs=4", "train.lr_steps=3", "train.warmup_iters=50",
                      "tal.warmup_epochs=1"]


def figures_dir() -> Path:
    """The folder figures are saved in: ``$TOOD_FIGURES_DIR`` or the repository's ``figures/``."""
    path = Path(os.environ.get("TOOD_FIGURES_DIR", REPO_ROOT / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` (tight bounding box) and return the path."""
    path = figures_dir() / (name if name.endswith(".png") else f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def workbook_config():
    """The Config of the notebooks' short training run."""
    from tood_lib.config import apply_overrides, get_preset

    return apply_overrides(get_preset("tood_small"), WORKBOOK_OVERRIDES)


def workbook_run(run_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The run folder the notebooks read (see the module docstring for the order of choice).

    ``run_dir`` (or ``$TOOD_WORKBOOK_RUN``) names an existing run folder to use; it must hold
    ``epoch_N.pth`` files from our trainer. Otherwise the finished main-command run, or else the
    short run, trained once here (resuming if interrupted). Returns the folder.
    """
    explicit = run_dir or os.environ.get("TOOD_WORKBOOK_RUN") or _finished_quickstart()
    if explicit:
        path = Path(explicit)
        if not path.is_absolute():
            path = (REPO_ROOT / path) if (REPO_ROOT / path).exists() else path
        if not run_checkpoints(path):
            raise FileNotFoundError(f"{path} holds no epoch_N.pth checkpoints of our trainer; train one with "
                                    f"`python -m tood_lib train --preset tood_small --out {path}`, or unset "
                                    f"TOOD_WORKBOOK_RUN to let the notebooks train their own short run")
        return path
    cfg = workbook_config()
    WORKBOOK_RUN.mkdir(parents=True, exist_ok=True)
    # One trainer at a time: a second notebook (or test) started meanwhile waits here, then reuses the run.
    with open(WORKBOOK_RUN.parent / f".{WORKBOOK_RUN.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = WORKBOOK_RUN / "config.json"
        same = saved.is_file() and json.loads(saved.read_text()) == json.loads(json.dumps(cfg.to_dict()))
        if same and (WORKBOOK_RUN / f"epoch_{cfg.train.epochs}.pth").is_file():
            return WORKBOOK_RUN
        from tood_lib.data.builtin import build_builtin_dataset
        from tood_lib.engine.trainer import Trainer
        from tood_lib.quickstart import cpu_amp

        root = build_builtin_dataset()
        print(f"[workbook] training the notebooks' model once: {cfg.name}, {cfg.train.epochs} short epochs on the "
              f"built-in data -> {WORKBOOK_RUN} (a few minutes on a CPU; later notebooks reuse it)", flush=True)
        if not same:  # another schedule's checkpoints would be mistaken for this one's
            for old in run_checkpoints(WORKBOOK_RUN).values():
                old.unlink()
            (WORKBOOK_RUN / "last.pth").unlink(missing_ok=True)
        trainer = Trainer(cfg, root, WORKBOOK_RUN, amp=cpu_amp(), evaluate_at_end=False, progress=progress)
        if same:
            trainer.resume()
        trainer.fit()
    return WORKBOOK_RUN


def _finished_quickstart() -> Path | None:
    """The README's main command's run folder, if that run has finished (a much better-trained model)."""
    quickstart = REPO_ROOT / "runs" / "quickstart"
    try:
        epochs = json.loads((quickstart / "config.json").read_text())["train"]["epochs"]
    except (OSError, ValueError, KeyError):
        return None
    return quickstart if (quickstart / f"epoch_{epochs}.pth").is_file() else None


def run_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """{epoch: path} of a run folder's ``epoch_N.pth`` files, in epoch order."""
    found = {}
    for path in Path(run_dir).glob("epoch_*.pth"):
        match = re.fullmatch(r"epoch_(\d+)\.pth", path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def load_run_model(run_dir: str | Path, epoch: int | None = None, device: str = "cpu"):
    """(model in eval mode, Config) from a run folder's ``epoch_N.pth`` (default: the last epoch).

    ``epoch=0`` gives the network as its training started: the seed-0 initialisation, with the
    recipe's pretrained backbone where it has one (as the trainer builds it).
    """
    from tood_lib.api import load_model
    from tood_lib.config import build_model

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


def builtin_val_set(cfg, scenes: str = "shapes"):
    """A built-in data set's validation split (``scenes``: "shapes" or "misaligned"), transformed as
    the model expects (no flips)."""
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import CocoDetection

    return CocoDetection(build_builtin_dataset(scenes=scenes), "val", cfg.data, train=False)
