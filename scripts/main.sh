#!/usr/bin/env bash
# The main job on the built-in data: build TOOD R-50, run it on a built-in sample scene and print
# its parameter/MAC table and detections. (Training on the built-in data set comes next.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" ""
cd "$ROOT"
exec .venv/bin/python -m tood_lib demo "$@"
