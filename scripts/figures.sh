#!/usr/bin/env bash
# Regenerate figures/: run every notebook top to bottom in place (they are committed with these
# outputs) and retake the browser screenshot of the assignment explorer (needs Debian's chromium).
# Usage: bash scripts/figures.sh [--only 01 02] [--no-browser]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" "dev,notebooks"
cd "$ROOT"
exec .venv/bin/python -m tood_lib figures "$@"
