"""The model card: what a run folder's model is, read from the folder, refusing an earlier run's leftovers."""
import json

import pytest
import torch

from tood_lib.config import get_preset
from tood_lib.model_card import STATEMENT_PREFIX, model_card, model_statement
from tood_lib.engine.run_folder import run_checkpoints


def _fake_run(folder, epochs=3, done=3, lr_steps=(2,)):
    """A run folder as our trainer leaves it, without the weights: config.json, epoch_N.pth with the
    config and train state, metrics.jsonl with one evaluation."""
    cfg = get_preset("tood_small")
    cfg.train.epochs, cfg.train.lr_steps = epochs, lr_steps
    config = json.loads(json.dumps(cfg.to_dict()))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    for epoch in range(1, done + 1):
        torch.save(dict(config=config, state=dict(epoch=epoch, step_in_epoch=0, global_step=125 * epoch)),
                   folder / f"epoch_{epoch}.pth")
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        dict(kind="eval", split="val", epoch=done, step=125 * done, AP=0.4),
        dict(kind="eval", split="val", epoch=done, step=125 * done, AP=0.5))) + "\n")  # the last record of an epoch wins
    (folder / "run.json").write_text(json.dumps(dict(data_root=str(folder.parent / "data"))))
    return config


def test_card_reads_schedule_steps_data_and_ap(tmp_path):
    _fake_run(tmp_path / "run")
    card = model_card(tmp_path / "run")
    assert (card.preset, card.epoch, card.epochs, card.steps, card.box_ap) == ("tood_small", 3, 3, 375, 0.5)
    assert card.img_scale == [160, 160] and card.lr_steps == [2] and card.data_root.endswith("data")
    early = model_card(tmp_path / "run", epoch=1)
    assert early.steps == 125 and early.box_ap is None
    text = model_statement(card)
    assert text.startswith(STATEMENT_PREFIX) and "epoch 3 of 3" in text and "375 optimiser steps" in text
    assert "box AP 0.500" in text and "160×160 px" in text and "after epoch 2;" in text
    assert "not evaluated" in model_statement(early)


def test_card_refuses_an_earlier_runs_checkpoint(tmp_path):
    config = _fake_run(tmp_path / "run", epochs=3, done=2)
    with pytest.raises(FileNotFoundError, match="not reached epoch 3"):
        model_card(tmp_path / "run")  # the schedule's last epoch is not there yet
    other = dict(config, name="another_run")
    torch.save(dict(config=other, state=dict(epoch=2, step_in_epoch=0, global_step=250)), tmp_path / "run" / "epoch_2.pth")
    with pytest.raises(ValueError, match="another run"):
        model_card(tmp_path / "run", epoch=2)
    with pytest.raises(ValueError, match="outside its schedule"):
        model_card(tmp_path / "run", epoch=4)


def test_checkpoints_beyond_the_schedule_are_not_the_runs(tmp_path):
    _fake_run(tmp_path / "run", epochs=3, done=3)
    (tmp_path / "run" / "epoch_12.pth").write_bytes(b"left by a 12-epoch run")
    assert list(run_checkpoints(tmp_path / "run")) == [1, 2, 3]
