"""Run the ablation grid at CPU scale: resumable, two runs at a time, with a progress display.

``python -m tood_lib ablations run`` (``scripts/ablations.sh``) does, in order:

1. take the runs folder's lock (``grid_lock.py``: a second command on the same folder refuses);
2. build the two built-in data sets (shapes, misaligned) and, per data set, cache the frozen
   backbone's outputs for every train and val image (``engine/feature_cache.py``; a damaged cache
   is rebuilt);
3. train every (data set, experiment, seed) of the grid whose ``result.json`` is missing, each in
   its own process (``python -m tood_lib ablations run-one``, ``run_one.py``) with one thread, two
   processes at once on two cores (the small convolutions here use one core badly, so two one-thread
   runs finish sooner than one two-thread run after another). An interrupted run continues from its
   ``last.pth``;
4. after every finished run, collect everything into ``results/`` (``collect.py``; committed, and with
   ``--commit`` git-committed), measure the finished runs of the diagnosed experiments
   (``diagnose.py``: the ranking diagnosis and the layer attention, once per run) and record the
   invocation's wall time.

Finished runs are never redone; delete a run's folder to redo it. What survives a crash: every file
is written atomically (``engine/atomic.py``), so a command killed at any point is resumed by running
it again, and the results it then collects are those of an uninterrupted command.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from tood_lib.ablations.collect import collect_results
from tood_lib.ablations.diagnose import DIAGNOSED, diagnose_grid
from tood_lib.ablations.grid import EXPERIMENTS, REPO_ROOT, experiment_config
from tood_lib.ablations.grid_lock import grid_lock
from tood_lib.ablations.run_one import TIMELAPSE_IMAGES
from tood_lib.ablations.runs import (RESULTS_DIR, RUNS_DIR, Run, data_root, feature_dir, grid_of, grid_runs,
                                     pending_runs, read_result, run_dir, run_outcomes)
from tood_lib.engine.atomic import atomic_write_text, remove_stale_temps


HEARTBEAT_SECONDS = 60  # how often a running grid records its wall time between finished runs


class RunsFailed(RuntimeError):
    """Some runs of the grid failed; the message names each and its log (rerunning retries them)."""


def prepare_features(datasets, out_root: str | Path = RUNS_DIR, progress: bool = True,
                     overrides: list[str] | None = None, bench: str | None = None) -> None:
    """Build each data set and its feature caches once, before runs start in parallel. A cache that is
    not the file that was written (truncated, corrupted: ``feature_cache.cache_problem``) is rebuilt."""
    from tood_lib.config import apply_overrides
    from tood_lib.data.coco import CocoDetection
    from tood_lib.engine.feature_cache import cache_problem, cached_training_features
    from tood_lib.model.detector import build_model

    for dataset in datasets:
        cfg = apply_overrides(experiment_config("tood", "cpu", dataset, bench), overrides or [])
        root = data_root(dataset, bench)
        folder = feature_dir(dataset, out_root)
        if folder.is_dir():
            remove_stale_temps(folder)
        if all(cache_problem(folder / f"{split}.pt") is None for split in ("train", "val")):
            continue
        print(f"[ablations] caching the frozen backbone's features of the {dataset} data set -> {folder}")
        backbone = build_model(cfg, load_backbone_weights=True).backbone
        for split in ("train", "val"):
            data = CocoDetection(root, split, cfg.data, train=split == "train", max_images=cfg.data.train_images
                                 if split == "train" else None, verbose=False)
            cached_training_features(backbone, data, folder / f"{split}.pt", progress=progress)


def _launch(run: Run, out_root: Path, threads: int, extra: list[str], lock_fd: int | None = None) -> dict:
    """Run ``run`` in a process of its own (``ablations run-one``), its output into the run's log.txt;
    -> its result.json. The process holds the grid's lock too (``lock_fd``)."""
    out_dir = run_dir(run, out_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(out_dir / "log.txt", "a") as log:
        code = subprocess.call([sys.executable, "-m", "tood_lib", "ablations", "run-one", run.experiment,
                                "--dataset", run.dataset, "--seed", str(run.seed), "--out-root", str(out_root), *extra],
                               stdout=log, stderr=subprocess.STDOUT, env=env,
                               pass_fds=(lock_fd,) if lock_fd is not None else ())
    if code != 0:
        raise RuntimeError(f"{run} failed (exit {code}){_last_error(out_dir / 'log.txt')}; see {out_dir / 'log.txt'}")
    return read_result(out_dir / "result.json")


def _last_error(log: Path) -> str:
    """The last ``error:`` line a failed run printed (the CLI's message: disk full, bad data, ...), or ''."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines[-200:] if line.startswith("error: ")]
    return f": {errors[-1][len('error: '):]}" if errors else ""


def git_commit_results(results_dir: Path, message: str) -> None:
    """Commit ``results_dir`` (only it) so that a finished run survives the end of a session."""
    try:
        subprocess.run(["git", "add", "-A", str(results_dir)], cwd=REPO_ROOT, check=True, capture_output=True)
        staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", str(results_dir)], cwd=REPO_ROOT)
        if staged.returncode:
            subprocess.run(["git", "commit", "-q", "-m", message, "--", str(results_dir)], cwd=REPO_ROOT, check=True,
                           capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        tqdm.write(f"[ablations] could not commit {results_dir}: {err}")


def run_grid(runs: list[Run], jobs: int = 2, out_root: str | Path = RUNS_DIR, results_dir: str | Path = RESULTS_DIR,
             progress: bool = True, overrides: list[str] | None = None, analysis_images: int = TIMELAPSE_IMAGES,
             with_complexity: bool = True, commit: bool = False, finetune: bool = False,
             grid: str | None = None, bench: str | None = None, schedule_factor: int = 1) -> Path:
    """Run every pending run, collecting (and with ``commit``, committing) the results after each one.
    ``finetune``: the runs train their backbone (see :func:`run_one.run_experiment`). ``grid`` ("core" or
    "full", when ``runs`` are that grid's): once they have finished, also run the replacement runs
    the replacement-seed rule asks for (on the same data sets), until it asks for none.
    ``schedule_factor``: the runs train their bench's schedule that many times as long (the schedule check).

    Holds ``out_root``'s lock throughout (``grid_lock.GridBusy`` when another command has it); raises
    :class:`RunsFailed` after collecting when some runs failed."""
    unknown = sorted({r.experiment for r in runs if r.experiment not in EXPERIMENTS})
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}")
    out_root, results_dir = Path(out_root), Path(results_dir)
    with grid_lock(out_root) as lock_fd:
        start = time.time()
        if not finetune:
            prepare_features(sorted({r.dataset for r in runs}), out_root, progress, overrides, bench)
        todo = pending_runs(runs, out_root)
        print(f"[ablations] {len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to go, {jobs} at a time -> {out_root}")
        threads = max(1, (os.cpu_count() or 2) // jobs)
        extra = ["--analysis-images", str(analysis_images)] + (["--finetune"] if finetune else []) \
            + (["--bench", bench] if bench else []) \
            + (["--schedule-factor", str(schedule_factor)] if schedule_factor != 1 else []) \
            + (["--set", *overrides] if overrides else [])
        label = "finetune" if finetune else f"schedule x{schedule_factor}" if schedule_factor != 1 \
            else grid_of(runs, run_outcomes(out_root))
        datasets = {r.dataset for r in runs}
        failures, finished = [], 0
        # The wall time is logged after every finished run and, between runs, every HEARTBEAT_SECONDS, so
        # that a command killed mid-run (the end of a session) still has its time on record.
        log_lock, stopped = threading.Lock(), threading.Event()

        def log_time() -> None:
            with log_lock:
                _log_invocation(results_dir, start, finished, label)

        def heartbeat() -> None:
            while not stopped.wait(HEARTBEAT_SECONDS):
                log_time()

        launched = bool(todo)  # an invocation with nothing to run is not on record
        if launched:
            threading.Thread(target=heartbeat, daemon=True).start()
        with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(runs), initial=len(runs) - len(todo),
                                                                desc="ablation runs", disable=not progress,
                                                                dynamic_ncols=True) as bar:
            while todo:
                futures = {pool.submit(_launch, r, out_root, threads, extra, lock_fd): r for r in todo}
                for future in as_completed(futures):
                    run = futures[future]
                    try:
                        r = future.result()
                        finished += 1
                        p = r["plateau"]
                        tqdm.write(f"[ablations] {run}: AP {r['AP']:.3f} (at epoch {p['epoch_75']}: {p['AP_75']:.3f}, "
                                   f"{'settled' if p['ok'] else 'NOT settled'}) in {r['seconds']:.0f} s")
                        log_time()
                        collect_results(None, out_root, results_dir, with_complexity)
                        if run.experiment in DIAGNOSED and not finetune:  # the declared analyses (issue 19)
                            try:
                                diagnose_grid(out_root, results_dir, progress=False)
                            except (OSError, ValueError, RuntimeError) as err:  # an analysis never stops the grid
                                tqdm.write(f"[ablations] could not diagnose the finished runs ({err}); "
                                           "`python -m tood_lib ablations diagnose` retries")
                        if commit:
                            git_commit_results(results_dir, f"ablations: {run} AP {r['AP']:.3f}")
                    except RuntimeError as err:
                        failures.append(str(err))
                        tqdm.write(f"[ablations] {err}")
                    bar.update(1)
                todo = []
                if grid and not failures:
                    todo = [r for r in grid_runs(grid, run_outcomes(out_root)) if r.dataset in datasets and r not in set(runs)]
                    if todo:
                        tqdm.write(f"[ablations] the replacement-seed rule adds {len(todo)} runs: "
                                   + ", ".join(map(str, todo)))
                        runs = runs + todo
                        bar.total = len(runs)
                        bar.refresh()
        stopped.set()
        if launched:
            log_time()
        collect_results(None, out_root, results_dir, with_complexity)  # every declared run on disk, not only these
        if commit:  # also what an earlier, killed command collected but did not get to commit
            git_commit_results(results_dir, "ablations: results collected")
        if failures:
            raise RunsFailed("some runs failed (rerun the command to retry them):\n" + "\n".join(failures))
        return results_dir


def _log_invocation(results_dir: Path, start: float, runs: int, grid: str = "other") -> None:
    """Record this invocation's wall time so far (updated after every run, so a killed session keeps it).
    ``grid``: what the invocation was asked to run (:func:`runs.grid_of`); the core grid's time is the sum
    over the invocations that ran core runs only (``core_wall_seconds``)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "ablations_cpu_timing.json"
    log = _read_timing(path)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start))
    entry = dict(started=started, wall_seconds=round(time.time() - start), runs=runs, grid=grid,
                 cpus=os.cpu_count(), amp="off")
    log["invocations"] = [i for i in log.get("invocations", []) if i.get("started") != started] + [entry]
    # An invocation marked "superseded" (its runs were deleted and redone later, e.g. because the
    # machine was shared while it ran) stays on record but is not counted in the totals.
    counted = [i for i in log["invocations"] if not i.get("superseded")]
    log["total_wall_seconds"] = sum(i["wall_seconds"] for i in counted)
    log["total_runs"] = sum(i["runs"] for i in counted)
    log["core_wall_seconds"] = sum(i["wall_seconds"] for i in counted if i.get("grid") == "core")
    log["core_runs"] = sum(i["runs"] for i in counted if i.get("grid") == "core")
    atomic_write_text(path, json.dumps(log, indent=2) + "\n")


def _read_timing(path: Path) -> dict:
    """The invocation log at ``path`` (empty when there is none); an unreadable one is refused by name,
    never overwritten (it is committed: ``git checkout`` restores it)."""
    if not path.is_file():
        return dict(invocations=[])
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not readable JSON ({err}); it records the grid's wall time: restore it "
                         f"(git checkout -- {path}) or delete it to start a new record") from None
