"""The Trainer: the official schedule, AMP, DDP, exact resume, atomic checkpoints, metrics log.

One object, usable from a notebook (``Trainer(cfg, data_root, out_dir).fit()``, with callbacks
for live plots) and from the command line (``python -m tood_lib train``). What makes a run
*resumable exactly*:

- the data order of an epoch is a permutation drawn from (seed, epoch) alone, and every image's
  augmentation from (seed, epoch, index) (the dataset's ``set_epoch``), so the batches after a
  resume are the very batches the interrupted run would have seen;
- a checkpoint holds the model, the optimiser (momentum buffers), the grad scaler, the position
  (epoch, step in the epoch, global step) and the RNG states, and is written atomically;
- on the CPU, with ``deterministic=True``, every kernel is deterministic, so the resumed weights
  are bitwise those of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from tood_lib.config import Config
from tood_lib.engine.atomic import atomic_write_text
from tood_lib.engine.checkpoint import save_checkpoint
from tood_lib.engine.distributed import all_reduce_flag, barrier, init_distributed
from tood_lib.engine.schedule import scaled_schedule
from tood_lib.model.detector import build_model
from tood_lib.model.detector import TOOD, total_loss


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the step, the last good checkpoint is kept."""


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # optimiser steps already done in this epoch
    global_step: int = 0  # optimiser steps done since the start


class _LossModule(nn.Module):
    """Routes the loss through ``forward`` so that DistributedDataParallel syncs the gradients."""

    def __init__(self, model: TOOD):
        super().__init__()
        self.model = model

    def forward(self, batch, epoch: int):
        return self.model.loss(batch, epoch=epoch)


