#!/usr/bin/env bash
# Reproduce the paper's sts_b table: every row, trained and evaluated, then the collected table.
#   scripts/reproduce_sts_b.sh [--seed N] [--rows a,b,...] [--jobs N] [--dry-run] [--rerun-stale] [--preflight [--keep]] [-- key=value ...]
exec "$(dirname "$0")/reproduce_table.sh" sts_b "$@"
