#!/usr/bin/env bash
# Regenerate every CPU-scale ablation result (results/) and the notebooks that read them (05, 06):
# cache the frozen backbone's features, train the core grid (two runs at a time), collect tables and verdicts.
# Resumable: finished runs (runs/ablations/cpu/<dataset>/<experiment>/seed<k>/result.json) are never redone.
# About 4 hours on 2 CPU cores (the core grid: 237 min measured, results/ablations_cpu_timing.json). Usage: bash scripts/ablations.sh [--grid full] [--commit]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" "dev,notebooks"
cd "$ROOT"
.venv/bin/python -m tood_lib ablations run "$@"
exec .venv/bin/python -m tood_lib figures --only 05 06 --no-browser
