#!/usr/bin/env bash
# Run one paper row: every stage of its config, in order (finished training stages are skipped, unfinished
# ones resumed).
# Usage: DATA=/path/to/dataset bash scripts/run.sh configs/<method>/<row>.yaml [--dry_run] [extra flags]
# Extra flags go to every stage whose script knows them (e.g. --num_workers 8; --epoch only to training).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m frn.configs "$@"
