"""Faults injected into the ablation grid's processes, for tests/test_grid_faults.py.

A fault strikes one file, named by part of its name ("metrics.jsonl" strikes the metrics log, and
also ".metrics.jsonl.x1y2.tmp", the temporary file an atomic write of it goes through), at the
``nth`` time a process opens such a file for writing (counted per process). What it does:

- ``kill``: the process writes half of its first chunk of data, flushes it to disk and SIGKILLs
  itself: what a crash, the OOM killer or a power cut leaves behind, at a precise point;
- ``disk_full``: the file's descriptor is pointed at /dev/full, so that writing it fails with the
  kernel's own ENOSPC, as on a full disk;
- ``kill_parent``: the process SIGKILLs its parent (the grid command), then waits until the file
  ``spec["resume_when"]`` exists before it goes on: a run that outlives its grid, deterministically;
- ``audit``: nothing fails; the path of every file opened for writing goes into ``spec["log"]``.

The grid's run processes get the fault from the environment (``TOOD_FAULT``, JSON) through the
``sitecustomize`` module that :func:`hook_dir` writes (put that folder on PYTHONPATH); the test
process uses :func:`striking`. ``torch.save(obj, path)`` writes from C++, past Python's ``open``: it
is routed through ``open`` here (the same bytes) so that it can be struck too.
"""
from __future__ import annotations

import builtins
import io
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

ENV = "TOOD_FAULT"
WRITE_MODES = set("wax+")


def hook_dir(folder: Path) -> Path:
    """A folder for PYTHONPATH whose ``sitecustomize`` installs the fault in ``$TOOD_FAULT``, if any."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import json, os, sys\n"
        f"if os.environ.get({ENV!r}):\n"
        f"    sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "    import grid_faults\n"
        "    sys.path.pop(0)\n"
        f"    grid_faults.install(json.loads(os.environ[{ENV!r}]))\n")
    return folder


@contextmanager
def striking(spec: dict):
    """The fault ``spec`` in this process for the ``with`` block."""
    undo = install(spec)
    try:
        yield
    finally:
        undo()


def install(spec: dict):
    """Make this process's ``open`` (and ``torch.save`` to a path) carry the fault; -> a function that undoes it."""
    import torch

    real_open, real_save = io.open, torch.save
    seen = 0

    def fault_open(file, mode="r", *args, **kwargs):
        nonlocal seen
        f = real_open(file, mode, *args, **kwargs)
        if not WRITE_MODES & set(mode):
            return f
        name = _name(file)
        if spec["action"] == "audit":
            with real_open(spec["log"], "a") as log:
                log.write(name + "\n")
            return f
        if spec["file"] not in os.path.basename(name):
            return f
        seen += 1
        if seen != spec.get("nth", 1):
            return f
        if spec["action"] == "disk_full":
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, f.fileno())
            os.close(full)
            return f
        return _Struck(f, spec)

    def routed_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # through open, so that the fault sees it
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with builtins.open(f, "wb") as out:
                out.write(buffer.getbuffer())
            return None
        return real_save(obj, f, *args, **kwargs)

    builtins.open = io.open = fault_open
    torch.save = routed_save

    def undo():
        builtins.open = io.open = real_open
        torch.save = real_save
    return undo


def _name(file) -> str:
    if isinstance(file, int):  # os.fdopen(fd): the file the descriptor points at
        try:
            return os.readlink(f"/proc/self/fd/{file}")
        except OSError:
            return ""
    name = os.fspath(file)
    return name.decode(errors="replace") if isinstance(name, bytes) else name


class _Struck:
    """A file whose first write the fault interrupts; everything else goes to the real file."""

    def __init__(self, f, spec: dict):
        self._f, self._spec = f, spec

    def write(self, data):
        action, self._spec = self._spec["action"], dict(self._spec, action="done")
        if action == "kill":
            self._f.write(data[:max(1, len(data) // 2)])
            self._f.flush()
            os.fsync(self._f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "kill_parent":
            os.kill(os.getppid(), signal.SIGKILL)
            while not Path(self._spec["resume_when"]).exists():
                time.sleep(0.05)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)
