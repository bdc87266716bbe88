"""What a trained model is, read from its run folder: never typed into a notebook.

A notebook that shows a trained model starts with :func:`model_card` and prints
:func:`model_statement`: the run folder, the preset, the epoch shown out of the schedule's, the
optimiser steps, the resolution, the data set and the box AP, each read from the checkpoint, the
folder's ``config.json``, its ``run.json`` (the data root, written by the trainer) and its
``metrics.jsonl``. Prose about "the model" is rendered from the card, so it cannot describe another run.

The card refuses a checkpoint that does not belong to the folder's run (its config differs from
``config.json``, or its epoch lies beyond the schedule): that is an earlier run's leftover, and a
figure drawn from it would describe a model nobody asked for.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# The statement's fixed beginning, so that a test can find it in a notebook's committed outputs.
STATEMENT_PREFIX = "**The model shown:**"


@dataclass
class ModelCard:
    run: str             # run folder (relative to the repository when inside it)
    preset: str          # cfg.name
    epoch: int           # the checkpoint's epoch
    epochs: int          # the schedule's epochs (config.json)
    steps: int           # optimiser steps done at that epoch
    lr_steps: list       # epochs after which the LR drops x10
    warmup_epochs: int   # epochs of ATSS before TAL
    img_scale: list      # [width, height] the images are resized to
    batch_size: int
    train_images: int | None   # None: the whole training split
    backbone: str        # e.g. "ResNet-18 (builtin_shapes weights, frozen)"
    data_root: str | None      # from run.json; None for a run made before the trainer wrote it
    box_ap: float | None       # COCO box AP of this epoch on the val split, when the run evaluated it

    def to_dict(self) -> dict:
        return asdict(self)


def _short(path: str | Path) -> str:
    """Relative to the repository when inside it (without resolving links: a linked runs/ stays runs/)."""
    path = Path(os.path.abspath(path))
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _eval_ap(run_dir: Path, epoch: int, epochs: int) -> float | None:
    """The box AP logged for ``epoch`` in metrics.jsonl (the last such record), or from
    coco_stats_val.csv when ``epoch`` is the schedule's last and the log has none."""
    ap = None
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if record.get("kind") == "eval" and record.get("split", "val") == "val" and record.get("epoch") == epoch:
                ap = record.get("AP", ap)
    stats = run_dir / "coco_stats_val.csv"
    if ap is None and epoch == epochs and stats.is_file():
        import pandas as pd

        table = pd.read_csv(stats, index_col=0).iloc[:, 0]
        ap = float(table["AP"]) if "AP" in table.index else None
    return None if ap is None else float(ap)


def run_data_root(run_dir: str | Path) -> Path | None:
    """The data set a run of our trainer trained on: its ``run.json`` (the trainer writes it), else a grid
    run's ``result.json`` (its data set on its bench); None when the folder records neither."""
    run_dir = Path(run_dir)
    info, result = run_dir / "run.json", run_dir / "result.json"
    if info.is_file():
        return Path(json.loads(info.read_text())["data_root"])
    if result.is_file():
        from tood_lib.ablations.runs import data_root

        record = json.loads(result.read_text())
        return data_root(record["dataset"], record.get("bench"))
    return None


def model_card(run_dir: str | Path, epoch: int | None = None) -> ModelCard:
    """The card of the model in ``run_dir`` at ``epoch`` (default: the schedule's last epoch, which must
    exist). Raises FileNotFoundError for a folder without config.json or without that checkpoint, and
    ValueError for a checkpoint that belongs to another run (config or epoch outside config.json's)."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.json: not a run folder of our trainer")
    config = json.loads(config_file.read_text())
    epochs = int(config["train"]["epochs"])
    epoch = epochs if epoch is None else int(epoch)
    if not 1 <= epoch <= epochs:
        raise ValueError(f"{run_dir}: epoch {epoch} is outside its schedule of {epochs} epochs (config.json)")
    checkpoint = run_dir / f"epoch_{epoch}.pth"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint} is missing: the run in {run_dir} has not reached epoch {epoch}")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if json.loads(json.dumps(saved["config"])) != config:
        raise ValueError(f"{checkpoint} was written by another run than {config_file} describes (an earlier run's "
                         f"leftover): delete the folder's epoch_*.pth and train again")
    if int(saved["state"]["epoch"]) != epoch:
        raise ValueError(f"{checkpoint} holds epoch {saved['state']['epoch']}, not {epoch}")
    data_root = run_data_root(run_dir)
    model, data, train = config["model"], config["data"], config["train"]
    frozen = model.get("frozen_stages", -1)
    backbone = (f"ResNet-{model['depth']} ({model.get('backbone_weights') or 'random'} weights, "
                + ("frozen)" if frozen >= 4 else f"stages up to {frozen} frozen)" if frozen >= 1 else "trained)"))
    return ModelCard(run=_short(run_dir), preset=config["name"], epoch=epoch, epochs=epochs,
                     steps=int(saved["state"]["global_step"]), lr_steps=list(train["lr_steps"]),
                     warmup_epochs=int(config["tal"]["warmup_epochs"]), img_scale=list(data["img_scale"]),
                     batch_size=int(train["batch_size"]), train_images=data.get("train_images"),
                     backbone=backbone,
                     data_root=_short(data_root) if data_root else None, box_ap=_eval_ap(run_dir, epoch, epochs))


def model_statement(card: ModelCard) -> str:
    """One Markdown line a notebook prints under its first model cell; begins with STATEMENT_PREFIX."""
    width, height = card.img_scale
    images = "every training image" if card.train_images is None else f"{card.train_images} training images"
    ap = "not evaluated at this epoch" if card.box_ap is None else f"box AP {card.box_ap:.3f} on the val split"
    drops = " and ".join(str(e) for e in card.lr_steps)
    warmup = "the first epoch" if card.warmup_epochs == 1 else f"the first {card.warmup_epochs} epochs"
    return (f"{STATEMENT_PREFIX} `{card.preset}` from `{card.run}`, epoch {card.epoch} of {card.epochs} "
            f"({card.steps} optimiser steps, batch {card.batch_size}, {images}), {width}×{height} px, {card.backbone}; "
            f"ATSS for {warmup}, then TAL; LR ×0.1 after epoch{'s' if len(card.lr_steps) > 1 else ''} {drops}; "
            f"data `{card.data_root or 'not recorded'}`; {ap}.")
