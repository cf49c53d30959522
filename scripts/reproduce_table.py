#!/usr/bin/env python
"""Train and evaluate every row of one paper table, then print the table beside the authors' numbers.

    scripts/reproduce_table.sh DATASET [--seed N] [--rows a,b,...] [--jobs N] [--dry-run] [--rerun-stale]
                               [--runs DIR] [--preflight [--keep] [--preflight-dir DIR]] [-- key=value ...]

DATASET is a folder under configs/ (agedb, imdb_wiki, sts_b), or the path of any folder of row
configs. Each row is DATASET/ROW.yaml and runs into runs/DATASET/ROW/seedN (--runs changes
runs/DATASET). The rows run in table order, --rows too, so that every stage-1 row runs before
the RRT rows that load it; RRT rows get their stage-1 run folder (same seed) passed in.

- A row whose folder holds results.json is skipped, and one with checkpoints/last.pt is resumed,
  but only if the folder holds the same run (ranksim.engine.identity): the row's config now, seed
  included (operational keys such as device and workers aside), trained here on the same data
  by the current results version. Any other run is refused as stale with the reason;
  --rerun-stale moves its folder to <folder>.staleN and reruns the row. An RRT row whose stage 1
  was run again is moved aside and rerun too.
- The table printed at the end holds only current runs of these rows' configs (every seed found
  under the runs folder); a row refused as stale shows no number.
- A failed row does not stop the others; the rows that load it are not started. The script ends
  with status 1 and the list of failed rows.
- --preflight trains nothing for good: it checks the data, runs every row for a few iterations of
  two epochs with its real config (an RRT row on its stage-1 row's preflight checkpoint, that row
  added when --rows left it out), then prints each row's measured rates, peak memory and
  projected full time, and the table's (ranksim.tools.preflight; docs/preflight.md). Its runs go to a
  scratch folder, preflight/DATASET-TIME by default, removed at the end unless --keep; its
  report is written beside it as DATASET-TIME.json. runs/ is not touched. Status 1 when a row
  failed or the data check found a problem.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ranksim.config import load_config, parse_override  # noqa: E402
from ranksim.errors import UserError  # noqa: E402
from ranksim.tools.sweep import Point, current_runs, report_failures, run_command, run_points  # noqa: E402

log = logging.getLogger("ranksim.sweep")

# Paper order: each method, then its "+ RankSim" twin (the _ranksim file); RRT rows come last,
# after the stage-1 rows they load. Rows of other names follow in alphabetical order.
STEMS = ["vanilla", "sqinv", "inv", "lds", "fds", "sqinv_fds", "lds_fds", "focal", "focal_lds", "focal_fds",
         "focal_lds_fds", "rrt", "rrt_lds", "rrt_fds", "rrt_lds_fds"]
STAGE1 = re.compile(r"^runs/[^/]+/([^/]+)/seed\d+/?$")  # the shipped configs' stage1: runs/<table>/<row>/seed0


PAPER_ROWS = [s + suffix for s in STEMS for suffix in ("", "_ranksim")]


def table_rows(folder: Path) -> list[str]:
    """The row configs of ``folder`` (all YAML files but base.yaml and cpu_*), in table order."""
    stems = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "base" and not p.stem.startswith("cpu_"))
    return sorted(stems, key=lambda s: (PAPER_ROWS.index(s) if s in PAPER_ROWS else len(PAPER_ROWS), s))


def default_rows(rows: list[str]) -> list[str]:
    """The RankSim paper's rows when the folder has them; the other rows (Balanced MSE, ConR, ...)
    run only when named with --rows. A folder without paper rows runs all of its rows."""
    paper = [r for r in rows if r in PAPER_ROWS]
    return paper or rows


USAGE = ("reproduce_table.sh DATASET [--seed N] [--rows a,b,...] [--jobs N] [--dry-run] [--rerun-stale] [--runs DIR] "
         "[--preflight [--keep] [--preflight-dir DIR]] [-- key=value ...]")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(usage=USAGE, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="a folder under configs/ (agedb, imdb_wiki, sts_b) or a folder of row configs")
    parser.add_argument("--seed", type=int, help="seed of every row, run into ROW/seedN (default 0; seed=N after -- "
                        "means the same)")
    parser.add_argument("--rows", help="only these rows (config file stems, comma-separated); default: the RankSim "
                        "paper's rows, so Balanced MSE and ConR rows run only when named here")
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at the same time (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--rerun-stale", action="store_true",
                        help="move the folder of a row whose config changed to <folder>.staleN and rerun the row")
    parser.add_argument("--runs", type=Path, help="folder of the row folders (default runs/<dataset folder name>)")
    parser.add_argument("--preflight", action="store_true", help="check the data and run every row briefly with its "
                        "real config, then project the table's time; trains nothing into runs/")
    parser.add_argument("--keep", action="store_true", help="with --preflight: keep its scratch folder of runs")
    parser.add_argument("--preflight-dir", type=Path, help="with --preflight: its scratch folder, which must not exist "
                        "(default preflight/<dataset>-<UTC time>); the JSON report goes beside it")
    parser.add_argument("--preflight-iters", type=int, default=8, help="with --preflight: training iterations in "
                        "each of its two epochs (default 8, of which the first 2 are warm-up)")
    return parser.parse_args(argv), extra


# Overrides that the script sets itself for every row, and the option to use instead.
OWN_KEYS = {"output_dir": "--runs DIR", "method.rrt.stage1": "the stage-1 row of the same seed"}


def seed_of(option: int | None, extra: list[str]) -> tuple[int, list[str]]:
    """The seed of every row: ``--seed N``, or ``seed=N`` after ``--``, which means the same
    (the run folders are then ``seedN/``); the two disagreeing is an error."""
    seeds = [parse_override(text)[1] for text in extra if parse_override(text)[0] == "seed"]
    rest = [text for text in extra if parse_override(text)[0] != "seed"]
    if len(set(seeds)) > 1 or (seeds and option is not None and seeds[0] != option):
        given = ", ".join([f"--seed {option}"] * (option is not None) + [f"seed={s}" for s in seeds])
        raise UserError(f"two seeds given ({given}); give one, with --seed N")
    seed = seeds[0] if seeds else (option if option is not None else 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"seed must be an integer, got {seed!r}; give it with --seed N")
    return seed, rest


def make_points(folder: Path, runs: Path, rows: list[str], seed: int, extra: list[str]) -> list[Point]:
    """One point per row; an RRT row's stage1 is rewritten to its stage-1 row's folder of this seed."""
    for text in extra:
        key = parse_override(text)[0]
        if key in OWN_KEYS:
            raise UserError(f"'{text}' after -- is set by the script for every row (it names the run folder "
                            f"seed<N>/); use {OWN_KEYS[key]} instead")
    points = []
    for row in rows:
        config = folder / f"{row}.yaml"
        out = runs / row / f"seed{seed}"
        overrides = [f"seed={seed}", f"output_dir={out}", "logging.progress=false"]
        needs = []
        stage1 = load_config(config).method.rrt.stage1
        match = STAGE1.match(stage1)
        if match:
            needs.append(match.group(1))
            overrides.append(f"method.rrt.stage1={runs / match.group(1) / f'seed{seed}'}")
        points.append(Point(row, config, overrides + list(extra), out, needs))
        load_config(config, points[-1].overrides)  # a bad row or override fails now, before hours of runs
    return points


def preflight_plans(folder: Path, all_rows: list[str], rows: list[str], seed: int, extra: list[str]) -> list:
    """The preflight's rows: ``rows``, and the stage-1 row of any RRT row among them, in table order."""
    from ranksim.tools.preflight import RowPlan

    for text in extra:
        key = parse_override(text)[0]
        if key in OWN_KEYS:
            raise UserError(f"'{text}' after -- is set by the script for every row; use {OWN_KEYS[key]} instead")
    stage1 = {}
    for row in all_rows:
        try:
            match = STAGE1.match(load_config(folder / f"{row}.yaml").method.rrt.stage1)
        except UserError:
            continue  # a row whose config does not load is reported below if it was asked for
        if match and match.group(1) in all_rows:
            stage1[row] = match.group(1)
    wanted = set(rows) | {stage1[r] for r in rows if r in stage1}
    plans = [RowPlan(row, folder / f"{row}.yaml", [f"seed={seed}", "logging.progress=false"] + list(extra),
                     stage1.get(row)) for row in all_rows if row in wanted]
    for plan in plans:
        try:  # a bad row is one failed row of the preflight, not the end of it
            load_config(plan.config, plan.overrides)
        except UserError as err:
            plan.error = f"its config does not load: {err}"
    return plans


