#!/usr/bin/env bash
# Train the five quick-start methods on the synthetic DIR dataset and print their test metrics
# side by side. Runs on CPU in a few minutes; the data is generated on first use.
#   usage: scripts/quickstart.sh [extra key=value overrides for every run]
# The runs land in runs/quickstart/<time>/<method>; the table is the collector's
# (scripts/collect_results.py runs/quickstart/<time> prints it again).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out="runs/quickstart/$(date +%Y%m%d-%H%M%S)"
for method in vanilla sqinv_lds fds ranksim ranksim_centered; do
  echo "== $method -> $out/$method"
  "$PY" train.py -c "configs/quickstart/$method.yaml" output_dir="$out/$method" logging.progress=false "$@"
done
echo
echo "Quick-start test metrics (synthetic DIR data, narrow ResNet, CPU):"
"$PY" scripts/collect_results.py "$out" --diagnostics
