#!/usr/bin/env python
"""Run a grid of one config's values through train.py, then print the grid's table.

    python scripts/sweep.py -c CONFIG KEY=V1,V2[,...] [KEY=...] [--out DIR] [--jobs N] [--dry-run]
                            [--rerun-stale] [-- key=value ...]

Each KEY=V1,V2 is a swept key; every combination of the values is one point and runs into its
own folder under the sweep folder (default runs/sweeps/<config name>/<swept keys>), named by
its values: gamma=10_seed=0. key=value overrides after -- apply to every point. Running the same
command again skips finished points, resumes interrupted ones (checkpoints/last.pt) and refuses
a point whose folder holds a run of another config (--rerun-stale moves it aside and reruns it).
A failed point does not stop the others; the command then exits with status 1 and lists it.

At the end the points are collected into one table: one row per config (mean ± std over the
seeds), one column per swept key. Each run's TensorBoard hparams include the swept keys.

example (2 values x 2 seeds on the quick start, 1 epoch each):
    python scripts/sweep.py -c configs/quickstart/ranksim.yaml method.ranksim.gamma=1,100 seed=0,1 \\
        -- schedule.epochs=1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ranksim.errors import UserError  # noqa: E402
from ranksim.tools.sweep import parse_grid, report_failures, run_command, sweep  # noqa: E402


USAGE = "sweep.py -c CONFIG KEY=V1,V2 [KEY=...] [--out DIR] [--jobs N] [--dry-run] [--rerun-stale] [-- key=value ...]"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    overrides = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(usage=USAGE, description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=Path, required=True, help="YAML config file (see configs/)")
    parser.add_argument("grid", nargs="+", metavar="KEY=V1,V2", help="swept keys and their values")
    parser.add_argument("--out", type=Path, help="sweep folder (default runs/sweeps/<config name>/<swept keys>)")
    parser.add_argument("--jobs", type=int, default=1, help="points trained at the same time (default 1); "
                        "with more than 1 each run's console output goes to <run folder>/console.log")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    parser.add_argument("--rerun-stale", action="store_true",
                        help="move a point's folder that holds a stale run (another config or seed, an older results "
                        "version, an unproved RRT stage 1) to <folder>.staleN and rerun it")
    return parser.parse_args(argv), overrides


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))

    def body() -> int:
        if args.jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {args.jobs}")
        outcomes, table = sweep(args.config, parse_grid(args.grid), overrides, out=args.out, jobs=args.jobs,
                                dry_run=args.dry_run, rerun_stale=args.rerun_stale)
        if table:
            print("\n" + table, flush=True)
        return report_failures(outcomes, "points")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
