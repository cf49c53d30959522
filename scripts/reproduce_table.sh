#!/usr/bin/env bash
# Train and evaluate every row of one paper table, then print the table beside the authors' numbers.
#
#   scripts/reproduce_table.sh DATASET [--seed N] [--rows a,b,...] [--jobs N] [--dry-run] [--rerun-stale]
#                              [--runs DIR] [--preflight [--keep] [--preflight-dir DIR]] [-- key=value ...]
#
# The work is done by scripts/reproduce_table.py (--help explains every option): finished rows are
# skipped and interrupted ones resumed if their stored config still matches the row's config, a
# failed row does not stop the others, and the script ends with status 1 listing the failed rows.
# Run it with --preflight first: every row briefly, and the table's projected time (docs/preflight.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command -v "$PY" > /dev/null || { echo "error: no Python at $PY; run 'make setup' or set PY=/path/to/python" >&2; exit 2; }
exec "$PY" scripts/reproduce_table.py "$@"
