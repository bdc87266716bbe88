"""scripts/bootstrap.sh on a fresh copy of the repository, as a new user's first command meets it.

The README's main command calls it with no extras, the test command with "dev,notebooks"; either may
come first, and each may run twice. A bug in exactly this (a pipeline that found no extras and
aborted under ``set -o pipefail``) once broke ``bash scripts/main.sh`` on every fresh clone, so the
test builds a real virtual environment from nothing (slow: it installs torch, about 3 minutes).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def copy_tracked_files(destination: Path) -> None:
    """The files a fresh clone has: git's tracked files (or, outside git, the scripts and package)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        files = [f for f in listed.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(REPO)) for d in ("scripts", "tood_lib") for p in (REPO / d).rglob("*") if p.is_file()]
        files += ["pyproject.toml", "README.md"]
    for name in files:
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def bootstrap(root: Path, extras: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "TOOD_VENV", "PYTHONPATH")}
    # the venv is made by a plain interpreter, not by the one running the tests (which lives in a venv)
    env["PYTHON"] = getattr(sys, "_base_executable", None) or shutil.which("python3")
    done = subprocess.run(["bash", str(root / "scripts" / "bootstrap.sh"), extras], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"bootstrap.sh {extras!r} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def repo_copy(tmp_path):
    """A copy of the tracked files; removed afterwards, since its venv holds several GB (torch)."""
    root = tmp_path / "repo"
    copy_tracked_files(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_bootstrap_from_nothing_with_no_extras_then_more_extras_then_none(repo_copy, tmp_path):
    root = repo_copy
    assert not (root / ".venv").exists()

    first = bootstrap(root, "")  # what `bash scripts/main.sh` does first on a fresh clone
    assert "creating virtual environment" in first and "installing tood_lib and" in first
    python = root / ".venv" / "bin" / "python"
    # run outside both checkouts: `python -c` puts the working directory first on the path
    check = subprocess.run([str(python), "-c", "import tood_lib, torch, torchvision, pycocotools; print(tood_lib.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert Path(check.stdout.strip()).resolve().is_relative_to(root.resolve())  # the copy, installed editable
    stamps = list((root / ".venv").glob(".installed-*"))
    assert len(stamps) == 1 and stamps[0].read_text().split() == []

    assert "installing" not in bootstrap(root, "")  # the main command again: nothing to do

    second = bootstrap(root, "dev")  # the test command after the main command asks for more
    assert "installing tood_lib[dev]" in second
    assert subprocess.run([str(python), "-c", "import pytest, hypothesis"], cwd=tmp_path).returncode == 0
    assert "installing" not in bootstrap(root, "dev")
    assert "installing" not in bootstrap(root, "")  # fewer extras than installed: nothing to do
    stamps = list((root / ".venv").glob(".installed-*"))
    assert len(stamps) == 1 and stamps[0].read_text().split() == ["dev"]

    # a changed pyproject.toml reinstalls, keeping the extras installed so far
    with open(root / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    third = bootstrap(root, "")
    assert "installing tood_lib[dev]" in third


def test_a_full_disk_is_named_with_what_to_do(tmp_path):
    """pip failing for lack of space (the CI failure of 2026-12-05) gets a line saying so, with the space
    free and the way out, not only pip's log. The venv's python is a stand-in that fails like pip."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/usr/bin/env bash\n'
                    'if [[ "$*" == *"install --quiet -e"* ]]; then\n'
                    '  echo "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"\n'
                    '  exit 1\n'
                    'fi\n')
    fake.chmod(0o755)
    env = dict(os.environ, TOOD_VENV=str(venv))
    done = subprocess.run(["bash", str(REPO / "scripts" / "bootstrap.sh"), ""], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "[setup] the disk is full:" in done.stderr and "free on" in done.stderr
    assert "then rerun the same command" in done.stderr
    assert not list(venv.glob(".installed-*"))  # nothing marked installed


def test_another_pip_failure_is_not_called_a_full_disk(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/usr/bin/env bash\n[[ "$*" == *"install --quiet -e"* ]] && { echo "ERROR: no matching distribution"; exit 1; }\nexit 0\n')
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(REPO / "scripts" / "bootstrap.sh"), ""], cwd=REPO,
                          env=dict(os.environ, TOOD_VENV=str(venv)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "pip install failed" in done.stderr
    assert "disk is full" not in done.stderr
