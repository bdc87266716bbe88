#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install tood_lib into it.
# Re-running is cheap: it reinstalls only when pyproject.toml has changed.
# Usage: source scripts/bootstrap.sh [extras]   e.g. "dev" or "dev,notebooks"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in .venv (python: $($PYTHON --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$( (cat "$ROOT/pyproject.toml"; echo "$EXTRAS") | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  echo "[setup] installing tood_lib${EXTRAS:+[$EXTRAS]} and its dependencies (first run: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import tood_lib, torch, torchvision" || { echo "[setup] installation failed" >&2; exit 1; }
  rm -f "$VENV"/.installed-* && touch "$STAMP"
fi
