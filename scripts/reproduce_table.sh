#!/usr/bin/env bash
# Train and evaluate every row of one paper table, then print the table beside the authors' numbers.
#
#   scripts/reproduce_table.sh DATASET [--seed N] [--rows a,b,...] [--dry-run] [-- key=value ...]
#
# DATASET is a folder under configs/ (agedb, imdb_wiki, sts_b). Each row is configs/DATASET/ROW.yaml
# and runs into runs/DATASET/ROW/seedN. A row whose results.json exists is skipped; a row with a
# last.pt but no results is resumed. RRT rows get their stage-1 run folder (same seed) passed in;
# rows are ordered so that every stage-1 row runs before the RRT rows that need it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
[ $# -ge 1 ] || { usage; exit 2; }
dataset=$1; shift
[ -d "configs/$dataset" ] || { echo "error: no configs/$dataset; choose one of: $(ls configs | grep -v quickstart | tr '\n' ' ')" >&2; exit 2; }
seed=0; rows=""; dry=0; extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --seed) seed=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Paper order; stage-1 rows come before the RRT rows that load them.
all_rows=()
for stem in vanilla sqinv inv lds fds sqinv_fds lds_fds focal focal_lds focal_fds focal_lds_fds rrt rrt_lds rrt_fds rrt_lds_fds; do
  for suffix in "" _ranksim; do
    [ -f "configs/$dataset/$stem$suffix.yaml" ] && all_rows+=("$stem$suffix")
  done
done
if [ -n "$rows" ]; then
  IFS=, read -r -a selected <<< "$rows"
  for row in "${selected[@]}"; do
    [ -f "configs/$dataset/$row.yaml" ] || { echo "error: no row '$row' in configs/$dataset (rows: ${all_rows[*]})" >&2; exit 2; }
  done
else
  selected=("${all_rows[@]}")
fi

for row in "${selected[@]}"; do
  out="runs/$dataset/$row/seed$seed"
  args=(-c "configs/$dataset/$row.yaml" "seed=$seed" "output_dir=$out" "logging.progress=false")
  stage1=$(sed -n 's/.*stage1: *runs\/[^/]*\/\([^/]*\)\/seed[0-9]*.*/\1/p' "configs/$dataset/$row.yaml")
  [ -n "$stage1" ] && args+=("method.rrt.stage1=runs/$dataset/$stage1/seed$seed")
  args+=("${extra[@]}")
  if [ -f "$out/results.json" ]; then
    echo "== $row: finished ($out/results.json), skipped"
    continue
  fi
  if [ -f "$out/checkpoints/last.pt" ]; then
    cmd=("$PY" train.py --resume "$out")
  else
    cmd=("$PY" train.py "${args[@]}")
  fi
  echo "== $row: ${cmd[*]}"
  [ $dry -eq 1 ] || "${cmd[@]}"
done

if [ $dry -eq 0 ]; then
  "$PY" scripts/collect_results.py "runs/$dataset" --dataset "$dataset"
else
  echo "== then: $PY scripts/collect_results.py runs/$dataset --dataset $dataset"
fi
