#!/usr/bin/env bash
# The main job on the built-in data: build the built-in data set, train the small TOOD on the CPU,
# evaluate it with COCOeval, draw figures/quickstart_*.png and print "box AP: 0.xxx" last.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" ""
cd "$ROOT"
exec .venv/bin/python -m tood_lib quickstart "$@"
