"""What the notebooks share: where their figures go, and the trained model they look at.

The series shows one model, declared here (:data:`NOTEBOOK_MODEL`): TOOD seed 0 of the CPU bench
on the multi-level shapes (``ablations/bench.py``), the very run that notebooks 05 and 06 judge beside
its baselines. It is trained exactly as the grid trains it (``ablations.run_one.run_experiment``, the
feature cache first, then one thread; only the grid's analysis afterwards is left out), so on the
machine that ran the grid it is the grid's model bit for bit (another CPU may round differently); its
ATSS positives spread over P3-P6 like COCO's
(issue 19), which the main command's model on the single-level shapes cannot show (every positive
there sits on P3), and its 32 epochs settle by the grid's plateau rule.

:func:`workbook_run` returns its run folder: the folder named by ``$TOOD_WORKBOOK_RUN`` if set (any
run of our trainer); else ``runs/workbook/shapes/tood/seed0``, which is a link to the grid's finished run
when there is one, or else the same run trained there once (about 8 minutes on a CPU, fp32, one thread as
in the grid; later notebooks reuse it). Every notebook
prints what it shows with ``model_card.model_statement``, read from the folder, never typed.

Figures go to ``figures/`` (or ``TOOD_FIGURES_DIR``, which the tests set to a temporary folder).
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import torch

from tood_lib.engine.run_folder import load_run_model, run_checkpoints  # noqa: F401 (the notebooks import them from here)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The notebooks' model: (data set, experiment, seed) of the CPU grid on its active bench.
NOTEBOOK_MODEL = ("shapes", "tood", 0)
WORKBOOK_RUNS = REPO_ROOT / "runs" / "workbook"  # the notebooks' run folder (a link to the grid's run, or trained there)
MIN_DPI = 100  # every figure under figures/ is drawn at least this sharp (tests/test_figure_standards.py)


def figures_dir() -> Path:
    """The folder figures are saved in: ``$TOOD_FIGURES_DIR`` or the repository's ``figures/``."""
    path = Path(os.environ.get("TOOD_FIGURES_DIR", REPO_ROOT / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` (tight bounding box) and return the path."""
    if dpi < MIN_DPI:
        raise ValueError(f"save_figure({name!r}): {dpi} dpi is below the figures' {MIN_DPI}; small text would not be readable")
    path = figures_dir() / (name if name.endswith(".png") else f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def notebook_run():
    """The notebooks' model as a run of the grid (ablations.runs.Run)."""
    from tood_lib.ablations.runs import Run

    return Run(*NOTEBOOK_MODEL)


def workbook_config():
    """The Config of the notebooks' model: the grid's recipe for :data:`NOTEBOOK_MODEL` on the active
    bench (its canvas, anchor scale and schedule)."""
    from tood_lib.ablations.bench import schedule_overrides
    from tood_lib.ablations.grid import EXPERIMENTS, experiment_config
    from tood_lib.config import apply_overrides

    dataset, experiment, _ = NOTEBOOK_MODEL
    return apply_overrides(experiment_config(EXPERIMENTS[experiment], "cpu", dataset), schedule_overrides())


def _is_finished(run_dir: Path, cfg) -> bool:
    """A grid run folder that holds the whole of ``cfg``'s run: its result.json, its config, every epoch."""
    saved = run_dir / "config.json"
    return ((run_dir / "result.json").is_file() and saved.is_file()
            and json.loads(saved.read_text()) == json.loads(json.dumps(cfg.to_dict()))
            and all((run_dir / f"epoch_{e}.pth").is_file() for e in range(1, cfg.train.epochs + 1)))


def workbook_model_ready() -> bool:
    """True when :func:`workbook_run` would return at once, without training: ``$TOOD_WORKBOOK_RUN`` is set,
    or the notebooks' run (or the grid's, which it links to) is finished."""
    from tood_lib.ablations.runs import RUNS_DIR, run_dir as grid_run_dir

    if os.environ.get("TOOD_WORKBOOK_RUN"):
        return True
    cfg, run = workbook_config(), notebook_run()
    folder = grid_run_dir(run, WORKBOOK_RUNS)
    # the same two cases as workbook_run: finished here, or the grid's finished run to link (only while
    # nothing is here: a half-trained folder here is resumed, not replaced)
    return _is_finished(folder, cfg) or (not folder.exists() and _is_finished(grid_run_dir(run, RUNS_DIR), cfg))


def workbook_run(run_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The run folder the notebooks read (see the module docstring for the order of choice).

    ``run_dir`` (or ``$TOOD_WORKBOOK_RUN``) names an existing run folder to use; it must hold
    ``epoch_N.pth`` files from our trainer. Otherwise ``runs/workbook/<data set>/<experiment>/seed<N>``: a link
    to the grid's finished run of :data:`NOTEBOOK_MODEL` when there is one, else that run trained there once
    (resuming if interrupted). Returns the folder.
    """
    from tood_lib.ablations.runs import RUNS_DIR, run_dir as grid_run_dir

    explicit = run_dir or os.environ.get("TOOD_WORKBOOK_RUN")
    if explicit:
        path = Path(explicit)
        if not path.is_absolute():
            path = (REPO_ROOT / path) if (REPO_ROOT / path).exists() else path
        if not run_checkpoints(path):
            raise FileNotFoundError(f"{path} holds no epoch_N.pth checkpoints of our trainer; train one with "
                                    f"`python -m tood_lib train --preset tood_small --out {path}`, or unset "
                                    f"TOOD_WORKBOOK_RUN to let the notebooks train their own model")
        return path
    cfg, run = workbook_config(), notebook_run()
    folder = grid_run_dir(run, WORKBOOK_RUNS)
    if _is_finished(folder, cfg):
        return folder
    grid_folder = grid_run_dir(run, RUNS_DIR)
    if not folder.exists() and _is_finished(grid_folder, cfg):
        # the grid has trained it: runs/workbook/ links to that run, so that every notebook names one folder
        # whether the grid ran here or not
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.symlink_to(grid_folder.resolve(), target_is_directory=True)
        return folder
    WORKBOOK_RUNS.mkdir(parents=True, exist_ok=True)
    # One trainer at a time: a second notebook (or test) started meanwhile waits here, then reuses the run.
    with open(WORKBOOK_RUNS / ".train.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_finished(folder, cfg):
            return folder
        from tood_lib.ablations.run_grid import prepare_features
        from tood_lib.ablations.run_one import run_experiment

        print(f"[workbook] training the notebooks' model once: {run} of the CPU bench ({cfg.name}, "
              f"{cfg.train.epochs} epochs at {cfg.data.img_scale[0]} px, frozen backbone) -> {folder} (about 8 minutes "
              f"on a CPU; later notebooks reuse it)", flush=True)
        # Exactly as the grid does it, so that the model is the grid's own: the feature cache built first
        # (all threads), then the run on one thread, as each of the grid's run-one processes has; another
        # thread count sums in another order and ends at another model (box AP 0.390 against 0.382).
        prepare_features([run.dataset], out_root=WORKBOOK_RUNS, progress=progress)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:  # (run_experiment resumes from the folder's last.pth when an earlier call was interrupted)
            # Training and its evaluations only: the grid's analysis of this run (time-lapse, Table 6, level
            # audit) is in results/, and no notebook reads it from here; it would add half a minute.
            run_experiment(run, out_root=WORKBOOK_RUNS, progress=progress, analyse=False)
        finally:
            torch.set_num_threads(threads)
    return folder


def builtin_val_set(cfg, scenes: str = "shapes"):
    """A built-in data set's validation split (``scenes``: "shapes" or "misaligned"; the main
    command's single-level scenes), transformed as ``cfg`` expects (no flips)."""
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import CocoDetection

    return CocoDetection(build_builtin_dataset(scenes=scenes), "val", cfg.data, train=False)


def workbook_val_set(cfg, run_dir: str | Path | None = None):
    """The validation split of the data the notebooks' model (or the run in ``run_dir``) trained on,
    transformed as ``cfg`` expects (no flips)."""
    from tood_lib.ablations.runs import data_root
    from tood_lib.data.coco import CocoDetection
    from tood_lib.model_card import run_data_root

    root = run_data_root(run_dir if run_dir is not None else workbook_run(progress=False)) or data_root(NOTEBOOK_MODEL[0])
    return CocoDetection(root, "val", cfg.data, train=False, verbose=False)


if __name__ == "__main__":
    # `python -m tood_lib.workbook`: train (or link) the notebooks' model now; the test suite starts this
    # in the background (tests/conftest.py) so that training overlaps the tests that do not need it.
    import sys

    print(workbook_run(progress="--quiet" not in sys.argv[1:]))
