#!/usr/bin/env bash
# The whole test suite, in the project's own virtual environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" "dev,notebooks"
cd "$ROOT"
exec .venv/bin/python -m pytest -q "$@"
