#!/usr/bin/env bash
# Train the five quick-start methods on the synthetic DIR dataset and print their test metrics
# and feature diagnostics side by side. Runs on CPU in a few minutes; the data is generated on
# first use.
#   usage: scripts/quickstart.sh [extra key=value overrides for every run]
# The runs land in runs/quickstart/<time>/<method>; the table is the collector's
# (scripts/collect_results.py runs/quickstart/<time> --diagnostics prints it again).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out="runs/quickstart/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
train() {
  local method=$1; shift
  "$PY" train.py -c "configs/quickstart/$method.yaml" output_dir="$out/$method" logging.progress=false "$@"
}
# The first run alone: it generates the synthetic data on first use.
echo "== vanilla -> $out/vanilla"
train vanilla "$@"
# The other four two at a time with one torch thread each: a run's data loading is serial, so two
# runs keep both cores busy (about 1.3x faster on 2 cores). Their console output goes to
# <method>.log beside the run folders.
failed=()
for pair in "sqinv_lds fds" "ranksim ranksim_centered"; do
  pids=()
  for method in $pair; do
    echo "== $method -> $out/$method (console: $out/$method.log)"
    OMP_NUM_THREADS=1 train "$method" "$@" > "$out/$method.log" 2>&1 &
    pids+=("$!:$method")
  done
  for entry in "${pids[@]}"; do
    wait "${entry%%:*}" || { failed+=("${entry#*:}"); echo "!! ${entry#*:} failed; see $out/${entry#*:}.log" >&2; }
  done
done
echo
echo "Quick-start test metrics (synthetic DIR data, narrow ResNet, CPU):"
"$PY" scripts/collect_results.py "$out" --diagnostics
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
