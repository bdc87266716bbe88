"""What the notebooks share: where their figures go, and a small trained model to look at.

Every notebook starts from :func:`workbook_run`, a short run of the ``tood_small`` preset on the
built-in data (a few minutes on 2 CPU cores, trained once and then reused from ``runs/``), so
the series runs top to bottom on any laptop and in CI. Its epoch checkpoints let the notebooks
compare the model at different stages of training (the first epoch is the ATSS warm-up, the
rest are Task Alignment Learning). Point ``TOOD_WORKBOOK_RUN`` at another run folder, e.g.
``runs/quickstart`` after the README's main command, to look at a longer-trained model instead.

Figures go to ``figures/`` (or ``TOOD_FIGURES_DIR``, which the tests set to a temporary folder).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKBOOK_RUN = REPO_ROOT / "runs" / "workbook_small"
# A short version of the small preset's schedule: epoch 1 is the ATSS warm-up, epochs 2-4 are TAL,
# the LR drops by 10x for the last epoch. ~3 min with bf16 on 2 CPU cores.
WORKBOOK_OVERRIDES = ["train.epochs=4", "train.lr_steps=3", "train.warmup_iters=100", "tal.warmup_epochs=1"]


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


def _amp_for_cpu() -> str:
    if torch.cuda.is_available():
        return "auto"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "off"


def workbook_run(run_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The run folder the notebooks read: train the short run once (resuming if interrupted).

    ``run_dir`` (or ``$TOOD_WORKBOOK_RUN``) names an existing run folder to use instead; it must
    hold ``last.pth`` and ``epoch_N.pth`` files from our trainer. Returns the folder.
    """
    explicit = run_dir or os.environ.get("TOOD_WORKBOOK_RUN")
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
    done = WORKBOOK_RUN / f"epoch_{cfg.train.epochs}.pth"
    saved = WORKBOOK_RUN / "config.json"
    if done.is_file() and saved.is_file() and json.loads(saved.read_text()) == json.loads(json.dumps(cfg.to_dict())):
        return WORKBOOK_RUN
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.engine.trainer import Trainer

    root = build_builtin_dataset()
    print(f"[workbook] training the notebooks' model once: {cfg.name}, {cfg.train.epochs} epochs on the built-in "
          f"data -> {WORKBOOK_RUN} (a few minutes on a CPU; later notebooks reuse it)")
    trainer = Trainer(cfg, root, WORKBOOK_RUN, amp=_amp_for_cpu(), evaluate_at_end=False, progress=progress)
    if saved.is_file() and json.loads(saved.read_text()) == json.loads(json.dumps(cfg.to_dict())):
        trainer.resume()
    trainer.fit()
    return WORKBOOK_RUN


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

    ``epoch=0`` gives the untrained network: the same architecture with the seed-0 initialisation.
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
        return build_model(cfg).to(device).eval(), cfg
    epoch = last if epoch is None else epoch
    if epoch not in checkpoints:
        raise ValueError(f"{run_dir} has checkpoints for epochs {list(checkpoints)}, not {epoch}")
    return load_model(checkpoints[epoch], device=device)


def builtin_val_set(cfg):
    """The built-in data's validation split, transformed as the model expects (no flips)."""
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import CocoDetection

    return CocoDetection(build_builtin_dataset(), "val", cfg.data, train=False)
