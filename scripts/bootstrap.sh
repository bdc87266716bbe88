#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install tood_lib into it.
# Re-running is cheap: it reinstalls only when pyproject.toml has changed or more extras are asked for.
# Usage: bash scripts/bootstrap.sh [extras]   e.g. "", "dev" or "dev,notebooks"
# Environment: PYTHON (the interpreter that makes the venv, default python3), TOOD_VENV (default .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
VENV="${TOOD_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV (python: $($PYTHON --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
fi
# The stamp names the pyproject.toml it was installed from and holds the extras installed with it,
# one a line; a later call that asks for no more extras than that reinstalls nothing.
STAMP="$VENV/.installed-$(sha1sum < "$ROOT/pyproject.toml" | cut -c1-12)"
# Wanted = the stamp's extras plus the requested ones. Plain bash, no pipeline: a grep that matches
# nothing must not abort the script under `set -o pipefail` (the bug that broke a first main.sh).
# The extras of an older stamp (pyproject.toml changed since) are kept too: a reinstall for the
# main command must not take away what the test command installed.
declare -A wanted=()
for old_stamp in "$VENV"/.installed-*; do
  [ -f "$old_stamp" ] || continue
  while IFS= read -r extra; do [ -n "$extra" ] && wanted["$extra"]=1; done < "$old_stamp"
done
missing=""
for extra in ${EXTRAS//,/ }; do
  [ -f "$STAMP" ] && grep -qx "$extra" "$STAMP" || missing="yes"
  wanted["$extra"]=1
done
if [ ! -f "$STAMP" ] || [ -n "$missing" ]; then
  ALL=""
  if [ "${#wanted[@]}" -gt 0 ]; then
    ALL="$(printf '%s\n' "${!wanted[@]}" | sort | paste -sd, -)"
  fi
  echo "[setup] installing tood_lib${ALL:+[$ALL]} and its dependencies (first run: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  if ! "$VENV/bin/python" -m pip install --quiet -e "$ROOT${ALL:+[$ALL]}" > "$VENV/pip-install.log" 2>&1; then
    cat "$VENV/pip-install.log" >&2
    echo "[setup] pip install failed (log above, also in $VENV/pip-install.log)" >&2
    if grep -q "No space left on device" "$VENV/pip-install.log"; then
      # torch's x86_64 wheel is a CUDA build: the venv alone takes about 6 GB
      echo "[setup] the disk is full: $(df -h "$VENV" | awk 'NR==2 {print $4 " free on " $6}'); the environment needs" \
           "about 7 GB (torch's wheel is a CUDA build). Free some space (pip's cache: pip cache purge;" \
           "old virtual environments), then rerun the same command: it picks up where it stopped." >&2
    fi
    exit 1
  fi
  "$VENV/bin/python" -c "import tood_lib, torch, torchvision" || { echo "[setup] installation failed" >&2; exit 1; }
  rm -f "$VENV"/.installed-*
  if [ -n "$ALL" ]; then tr ',' '\n' <<< "$ALL" > "$STAMP"; else : > "$STAMP"; fi
fi
