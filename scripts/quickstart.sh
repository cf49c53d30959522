#!/usr/bin/env bash
# Train the four quick-start methods on the synthetic DIR dataset and print their test metrics
# side by side. Runs on CPU in a few minutes; the data is generated on first use.
#   usage: scripts/quickstart.sh [extra key=value overrides for every run]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
stamp=$(date +%Y%m%d-%H%M%S)
runs=()
for method in vanilla sqinv_lds fds ranksim; do
  out="runs/quickstart/$method/$stamp"
  echo "== $method -> $out"
  "$PY" train.py -c "configs/quickstart/$method.yaml" output_dir="$out" logging.progress=false "$@"
  runs+=("$out")
done
echo
echo "Quick-start test metrics (synthetic DIR data, narrow ResNet, CPU):"
"$PY" -m ranksim.report "${runs[@]}"
