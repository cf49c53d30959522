#!/usr/bin/env python
"""Collect a folder of finished runs into the paper's table, ours beside the authors' numbers.

    python scripts/collect_results.py runs/agedb [--dataset agedb] [--format markdown|csv|latex]

Rows are grouped by config (mean ± std over seeds) and ordered as in the paper; age tables show
MAE and GM, STS-B tables MSE and Pearson (x100), for All/Many/Medium/Few. Where
ranksim/reference/paper_tables.csv holds the authors' number for a cell, it follows ours in
brackets with the difference. Unfinished and failed runs are listed below the table.

Runs are grouped by what they are (ranksim.engine.identity): the authors' converted weights are a row
of their own, never averaged with ours. Stale runs (made by an older results version of the
code, or RRT runs whose stage 1 cannot be proved) are listed and left out unless --include-stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ranksim.results.report import collect, discover_runs, render  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path, help="folder searched recursively for run folders (config.yaml)")
    parser.add_argument("--dataset", choices=("agedb", "imdb_wiki", "sts_b", "synthetic"),
                        help="which table (default: the dataset of the runs found, if there is one)")
    parser.add_argument("--format", choices=("markdown", "csv", "latex"), default="markdown", help="output format")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also print the feature diagnostics of each row (test split): rank "
                             "correlation, RankSim regularizer, mean and 5th-percentile pairwise cosine")
    parser.add_argument("--include-stale", action="store_true",
                        help="also count stale runs (older results version, unproved RRT stage 1), in rows of "
                             "their own marked [stale]")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        print(f"error: {args.runs_dir} is not a folder; give the folder that holds the run folders (e.g. runs/agedb)",
              file=sys.stderr)
        return 2
    runs = discover_runs(args.runs_dir)
    datasets = sorted({r.dataset for r in runs})
    dataset = args.dataset or (datasets[0] if len(datasets) == 1 else None)
    if not runs:
        print(f"error: no runs under {args.runs_dir} (no run folder with a config.yaml); give the folder that "
              f"train.py or a reproduce script wrote the runs into (e.g. runs/agedb)", file=sys.stderr)
        return 2
    if dataset is None:
        print(f"error: runs of several datasets ({', '.join(datasets)}) under {args.runs_dir}; choose one with "
              f"--dataset", file=sys.stderr)
        return 2
    print(render(collect(runs, dataset, include_stale=args.include_stale), args.format,
                 diagnostics=args.diagnostics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
