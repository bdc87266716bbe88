"""One grid at a time per runs folder: a lock file that the operating system lets go of when its
holder dies.

Two grid commands on the same runs folder would train the same pending runs twice at once, into the
same run folders. :func:`grid_lock` holds ``<runs folder>/grid.lock`` with ``flock`` for as long as
the grid runs, and writes its owner (pid, host, start, command) into it. A second command finds it
held and refuses (:class:`GridBusy`, naming the file and the pid). The kernel drops a ``flock`` when
the last process holding it exits, however it ended, so a lock file left by a killed command is
held by nobody: the next command takes it over and prints the pid it replaces. The grid hands the
lock to the run processes it starts (``pass_fds``), so a grid killed while its runs go on keeps the
folder locked until they end. (POSIX only: ``fcntl``.)
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = "grid.lock"


class GridBusy(RuntimeError):
    """Another grid command holds the runs folder's lock."""


@contextmanager
def grid_lock(folder: str | os.PathLike, command: str | None = None) -> Iterator[int]:
    """Hold ``folder/grid.lock`` for the ``with`` block; yields the lock file's descriptor, which a child
    process keeps the lock with (``subprocess.call(..., pass_fds=[fd])``).

    Raises :class:`GridBusy` when another process holds it. On a clean exit the file is left empty, so
    an owner found in it later is one that was killed (announced when taken over)."""
    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held by a live process
        owner = _read_owner(fd)
        os.close(fd)
        raise GridBusy(_busy_message(path, owner)) from None
    try:
        left = _read_owner(fd)
        if left:
            print(f"[ablations] taking over {path}: pid {left.get('pid', '?')} (started {left.get('started', '?')}) "
                  "left it and no longer holds it, so that command was killed; its unfinished runs resume now",
                  flush=True)
        _write_owner(fd, command if command is not None else " ".join(sys.argv))
        yield fd
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)


def _read_owner(fd: int) -> dict:
    raw = os.pread(fd, 65536, 0)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:  # written by something else: still say what is in it
        return dict(pid=raw.decode(errors="replace").strip()[:80])


def _write_owner(fd: int, command: str) -> None:
    owner = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                            started=time.strftime("%Y-%m-%dT%H:%M:%S"), command=command)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, owner, 0)
    os.fsync(fd)


def _alive(pid) -> bool | None:
    """Whether process ``pid`` of this machine exists (None: cannot tell)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except (OSError, ValueError, TypeError):
        return None
    return True


def _busy_message(path: Path, owner: dict) -> str:
    pid = owner.get("pid", "?")
    who = f"pid {pid}" + (f" on {owner['host']}" if owner.get("host") else "") \
        + (f", started {owner['started']}" if owner.get("started") else "") \
        + (f": {owner['command']}" if owner.get("command") else "")
    message = (f"another grid command is running on {path.parent}: its lock file {path} is held by {who}. "
               f"Wait for it to finish, or stop it (kill {pid}) and run this command again: it resumes.")
    if owner.get("host") in (None, socket.gethostname()) and _alive(pid) is False:
        message += (f" (pid {pid} has exited, but the runs it started still hold the lock; they finish on their "
                    "own: wait for them.)")
    return message
