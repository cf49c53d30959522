"""Grids of training runs (sweeps, paper tables): run them, reuse only what is provably the same run.

* :func:`run_points`: run a list of :class:`Point` through ``train.py``, one run folder each. A
  point whose folder holds the same run (:mod:`ranksim.engine.identity`: the same config, seed included,
  trained here on the same data by the current results version) is skipped when it has
  ``results.json`` and resumed when it has only ``checkpoints/last.pt``. A folder holding any
  other run is refused as stale, with the reason (or, with ``rerun_stale``, moved aside and
  rerun). A point is moved aside and rerun when a point it needs (RRT stage 2 needs its stage 1)
  was run again, in this invocation or, by the checkpoint's SHA-256 in the RRT run's
  ``stage1.json``, in an earlier one. A failed point does not stop the others; the points that
  need it are not started.
* :func:`current_runs`: the finished runs that a table of these points may show: their configs
  (any seed), current, on the same data. Nothing else is tabled after a run of the grid.
* :func:`grid_points` and :func:`sweep`: the Cartesian grid of ``key=v1,v2`` values that
  ``scripts/sweep.py`` runs, also usable from Python::

      from ranksim.tools.sweep import sweep
      outcomes, table = sweep("configs/quickstart/ranksim.yaml",
                              {"method.ranksim.gamma": [1, 10], "seed": [0, 1]},
                              overrides=["schedule.epochs=1"], out="runs/sweeps/gamma")
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from ranksim.config import load_config, parse_override
from ranksim.errors import UserError, exit_status
from ranksim.engine.identity import (SEED_KEY, comparable, config_key, data_fingerprint, differences, is_operational,
                                     read_identity, record_set_aside, stale_reason, without_seed)
from ranksim.engine.runs import last_error

logger = logging.getLogger("ranksim.sweep")
REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Running a list of points


@dataclass
class Point:
    name: str                  # what the log and the list of failures call it: a table row, or the swept values
    config: Path               # the YAML file
    overrides: list[str]       # key=value after the file, output_dir= and seed= included
    out: Path                  # the run folder
    needs: list[str] = field(default_factory=list)  # names of points whose runs this one loads (RRT stage 1)


@dataclass
class Outcome:
    point: Point
    # finished (done before, skipped) | ran | resumed | planned (dry run) | failed | stale | blocked
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("finished", "ran", "resumed", "planned")


def default_train_command() -> list[str]:
    return [sys.executable, str(Path("train.py") if Path("train.py").is_file() else REPO_ROOT / "train.py")]


def _stale_reason(point: Point, rerun_needs: list[str]) -> str | None:
    """Why the run in ``point.out`` is not the run ``point`` asks for now; None when it is.

    The same run (ranksim.engine.identity): the same config, seed included; trained here; on the same
    data; by the current results version; for RRT, on the stage 1 it recorded.
    """
    if rerun_needs:
        return f"it loads {', '.join(rerun_needs)}, which was run again just now"
    stored_path = point.out / "config.yaml"
    if not stored_path.is_file():
        return f"{stored_path} is missing, so the run cannot be checked against the config"
    stored = comparable(yaml.safe_load(stored_path.read_text()) or {}, point.out)
    wanted_cfg = load_config(point.config, point.overrides)
    diff = differences(stored, comparable(wanted_cfg, point.out))
    if diff:
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        return "its config.yaml differs from the config asked for: " + "; ".join(diff[:3]) + more
    identity = read_identity(point.out)
    if identity.provenance.get("kind") != "trained":
        return "it holds converted weights, not a run trained here"
    data = data_fingerprint(wanted_cfg)
    if identity.data and data and identity.data != data:
        return f"it was trained on other data (split fingerprint {identity.data}, the data now {data})"
    return stale_reason(point.out, stored, identity)


def _move_aside(out: Path, reason: str) -> Path:
    """Move the run in ``out`` to ``<out>.staleN`` (the first free N) and record there why it was
    set aside (identity.record_set_aside): the collector leaves it out by that record."""
    n = 1
    while (target := out.with_name(f"{out.name}.stale{n}")).exists():
        n += 1
    out.rename(target)
    record_set_aside(target, reason)
    return target


def _failure_detail(point: Point, returncode: int, log_size: int) -> str:
    error = last_error(point.out, since=log_size) if returncode != 130 else "interrupted"
    return error or f"train.py exited with status {returncode} (see {point.out}/console.log or the output above)"


def run_points(points: Sequence[Point], train: Sequence[str] | None = None, jobs: int = 1, dry_run: bool = False,
               rerun_stale: bool = False) -> list[Outcome]:
    """Run ``points`` in order (``jobs`` at a time), each point once its ``needs`` are done.

    Returns one :class:`Outcome` per point, in the order of ``points``. ``train`` is the command
    that stands for ``python train.py`` (tests pass a stand-in). With ``jobs > 1`` each run's
    console output goes to ``<run folder>/console.log``.
    """
    train = list(train or default_train_command())
    names = {p.name for p in points}
    if len(names) != len(points):
        raise UserError("two points of one grid have the same name; each needs its own run folder")
    pending = list(points)
    running: dict[subprocess.Popen, tuple] = {}  # process -> (point, status, console log, train.log size)
    done: dict[str, Outcome] = {}
    try:
        while pending or running:
            for point in list(pending):
                if len(running) >= max(1, jobs):
                    break
                needs = [n for n in point.needs if n in names]
                if any(n not in done for n in needs):
                    continue
                pending.remove(point)
                failed = [n for n in needs if not done[n].ok]
                if failed:
                    done[point.name] = Outcome(point, "blocked", f"not started: it needs {', '.join(failed)}, which failed")
                    logger.info("== %s: %s", point.name, done[point.name].detail)
                    continue
                started = _start(point, train, [n for n in needs if done[n].status in ("ran", "resumed", "planned")],
                                 jobs, dry_run, rerun_stale)
                if isinstance(started, Outcome):
                    done[point.name] = started
                else:
                    running[started[0]] = (point, *started[1:])
            if running:
                _wait_one(running, done)
            elif pending and all(any(n in names and n not in done for n in p.needs) for p in pending):
                raise UserError(f"the points {', '.join(p.name for p in pending)} need each other; none can start")
    except KeyboardInterrupt:
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
        raise
    return [done[p.name] for p in points]


def _start(point: Point, train: list[str], rerun_needs: list[str], jobs: int, dry_run: bool, rerun_stale: bool):
    """Skip, refuse or launch one point: an :class:`Outcome`, or ``(process, status, console log, train.log size)``."""
    out = point.out
    command = train + ["-c", str(point.config), *point.overrides]
    status = "ran"
    if (out / "results.json").is_file() or (out / "checkpoints" / "last.pt").is_file():
        try:
            reason = _stale_reason(point, rerun_needs)
        except UserError as err:
            reason = f"its config cannot be resolved: {err}"
        if reason and not rerun_stale and not rerun_needs:
            detail = (f"{out} holds a stale run: {reason}; move it away, or pass --rerun-stale "
                      "to move it aside and run again")
            logger.info("== %s: stale, not rerun: %s", point.name, detail)
            return Outcome(point, "stale", detail)
        if reason:
            logger.info("== %s: %s; %s", point.name, reason,
                        "would move it aside" if dry_run else f"moved it to {_move_aside(out, reason)}")
        elif (out / "results.json").is_file():
            logger.info("== %s: finished (%s), skipped", point.name, out / "results.json")
            return Outcome(point, "finished")
        else:
            command = train + ["--resume", str(out)]
            status = "resumed"
    logger.info("== %s: %s", point.name, " ".join(command))
    if dry_run:
        return Outcome(point, "planned")
    log_file = None
    if jobs > 1:
        out.mkdir(parents=True, exist_ok=True)
        log_file = open(out / "console.log", "a")
    log = out / "train.log"
    log_size = log.stat().st_size if log.is_file() else 0  # the errors after it are this run's
    proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT if log_file else None)
    return proc, status, log_file, log_size


def _wait_one(running: dict, done: dict) -> None:
    while True:
        for proc, (point, status, log_file, log_size) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[proc]
            if log_file is not None:
                log_file.close()
            if code == 0:
                done[point.name] = Outcome(point, status)
                if len(running) or log_file is not None:
                    logger.info("== %s: done", point.name)
            else:
                done[point.name] = Outcome(point, "failed", _failure_detail(point, code, log_size))
                logger.info("== %s: FAILED: %s", point.name, done[point.name].detail)
            return
        time.sleep(0.1)


def run_command(body: Callable[[], int]) -> int:
    """Run a grid script's ``body`` with this module's log on stdout, as the command-line scripts do.

    A :class:`UserError` becomes one line on stderr and exit status 2; Ctrl-C exits 130 and says
    that the same command resumes.
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return exit_status(body, "interrupted; run the same command again to resume")
    finally:
        logger.removeHandler(handler)


