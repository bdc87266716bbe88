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
# The stamp names the pyproject.toml it was installed from and holds the extras installed with it;
# a later call that asks for no more extras than that reinstalls nothing.
STAMP="$VENV/.installed-$(sha1sum < "$ROOT/pyproject.toml" | cut -c1-12)"
missing=""
for extra in ${EXTRAS//,/ }; do
  grep -qx "$extra" "$STAMP" 2>/dev/null || missing="yes"
done
if [ ! -f "$STAMP" ] || [ -n "$missing" ]; then
  ALL="$( (cat "$STAMP" 2>/dev/null; tr ',' '\n' <<< "$EXTRAS") | grep -v '^$' | sort -u | paste -sd, -)"
  echo "[setup] installing tood_lib${ALL:+[$ALL]} and its dependencies (first run: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT${ALL:+[$ALL]}" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import tood_lib, torch, torchvision" || { echo "[setup] installation failed" >&2; exit 1; }
  rm -f "$VENV"/.installed-* && tr ',' '\n' <<< "$ALL" > "$STAMP"
fi