def main(argv: list[str] | None = None, train: list[str] | None = None) -> int:
    args, extra = parse_args(list(sys.argv[1:] if argv is None else argv))

    def body() -> int:
        folder = Path(args.dataset) if Path(args.dataset).is_dir() else Path("configs") / args.dataset
        if not folder.is_dir() or args.dataset in ("", "."):
            choices = " ".join(p.name for p in sorted(Path("configs").iterdir()) if p.name != "quickstart") \
                if Path("configs").is_dir() else ""
            raise UserError(f"no configs/{args.dataset}; choose one of: {choices}")
        runs = args.runs or Path("runs") / folder.name
        all_rows = table_rows(folder)
        if not all_rows:
            raise UserError(f"{folder} holds no row configs")
        rows = default_rows(all_rows)
        if args.rows:
            selected = [r.strip() for r in args.rows.split(",") if r.strip()]
            for row in selected:
                if row not in all_rows:
                    raise UserError(f"no row '{row}' in {folder} (rows: {' '.join(all_rows)})")
            rows = [r for r in all_rows if r in selected]  # table order: stage-1 rows before their RRT rows
        if args.jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {args.jobs}")
        seed, rest = seed_of(args.seed, extra)
        if args.preflight:
            from ranksim.tools.preflight import run_preflight
            if args.preflight_iters < 3:
                raise UserError(f"--preflight-iters must be at least 3 (2 warm-up, 1 timed), got {args.preflight_iters}")
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            scratch = args.preflight_dir or Path("preflight") / f"{folder.name}-{stamp}"
            plans = preflight_plans(folder, all_rows, rows, seed, rest)
            handler = logging.StreamHandler(sys.stdout)  # its progress and errors beside the sweep log
            handler.setFormatter(logging.Formatter("%(message)s"))
            preflight_log = logging.getLogger("ranksim.tools.preflight")
            preflight_log.addHandler(handler)
            preflight_log.setLevel(logging.INFO)
            try:
                return run_preflight(plans, scratch, keep=args.keep, iters=args.preflight_iters)
            finally:
                preflight_log.removeHandler(handler)
        elif args.keep or args.preflight_dir:
            raise UserError("--keep and --preflight-dir go with --preflight")
        points = make_points(folder, runs, rows, seed, rest)
        dataset = load_config(points[0].config, points[0].overrides).data.dataset
        outcomes = run_points(points, train=train, jobs=args.jobs, dry_run=args.dry_run, rerun_stale=args.rerun_stale)
        if args.dry_run:
            log.info("== then: %s scripts/collect_results.py %s --dataset %s", sys.executable, runs, dataset)
        else:
            from ranksim.results.report import collect, render
            tabled = current_runs(points, runs)
            if tabled:
                print(render(collect(tabled, dataset), "markdown"), flush=True)
            else:
                log.info("== no row has a current result to table")
        return report_failures(outcomes, "rows")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
