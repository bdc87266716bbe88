"""Writing a file so that a crash never leaves half of it, and a full disk never costs the old copy.

Every file goes first to a temporary file in the same folder (``.<name>.<random>.tmp``), is flushed
and fsync'ed, and is then renamed over the target (atomic on POSIX and Windows); the folder is
fsync'ed too, so the rename itself survives a power cut. A reader therefore sees the old file or
the new one, never a mixture. What a failure leaves:

- an exception (a full disk included): the old file, byte for byte, and no temporary file;
- a killed process (SIGKILL, power cut): the old file and possibly a temporary file, which
  :func:`remove_stale_temps` clears on the next run (it is never read in place of the target).

A full disk (ENOSPC, or EDQUOT: over quota) raises :class:`DiskFull`, whose message names the file,
the folder, how much it needs, how much is free, and what to delete.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import torch

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """The disk filled (or the quota ran out) while a file was written; the old file is intact."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]"
        return str(self.strerror)


def temp_name_prefix(path: Path) -> str:
    """The start of the name of every temporary file that stands for ``path`` while it is written."""
    return f".{path.name}."


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None],
                 advice: Callable[[Path], str] | None = None) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, fsync it, rename it over ``path``.

    Guarantees: ``path`` is either untouched or holds everything ``write`` wrote; on any exception
    the temporary file is removed. A full disk raises :class:`DiskFull` (``advice(path)``, when
    given, adds what to delete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(path), suffix=".tmp", dir=path.parent)
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            written = f.tell()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        written = max(written, _size(Path(tmp)))
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(err):
            raise DiskFull(err.errno if isinstance(err, OSError) and err.errno else errno.ENOSPC,
                           _disk_full_message(path, written, advice)) from err
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, advice: Callable[[Path], str] | None = None) -> Path:
    return atomic_write(path, lambda f: f.write(data), advice)


def atomic_write_text(path: str | os.PathLike, text: str, advice: Callable[[Path], str] | None = None) -> Path:
    """``path.write_text(text)`` (UTF-8, newlines as given), atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), advice)


def atomic_torch_save(obj, path: str | os.PathLike, advice: Callable[[Path], str] | None = None) -> Path:
    """``torch.save(obj, path)``, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f), advice)


def atomic_write_csv(frame, path: str | os.PathLike, float_format: str | None = None) -> Path:
    """``frame.to_csv(path, index=False, float_format=...)`` (a pandas DataFrame), atomically: the same bytes."""
    return atomic_write_text(path, frame.to_csv(index=False, float_format=float_format))


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) a killed write left in ``folder``, and
    say so. Call it only where no other process is writing into ``folder`` at the same time."""
    removed = sorted(p for p in Path(folder).glob(".*.tmp") if p.is_file())
    for path in removed:
        print(f"[atomic] removing {path}: a partial file left by a write that was killed", flush=True)
        path.unlink(missing_ok=True)
    return removed


# ---------------------------------------------------------------------------------- helpers
def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _is_disk_full(err: BaseException | None) -> bool:
    # torch.save reports a failed write as the OSError with a RuntimeError as its context, or the other
    # way round: look along the whole chain
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        err = err.__cause__ or err.__context__
    return False


def megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _disk_full_message(path: Path, written: int, advice: Callable[[Path], str] | None) -> str:
    old = _size(path)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    need = f"about {megabytes(max(old, written))} (the copy it replaces is {megabytes(old)})" if old \
        else f"more than {megabytes(written)}"
    message = (f"disk full while writing {path}: it needs {need}, and {megabytes(free)} is free on the file "
               f"system of {path.parent}. " + (f"The previous {path.name} is intact; " if old else "")
               + "the partial file was removed. Free space there and rerun the same command.")
    extra = advice(path) if advice is not None else ""
    return message + (f" {extra}" if extra else "")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