def report_failures(outcomes: Iterable[Outcome], what: str = "points") -> int:
    """Log the failed points, one a line; the exit status a script should end with (0 or 1)."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return 0
    logger.info("%d %s failed: %s", len(failed), what, ", ".join(o.point.name for o in failed))
    for o in failed:
        logger.info("  %s (%s): %s", o.point.name, o.status, o.detail)
    return 1


# ---------------------------------------------------------------------------------------------
# Grids


def split_values(text: str) -> list[str]:
    """``1,10,100`` -> three values; commas inside brackets stay (``[5,8],[6,9]`` is two lists)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    if any(v.strip() == "" for v in values):
        raise UserError(f"'{text}' has an empty value; give values as key=v1,v2,v3")
    return [v.strip() for v in values]


def parse_grid(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["method.ranksim.gamma=1,10", "seed=0,1"]`` -> ``{key: [value texts]}``, in order."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, _ = parse_override(spec)
        if key in grid:
            raise UserError(f"'{key}' is given twice; list all its values in one key=v1,v2 argument")
        grid[key] = split_values(spec.split("=", 1)[1])
    return grid


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _leaf_names(keys: list[str]) -> dict[str, str]:
    """The last part of each key, or the whole key where two keys share their last part."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (leaf if leaves.count(leaf) == 1 else k) for k, leaf in zip(keys, leaves)}


def _folder_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "empty"


def grid_points(config: str | Path, grid: dict[str, Sequence[Any]], overrides: Sequence[str] = (),
                out: str | Path | None = None, progress: bool = True) -> tuple[Path, list[Point]]:
    """The sweep folder and one :class:`Point` per combination of the grid's values.

    ``overrides`` apply to every point. Keys with one value are fixed overrides, not swept. Each
    point runs into ``out/<leaf>=<value>_...`` (``gamma=10_seed=0``) and logs the swept keys as
    TensorBoard hparams. Every point's config is resolved here, so a typo fails before any run.
    """
    config = Path(config)
    grid = {k: [_value_text(v) for v in values] for k, values in grid.items()}
    swept = [k for k, values in grid.items() if len(values) > 1]
    fixed = list(overrides) + [f"{k}={values[0]}" for k, values in grid.items() if len(values) == 1]
    if not swept:
        raise UserError("nothing to sweep: give at least one key with two or more values, e.g. method.ranksim.gamma=1,10")
    for key in swept:
        if is_operational(key):
            raise UserError(f"'{key}' does not change what is trained (ranksim.engine.identity.OPERATIONAL_KEYS), so its "
                            "points would be one config; set it for every point after --")
    fixed_keys = {parse_override(text)[0] for text in fixed}
    for key in swept:
        if key in fixed_keys:
            raise UserError(f"'{key}' is swept and also set for every point; keep one of the two")
    base = load_config(config, fixed)
    leaves = _leaf_names(swept)
    if out is None:
        out = Path("runs") / "sweeps" / base.name / "-".join(_folder_part(leaves[k]) for k in swept)
    out = Path(out)
    hparams = "logging.hparams=[" + ",".join(swept) + "]"
    points, folders = [], set()
    # A seed set for every point is part of each folder's name, so that the same grid with
    # another seed trains into new folders instead of meeting the first seed's runs.
    seed_part = "" if SEED_KEY in swept else f"_seed={base.seed}"
    for values in itertools.product(*(grid[k] for k in swept)):
        name = "_".join(f"{_folder_part(leaves[k])}={_folder_part(v)}" for k, v in zip(swept, values)) + seed_part
        if name in folders:
            raise UserError(f"two points of the grid would share the run folder {name}; give values that differ "
                            "in letters or digits")
        folders.add(name)
        point_overrides = fixed + [f"{k}={v}" for k, v in zip(swept, values)] + [hparams]
        point_overrides += [] if progress else ["logging.progress=false"]
        point_overrides.append(f"output_dir={out / name}")
        load_config(config, point_overrides)  # fail now on a bad key or value, not after hours of runs
        points.append(Point(name, config, point_overrides, out / name))
    return out, points


def sweep(config: str | Path, grid: dict[str, Sequence[Any]], overrides: Sequence[str] = (),
          out: str | Path | None = None, jobs: int = 1, dry_run: bool = False, rerun_stale: bool = False,
          train: Sequence[str] | None = None) -> tuple[list[Outcome], str]:
    """Run the grid (see :func:`grid_points`) and collect it: ``(outcomes, markdown table)``.

    The table has one row per config of the grid (mean ± std over every seed of it in the sweep
    folder, from this invocation or an earlier one), one column per swept key other than the seed.
    It shows only :func:`current_runs`; it is empty in a dry run, and when no point has a result.
    """
    from ranksim.results.report import collect, render

    out, points = grid_points(config, grid, overrides, out, progress=jobs == 1)
    outcomes = run_points(points, train=train, jobs=jobs, dry_run=dry_run, rerun_stale=rerun_stale)
    if dry_run:
        return outcomes, ""
    runs = current_runs(points, out)
    if not runs:
        return outcomes, ""
    columns = [k for k, values in grid.items() if len(values) > 1 and k != SEED_KEY]
    dataset = load_config(config, points[0].overrides).data.dataset
    return outcomes, render(collect(runs, dataset, columns=columns), "markdown")


def current_runs(points: Sequence[Point], runs_dir: Path) -> list:
    """The finished runs under ``runs_dir`` that a table of ``points`` may show.

    A run counts when it is the run of one of the points' configs with any seed: the same config
    but for the seed, trained here by the current results version, on the data the point would
    read now (when that is known). So a table printed after a grid never shows a run that the
    grid refused as stale, nor one of another config left in the same folder.
    """
    from ranksim.results.report import discover_runs

    wanted: dict[str, str | None] = {}
    for point in points:
        cfg = load_config(point.config, point.overrides)
        wanted[config_key(without_seed(comparable(cfg, point.out)))] = data_fingerprint(cfg)
    if not Path(runs_dir).is_dir():
        return []
    chosen = []
    for run in discover_runs(Path(runs_dir)):
        key = config_key(without_seed(run.config))
        if key not in wanted or run.stale or run.provenance.get("kind") != "trained" or not run.metrics:
            continue
        if wanted[key] and run.data and wanted[key] != run.data:
            continue
        chosen.append(run)
    return chosen
