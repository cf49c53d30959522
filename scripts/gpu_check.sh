#!/usr/bin/env bash
# Measure everything that needs a GPU in one command (no dataset needed; the step limits below add
# up to 500 s, so about 9 minutes at most; never yet run on a GPU) and write OUT/report.md with the
# raw JSON beside it.
#
#   scripts/gpu_check.sh [--cpu-tiny] [--out DIR] [--tests "PATHS"]
#
#   --cpu-tiny   run every step at a tiny size on the CPU (hides any GPU); the default when CUDA
#                is not available. Its figures only show that the script works: not GPU figures.
#   --out DIR    where the report goes (default: the repository's gpu_check/); an earlier report
#                there is replaced.
#   --tests P    test paths for step 1 (default: tests)
#
# Steps, in order, each under its own time limit (seconds; GPU defaults, override by environment):
#   1. the test suite's CUDA-marked tests            pytest -m cuda               GPU_CHECK_T_TESTS   80
#   2. training step, ours vs the authors' recipe    benchmarks/bench_train.py    GPU_CHECK_T_BENCH   140
#   3. does torch.compile help (batch 256)           benchmarks/bench_train.py    GPU_CHECK_T_COMPILE 120
#   4. one epoch with data loading (synthetic JPEGs) benchmarks/bench_epoch.py    GPU_CHECK_T_EPOCH   140
#   5. report: tables, GPU utilisation, projected AgeDB-DIR time   scripts/gpu_check_report.py  20
# A step that fails or runs out of time is reported as such and the next one runs; the limits add
# up to 500 s, plus at most 5 s each to stop a step that overran.
set -uo pipefail
here=$PWD
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
out=""; tiny=0; tests=tests; reason="--cpu-tiny was given"
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-tiny) tiny=1; shift ;;
    --out) out=$2; shift 2 ;;
    --tests) tests=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $out in
  "") out="$PWD/gpu_check" ;;   # the repository's gpu_check/ (git ignores it)
  /*) ;;
  *) out="$here/$out" ;;        # relative to where the command was typed
esac
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] && [ ! -f "$out/run.json" ]; then
  echo "error: $out exists and is not the output of an earlier gpu_check run; choose another --out" >&2
  exit 2
fi
if [ $tiny -eq 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "== CUDA is not available: running the tiny CPU size (its figures are NOT GPU figures)"
  tiny=1; reason="no CUDA device was available"
fi
if [ $tiny -eq 1 ]; then
  export CUDA_VISIBLE_DEVICES=""   # every step on the CPU, even where a GPU exists
  mode=cpu-tiny
  bench=(--device cpu --image-size 16 --width 4 --batch-sizes 16 --steps 2 --warmup 1)
  epoch=(--device cpu --tiny)
  t_tests=${GPU_CHECK_T_TESTS:-240}; t_bench=${GPU_CHECK_T_BENCH:-180}
  t_epoch=${GPU_CHECK_T_EPOCH:-240}; t_report=${GPU_CHECK_T_REPORT:-60}
else
  mode=gpu; reason=""
  bench=(--device cuda --batch-sizes 64 256)
  epoch=(--device cuda)
  t_tests=${GPU_CHECK_T_TESTS:-80}; t_bench=${GPU_CHECK_T_BENCH:-140}; t_compile=${GPU_CHECK_T_COMPILE:-120}
  t_epoch=${GPU_CHECK_T_EPOCH:-140}; t_report=${GPU_CHECK_T_REPORT:-20}
fi

rm -rf "$out"
mkdir -p "$out/logs"
start=$(date +%s)
echo "{\"mode\": \"$mode\", \"reason\": \"$reason\", \"started\": $start}" > "$out/run.json"

# run_step NAME LIMIT COMMAND...: run under `timeout` (which stops the whole process group, so
# DataLoader workers and pytest children go too), log to OUT/logs/NAME.log, append a line to
# OUT/steps.jsonl.
run_step() {
  local name=$1 limit=$2; shift 2
  local t0 t1 rc status
  echo "== $name (limit ${limit} s): $*"
  t0=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" > "$out/logs/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  echo "   $status (exit $rc) in $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s; log: $out/logs/$name.log"
  printf '{"name": "%s", "limit_s": %s, "seconds": %s, "rc": %s, "status": "%s", "log": "logs/%s.log"}\n' \
    "$name" "$limit" "$(awk "BEGIN {print $t1 - $t0}")" "$rc" "$status" "$name" >> "$out/steps.jsonl"
}

# shellcheck disable=SC2086  # $tests is a list of paths
run_step cuda_tests "$t_tests" "$PY" -m pytest -m cuda -q -p no:cacheprovider \
  --junitxml="$out/cuda_tests.xml" $tests
run_step bench_train "$t_bench" "$PY" benchmarks/bench_train.py "${bench[@]}" \
  --output "$out/bench_train.md" --json "$out/bench_train.json"
if [ $tiny -eq 0 ]; then
  run_step bench_compile "$t_compile" "$PY" benchmarks/bench_train.py --device cuda \
    --sides ours ours_compiled --batch-sizes 256 --steps 20 \
    --output "$out/bench_compile.md" --json "$out/bench_compile.json"
fi
run_step bench_epoch "$t_epoch" "$PY" benchmarks/bench_epoch.py "${epoch[@]}" --json "$out/bench_epoch.json"
run_step report "$t_report" "$PY" scripts/gpu_check_report.py "$out"
echo "== finished in $(( $(date +%s) - start )) s: $out/report.md"
[ -f "$out/report.md" ] && sed -n '1,12p' "$out/report.md"
[ -f "$out/report.md" ]