def _amp_dtype(amp: str, device: torch.device):
    """'auto' -> bf16 on GPUs that have it, fp16 (with a grad scaler) on older GPUs, off on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _drop_cut_line(log: Path) -> None:
    """Cut an append-only log back to its last whole line. A process killed while it appended a record
    leaves half a line at the end; the next record appended would be glued to it, and both be lost."""
    if not log.is_file():
        return
    with open(log, "r+b") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    """Train a preset on a COCO-format data set.

    Args:
        cfg: the Config (preset + overrides).
        data_root: folder with ``annotations/instances_{train,val}2017.json`` and ``{train,val}2017/``.
        out_dir: the run folder (config.json, metrics.jsonl, last.pth, epoch_N.pth, eval results).
        images_per_process: micro-batch per process; default: the recipe's batch / (processes x accumulate).
        accumulate: micro-batches per optimiser step (gradient accumulation).
        scale_lr: apply the linear LR / warm-up rule when the effective batch differs from the recipe's.
        amp: "auto", "bf16", "fp16" or "off".
        checkpoint_every: also write last.pth every N optimiser steps (0: only at epoch ends).
        max_steps: stop after this many optimiser steps in total (for tests and quick looks).
        deterministic: deterministic kernels (bitwise-reproducible resume on CPU).
        callbacks: objects with any of on_train_start(trainer), on_step_end(trainer, record),
            on_epoch_end(trainer, record), on_eval(trainer, result), on_train_end(trainer).
        load_backbone_weights: load the recipe's ImageNet weights (default: if it names any).
        eval_every: evaluate on the val split every N epochs (0: only at the end).
        eval_epochs: also evaluate after these epochs (1-based).
        feature_cache: a folder of cached backbone features, ``train.pt`` and ``val.pt``
            (engine/feature_cache.py; built there if missing): training and evaluation then skip the
            backbone, which must be fully frozen.
    """

    def __init__(self, cfg: Config, data_root, out_dir, *, images_per_process: int | None = None,
                 accumulate: int = 1, scale_lr: bool = True, amp: str = "auto", device: str | None = None,
                 seed: int = 0, num_workers: int = 0, checkpoint_every: int = 0, max_steps: int | None = None,
                 deterministic: bool = False, callbacks=(), load_backbone_weights: bool | None = None,
                 eval_every: int = 0, evaluate_at_end: bool = True, progress: bool = True,
                 feature_cache: str | Path | None = None, eval_epochs=()):
        from tood_lib.data.coco import CocoDetection

        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.rank, self.world, local_rank = init_distributed(self.device.type)
        self.distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", local_rank)
        self.seed, self.num_workers, self.accumulate = seed, num_workers, accumulate
        self.checkpoint_every, self.max_steps, self.callbacks = checkpoint_every, max_steps, list(callbacks)
        self.eval_every, self.evaluate_at_end, self.progress = eval_every, evaluate_at_end, progress
        self.eval_epochs = {int(e) for e in eval_epochs}
        if deterministic:
            torch.use_deterministic_algorithms(True)
        self._seed_everything(seed)

        self.per_process = images_per_process or max(1, cfg.train.batch_size // (self.world * accumulate))
        self.effective_batch = self.per_process * self.world * accumulate
        self.schedule = scaled_schedule(cfg.train, self.effective_batch, scale_lr)

        self.data_root = Path(data_root)
        self.train_set = CocoDetection(self.data_root, "train", cfg.data, train=True, seed=seed,
                                       max_images=cfg.data.train_images)
        # The val split is checked now, so that a broken one stops the run before training, not after.
        val_file = self.data_root / "annotations" / "instances_val2017.json"
        needs_val = evaluate_at_end or eval_every > 0 or bool(eval_epochs)
        self.val_set = (CocoDetection(self.data_root, "val", cfg.data, train=False)
                        if needs_val or val_file.exists() else None)
        if len(self.train_set) < self.per_process * self.world * accumulate:
            raise ValueError(f"the training split has {len(self.train_set)} images, fewer than one optimiser "
                             f"step needs ({self.effective_batch})")
        num_classes = len(self.train_set.cat_ids)
        if num_classes != cfg.model.num_classes:
            raise ValueError(f"the data set at {self.data_root} has {num_classes} classes but the model "
                             f"{cfg.name} has {cfg.model.num_classes}; override model.num_classes={num_classes}")

        load = bool(cfg.model.backbone_weights) if load_backbone_weights is None else load_backbone_weights
        self.model = build_model(cfg, load_backbone_weights=load and self.rank == 0).to(self.device)
        if self.is_main:
            print(f"[train] backbone: ResNet-{cfg.model.depth}, "
                  + (f"weights {cfg.model.backbone_weights!r}" if load else "random init")
                  + f", frozen_stages={cfg.model.frozen_stages}, BatchNorm "
                  + ("frozen" if cfg.model.norm_eval else "trained"), flush=True)
        self.model.categories = [{"id": c, "name": n} for c, n in zip(self.train_set.cat_ids, self.train_set.class_names)]
        if self.val_set is not None:  # a val split with other categories would be scored on the wrong classes
            from tood_lib.engine.inference import check_categories

            check_categories(self.model, self.val_set)
        if self.distributed:  # rank 0 may have loaded ImageNet weights: everyone starts from its copy
            for tensor in self.model.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        if feature_cache is not None:  # after the broadcast: every rank caches the same weights' features
            from tood_lib.engine.feature_cache import cached_training_features

            splits = [self.train_set] + ([self.val_set] if self.val_set is not None else [])
            for rank_turn in (True, False):  # rank 0 builds the files, then the others read them
                if self.is_main == rank_turn:
                    for dataset in splits:
                        cached_training_features(self.model.backbone, dataset, Path(feature_cache) / f"{dataset.split}.pt",
                                                 progress=progress and self.is_main)
                barrier()
        self.loss_module = _LossModule(self.model)
        if self.distributed:
            if self.is_main:
                print(f"[train] process group: {torch.distributed.get_backend()}, {self.world} process"
                      f"{'es' if self.world > 1 else ''} (DistributedDataParallel)", flush=True)
            self.loss_module = DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=self.schedule.base_lr, momentum=cfg.train.momentum,
                                         weight_decay=cfg.train.weight_decay)
        self.amp_dtype = _amp_dtype(amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.state = TrainState()
        self.steps_per_epoch = len(self.train_set) // (self.per_process * self.world * accumulate)
        self.last_eval = None

    # ------------------------------------------------------------------ bookkeeping
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _rng_state(self) -> dict:
        # numpy's state as plain tensors and numbers, so that checkpoints load with weights_only=True
        name, keys, pos, has_gauss, cached = np.random.get_state()
        numpy_state = dict(name=name, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                           has_gauss=int(has_gauss), cached_gaussian=float(cached))
        state = dict(python=random.getstate(), numpy=numpy_state, torch=torch.get_rng_state())
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _set_rng_state(self, state: dict) -> None:
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def save(self, path: Path) -> None:
        if not self.is_main:
            return
        save_checkpoint(path, self.model, self.cfg, optimizer=self.optimizer.state_dict(),
                        scaler=self.scaler.state_dict(), state=self.state.__dict__.copy(),
                        rng=self._rng_state(), effective_batch=self.effective_batch, seed=self.seed)

    def keep_epoch_copy(self, epoch: int) -> None:
        """Keep last.pth, just written at the end of ``epoch``, as epoch_N.pth too.

        A hard link, not a second file: the two are identical, and a full R50 checkpoint with its
        optimiser state is 257 MB. The next save replaces last.pth by a rename (atomic_torch_save),
        which leaves the linked epoch_N.pth pointing at this epoch's bytes. Where the file system
        has no hard links, a copy.
        """
        if not self.is_main:
            return
        last, kept = self.out_dir / "last.pth", self.out_dir / f"epoch_{epoch}.pth"
        kept.unlink(missing_ok=True)
        try:
            os.link(last, kept)
        except OSError:
            shutil.copyfile(last, kept)

    def _remove_earlier_epoch_checkpoints(self) -> None:
        """A fresh run in a folder that holds an earlier run's epoch_N.pth: remove them, saying so. Left
        there, an earlier 12-epoch run's epoch_11/12.pth would sit beside this 10-epoch run's and be
        read as its last epochs (a notebook's "last checkpoint" would be another model)."""
        stale = sorted(self.out_dir.glob("epoch_*.pth"))
        if stale:
            print(f"[train] a fresh run in {self.out_dir}: removing {len(stale)} epoch checkpoint(s) of the earlier run "
                  f"there ({', '.join(p.name for p in stale[:6])}{', ...' if len(stale) > 6 else ''})", flush=True)
            for path in stale:
                path.unlink()

    def resume(self, path: Path | None = None) -> bool:
        """Continue from ``path`` (default: the run folder's last.pth). False when there is none."""
        path = Path(path) if path is not None else self.out_dir / "last.pth"
        if not path.is_file():
            return False
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        self._set_rng_state(ckpt["rng"])
        if ckpt.get("effective_batch") not in (None, self.effective_batch):
            raise ValueError(f"{path} was trained with {ckpt['effective_batch']} images per step, this run has "
                             f"{self.effective_batch}; an exact resume needs the same batch")
        return True

    def _log(self, record: dict) -> None:
        name = "metrics.jsonl" if self.is_main else f"metrics.rank{self.rank}.jsonl"
        with open(self.out_dir / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _callback(self, event: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, event, None)
            if fn is not None:
                fn(self, *args)

    # ------------------------------------------------------------------ data
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches of an epoch: dataset indices, from a (seed, epoch) permutation."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_set), generator=g).tolist()
        per_step = self.per_process * self.world
        batches = []
        for s in range(self.steps_per_epoch * self.accumulate):
            chunk = order[s * per_step:(s + 1) * per_step]
            batches.append(chunk[self.rank * self.per_process:(self.rank + 1) * self.per_process])
        return batches

    def _loader(self, batches: list[list[int]]):
        from tood_lib.data.coco import collate

        return torch.utils.data.DataLoader(self.train_set, batch_sampler=batches, collate_fn=collate,
                                           num_workers=self.num_workers, persistent_workers=False)

    # ------------------------------------------------------------------ training
    def fit(self):
        """Train to the end of the schedule (or ``max_steps``), evaluate, return the last EvalResult (or None)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = self.out_dir / ("metrics.jsonl" if self.is_main else f"metrics.rank{self.rank}.jsonl")
        if self.state.global_step == 0:  # a fresh run: no stale records from an earlier run in this folder
            log.unlink(missing_ok=True)
            if self.is_main:
                self._remove_earlier_epoch_checkpoints()
        else:
            _drop_cut_line(log)
        if self.is_main:
            atomic_write_text(self.out_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2))
            # what config.json cannot say: the data the run trains on (a model card names it, model_card.py)
            atomic_write_text(self.out_dir / "run.json", json.dumps(dict(
                data_root=os.path.abspath(self.data_root), seed=self.seed, effective_batch=self.effective_batch,
                precision=str(self.amp_dtype).replace("torch.", "") + " autocast" if self.amp_dtype else "fp32"), indent=2))
        self._callback("on_train_start")
        epochs = self.cfg.train.epochs
        stopped = False
        while self.state.epoch < epochs and not stopped:
            stopped = self._train_epoch(self.state.epoch)
            if not stopped:
                epoch_done = self.state.epoch
                self.state = TrainState(epoch_done + 1, 0, self.state.global_step)
                self.save(self.out_dir / "last.pth")
                self.keep_epoch_copy(epoch_done + 1)
                record = dict(kind="epoch", epoch=epoch_done + 1, step=self.state.global_step)
                due = (self.eval_every and (epoch_done + 1) % self.eval_every == 0) or epoch_done + 1 in self.eval_epochs
                if due and epoch_done + 1 < epochs:
                    record["box_ap"] = self.evaluate().box_ap if self.is_main else None
                if self.is_main:
                    self._log(record)
                self._callback("on_epoch_end", record)
        if stopped:
            self.save(self.out_dir / "last.pth")
        barrier()
        result = self.evaluate() if self.evaluate_at_end and self.is_main else self.last_eval
        self._callback("on_train_end")
        return result

    def _train_epoch(self, epoch: int) -> bool:
        """Run the rest of ``epoch``; True if ``max_steps`` stopped it early."""
        self.model.train()
        self.model.epoch = epoch  # the ATSS warm-up → TAL switch reads this (official HeadHook)
        self.train_set.set_epoch(epoch)
        batches = self.epoch_batches(epoch)[self.state.step_in_epoch * self.accumulate:]
        loader = iter(self._loader(batches))
        bar = tqdm(total=self.steps_per_epoch, initial=self.state.step_in_epoch, desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
                   disable=not (self.progress and self.is_main), dynamic_ncols=True, leave=True)
        tick = time.perf_counter()
        while self.state.step_in_epoch < self.steps_per_epoch:
            if self.max_steps is not None and self.state.global_step >= self.max_steps:
                bar.close()
                return True
            lr = self.schedule(self.state.global_step, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            logged: dict[str, float] = {}
            for micro in range(self.accumulate):
                batch, _ = next(loader)
                batch = batch.to(self.device)
                sync = nullcontext() if micro == self.accumulate - 1 or not self.distributed else self.loss_module.no_sync()
                with sync:
                    with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                        enabled=self.amp_dtype is not None):
                        losses = self.loss_module(batch, epoch)
                    loss = total_loss(losses)
                    if all_reduce_flag(not torch.isfinite(loss).item(), self.device):
                        bar.close()
                        raise TrainingDiverged(
                            f"non-finite loss at epoch {epoch + 1}, step {self.state.step_in_epoch + 1} "
                            f"(global step {self.state.global_step + 1}): "
                            + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                            + f"; the last good checkpoint is kept at {self.out_dir / 'last.pth'}")
                    self.scaler.scale(loss / self.accumulate).backward()
                for k, v in losses.items():
                    logged[k] = logged.get(k, 0.0) + float(v.detach()) / self.accumulate
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.state.step_in_epoch += 1
            self.state.global_step += 1

            now = time.perf_counter()
            images_per_s = self.effective_batch / max(now - tick, 1e-9)
            tick = now
            record = dict(kind="step", epoch=epoch + 1, step=self.state.global_step, lr=lr,
                          loss=sum(v for k, v in logged.items() if k.startswith("loss")), **logged,
                          images_per_s=images_per_s, memory_mb=_memory_mb(self.device), rank=self.rank,
                          phase="atss-warmup" if epoch < self.cfg.tal.warmup_epochs else "tal")
            self._log(record)
            self._callback("on_step_end", record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", cls=f"{logged['loss_cls']:.3f}",
                            bbox=f"{logged['loss_bbox']:.3f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}",
                            mem=f"{record['memory_mb']:.0f}M", refresh=False)
            bar.update(1)
            if self.checkpoint_every and self.state.global_step % self.checkpoint_every == 0:
                self.save(self.out_dir / "last.pth")
        bar.close()
        return False

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "val"):
        """COCO evaluation of the current model on a split; writes results under the run folder."""
        from tood_lib.data.coco import CocoDetection
        from tood_lib.engine.inference import evaluate_dataset

        if self.val_set is None or split != "val":
            dataset = CocoDetection(self.data_root, split, self.cfg.data, train=False)
            if split == "val":
                self.val_set = dataset
        else:
            dataset = self.val_set
        result = evaluate_dataset(self.model, dataset, out_dir=self.out_dir, device=self.device,
                                  amp_dtype=self.amp_dtype, progress=self.progress)
        self.last_eval = result
        self._log(dict(kind="eval", split=split, epoch=self.state.epoch, step=self.state.global_step,
                       **{k: float(v) for k, v in result.stats.items()}))
        self._callback("on_eval", result)
        return result
