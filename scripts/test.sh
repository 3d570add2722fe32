#!/usr/bin/env bash
# Set up (system packages, .venv with dev extras), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=1 bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
