"""Suite-wide set-up: the series' trained model trains in the background while the other tests run.

The notebook tests and the browser check need the notebooks' model (``tood_lib.workbook.workbook_run``:
the CPU bench's TOOD seed 0, 8 to 10 minutes on one CPU thread). On a fresh clone it is not there yet.
Trained inside the first test that needs it, those 8 minutes ran alone while the second core idled.
So: tests marked ``workbook_model`` run last, and when the model is missing, ``python -m
tood_lib.workbook`` starts at collection and trains it on one thread (as the grid does, so the model is
the same) beside the other tests. A test that needs it calls ``workbook_run()``, which waits on the
trainer's lock and then reuses the run; if the background trainer failed, that call trains it itself,
and its error shows there. An unfinished trainer is stopped when the session ends; the run resumes
from its last checkpoint next time. Its output goes to ``runs/workbook/background_training.log``.
"""
from __future__ import annotations

import subprocess
import sys

_trainer: subprocess.Popen | None = None


def pytest_collection_modifyitems(session, config, items):
    """Move the tests that need the notebooks' model to the end, and start training it if it is missing."""
    global _trainer
    needing = [item for item in items if item.get_closest_marker("workbook_model")]
    others = [item for item in items if not item.get_closest_marker("workbook_model")]
    items[:] = others + needing
    if not needing or not others or config.option.collectonly:
        return  # nothing needs it, or nothing else would run beside the training
    from tood_lib.workbook import REPO_ROOT, WORKBOOK_RUNS, workbook_model_ready

    if workbook_model_ready():
        return
    WORKBOOK_RUNS.mkdir(parents=True, exist_ok=True)
    log = open(WORKBOOK_RUNS / "background_training.log", "w")
    _trainer = subprocess.Popen([sys.executable, "-m", "tood_lib.workbook", "--quiet"], cwd=REPO_ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own handle


def pytest_sessionfinish(session, exitstatus):
    """Stop a background trainer that is still running (e.g. a run of a few tests ended first)."""
    if _trainer is not None and _trainer.poll() is None:
        _trainer.terminate()
        try:
            _trainer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _trainer.kill()
