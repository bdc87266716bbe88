#!/usr/bin/env bash
# Regenerate every CPU-scale ablation result (results/) and the notebooks that read them (05, 06):
# pretrain the shape backbone once, train the grid (2 seeds, two runs at a time), collect the tables.
# Resumable: finished runs (runs/ablations/cpu/<experiment>/seed<k>/result.json) are never redone.
# About 1.5-2 hours on 2 CPU cores. Usage: bash scripts/ablations.sh [--all] [--seeds 0 1 2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" "dev,notebooks"
cd "$ROOT"
.venv/bin/python -m tood_lib ablations run "$@"
exec .venv/bin/python -m tood_lib figures --only 05 06 --no-browser
