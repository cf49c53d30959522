#!/usr/bin/env bash
# Reproduce the paper's agedb table: every row, trained and evaluated, then the collected table.
#   scripts/reproduce_agedb.sh [--seed N] [--rows a,b,...] [--jobs N] [--dry-run] [--rerun-stale] [--preflight [--keep]] [-- key=value ...]
exec "$(dirname "$0")/reproduce_table.sh" agedb "$@"
