"""Text tables of shot metrics, in the paper's layout.

* :func:`region_table`: one run, every metric per region (``evaluate.py``).
* :func:`comparison_table`: several runs as rows, the paper's headline metrics per region as
  columns: MAE and GM for age, MSE and Pearson (x100) for STS-B (SPEC 5).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

REGIONS = ("all", "many", "medium", "few")
HEADLINE = {"age": (("mae", 1.0), ("gm", 1.0)), "sts_b": (("mse", 1.0), ("pearson", 100.0))}
# Balanced MSE's balanced metric (SPEC 9.1), shown after the headline when the runs report it.
BALANCED = {"age": (("bmae", 1.0),), "sts_b": (("bmse", 1.0),)}


def _cell(value, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def region_table(metrics: dict) -> str:
    """All metrics of one run, one row per shot region."""
    names = ("count", "mse", "mae", "gm", "pearson", "spearman", "bmse", "bmae")
    lines = [f"{'region':<8}" + "".join(f"{n:>10}" for n in names)]
    for region in REGIONS:
        values = metrics.get(region)
        if values is None:
            lines.append(f"{region:<8}" + f"{'0':>10}" + "".join(f"{'-':>10}" for _ in names[1:]))
            continue
        cells = [str(values["count"])] + [_cell(values.get(n)) for n in names[1:]]
        lines.append(f"{region:<8}" + "".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)


def comparison_table(rows: list[tuple[str, dict]], binning: str) -> str:
    """Runs side by side: ``rows`` is ``[(name, shot_metrics dict), ...]``."""
    headline = HEADLINE["sts_b" if binning == "sts_b" else "age"]
    width = max([len("method")] + [len(name) for name, _ in rows]) + 2
    top = " " * width + "".join(f"{metric.upper() + (' x100' if scale != 1 else ''):^36}" for metric, scale in headline)
    header = f"{'method':<{width}}" + "".join(f"{r:>9}" for _ in headline for r in REGIONS)
    lines = [top, header, "-" * len(header)]
    for name, metrics in rows:
        cells = [_cell((metrics.get(r) or {}).get(metric), scale) for metric, scale in headline for r in REGIONS]
        lines.append(f"{name:<{width}}" + "".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Collecting a folder of runs into a paper table

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "paper_tables.csv"
REFERENCE_DATASET = {"agedb": "agedb_dir", "imdb_wiki": "imdb_wiki_dir", "sts_b": "sts_b_dir"}
# Paper order of the rows, by title without " + RankSim" (each row is followed by its RankSim twin).
TITLE_ORDER = ["vanilla", "sqinv", "inv", "sqinv + lds", "inv + lds", "fds", "sqinv + fds", "sqinv + lds + fds",
               "inv + lds + fds", "focal-r", "focal-r + lds", "focal-r + fds", "focal-r + lds + fds",
               "rrt", "rrt + lds", "rrt + fds", "rrt + lds + fds"]
RANKSIM_SUFFIX = " + ranksim"


@dataclass
class Run:
    path: Path
    name: str
    title: str
    dataset: str
    seed: int
    metrics: dict | None      # test metrics, None while unfinished
    status: str               # "finished", or why not


def reference_numbers(dataset: str, path: Path = REFERENCE_CSV) -> dict:
    """``{(title, metric, shot): value}`` of the authors' published numbers for ``dataset``."""
    key = REFERENCE_DATASET.get(dataset)
    with open(path, newline="") as f:
        return {(r["method"], r["metric"], r["shot"]): float(r["value"])
                for r in csv.DictReader(f) if r["dataset"] == key}


def _status_of_unfinished(run_dir: Path, cfg: dict) -> str:
    log = run_dir / "train.log"
    errors = [line for line in log.read_text().splitlines() if " ERROR " in line] if log.is_file() else []
    if errors:
        return "failed: " + errors[-1].split(" ERROR ", 1)[1][:160]
    metrics = run_dir / "metrics.jsonl"
    done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    return f"unfinished: {done} validations of {cfg['schedule']['epochs']} epochs"


def discover_runs(runs_dir: Path) -> list[Run]:
    runs = []
    for config_path in sorted(Path(runs_dir).rglob("config.yaml")):
        run_dir = config_path.parent
        cfg = yaml.safe_load(config_path.read_text())
        results_path = run_dir / "results.json"
        metrics = json.loads(results_path.read_text())["metrics"] if results_path.is_file() else None
        runs.append(Run(run_dir, cfg["name"], cfg.get("title") or cfg["name"], cfg["data"]["dataset"], cfg["seed"],
                        metrics, "finished" if metrics else _status_of_unfinished(run_dir, cfg)))
    return runs


def _row_key(title: str) -> tuple:
    """Sort key of a row: the paper's position of its method, then without/with RankSim.

    A suffix in brackets (``VANILLA [CPU scale]``) marks a variant that sorts with its method.
    """
    text = title.split(" [")[0].strip().lower()
    ranksim = text.endswith(RANKSIM_SUFFIX)
    base = text[: -len(RANKSIM_SUFFIX)] if ranksim else text
    return (TITLE_ORDER.index(base) if base in TITLE_ORDER else len(TITLE_ORDER), base, ranksim, title)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


def collect(runs: list[Run], dataset: str, reference: dict | None = None) -> dict:
    """Group finished runs by row (mean and std over seeds) in paper order, with the authors' numbers."""
    binning = "sts_b" if dataset == "sts_b" else "age"
    reference = reference_numbers(dataset) if reference is None else reference
    chosen = [r for r in runs if r.dataset == dataset]
    finished = [r for r in chosen if r.metrics]
    headline = HEADLINE[binning] + tuple(h for h in BALANCED[binning]
                                         if any((r.metrics.get("all") or {}).get(h[0]) is not None for r in finished))
    rows = []
    titles = {r.name: r.title for r in finished}
    for name in sorted(titles, key=lambda n: _row_key(titles[n]) + (n,)):
        group = [r for r in finished if r.name == name]
        cells = {}
        for metric, scale in headline:
            for region in REGIONS:
                values = [r.metrics[region][metric] * scale for r in group
                          if r.metrics.get(region) and r.metrics[region].get(metric) is not None]
                mean, std = _mean_std(values) if values else (None, None)
                cells[(metric, region)] = {"ours": mean, "std": std,
                                           "theirs": reference.get((group[0].title, metric, region))}
        rows.append({"name": name, "title": group[0].title, "seeds": sorted(r.seed for r in group), "cells": cells})
    return {"dataset": dataset, "headline": headline, "rows": rows,
            "not_finished": [(str(r.path), r.status) for r in chosen if not r.metrics]}


def _format_cell(cell: dict, digits: int) -> str:
    if cell["ours"] is None:
        text = "-"
    else:
        text = f"{cell['ours']:.{digits}f}" + (f" ± {cell['std']:.{digits}f}" if cell["std"] is not None else "")
    if cell["theirs"] is not None:
        diff = "" if cell["ours"] is None else f", {cell['ours'] - cell['theirs']:+.{digits}f}"
        text += f" ({cell['theirs']:.{digits}f}{diff})"
    return text


def render(table: dict, fmt: str = "markdown") -> str:
    """The collected table as markdown, csv or latex; unfinished and failed runs listed below."""
    # The paper's precision: MSE to 3 decimals, Pearson x100 to 1, MAE and GM to 2.
    places = {"mse": 3, "bmse": 3, "pearson": 1}
    digit_of = {c: places.get(c[0], 2) for c in ((m, r) for m, _ in table["headline"] for r in REGIONS)}
    columns = [(metric, region) for metric, _ in table["headline"] for region in REGIONS]
    labels = [f"{m.upper()}{' x100' if scale != 1 else ''} {r}" for m, scale in table["headline"] for r in REGIONS]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["row", "title", "seeds", "metric", "shot", "ours", "std", "theirs", "difference"])
        for row in table["rows"]:
            for (metric, region), cell in row["cells"].items():
                diff = None if cell["ours"] is None or cell["theirs"] is None else cell["ours"] - cell["theirs"]
                writer.writerow([row["name"], row["title"], " ".join(map(str, row["seeds"])), metric, region,
                                 cell["ours"], cell["std"], cell["theirs"], diff])
        return out.getvalue().rstrip("\n")
    lines = []
    if fmt == "latex":
        lines.append("\\begin{tabular}{l" + "r" * len(columns) + "}")
        lines.append(" & ".join(["Method"] + labels) + " \\\\ \\hline")
        for row in table["rows"]:
            lines.append(" & ".join([row["title"]] + [_format_cell(row["cells"][c], digit_of[c]).replace("±", "$\\pm$")
                                                      for c in columns]) + " \\\\")
        lines.append("\\end{tabular}")
    else:
        lines.append("| Method | seeds | " + " | ".join(labels) + " |")
        lines.append("|---|---|" + "---:|" * len(columns))
        for row in table["rows"]:
            lines.append(f"| {row['title']} | {len(row['seeds'])} | "
                         + " | ".join(_format_cell(row["cells"][c], digit_of[c]) for c in columns) + " |")
        lines.append("")
        lines.append("Cells: ours (mean ± std over seeds), then in brackets the authors' number and our difference where they published one.")
    if table["not_finished"]:
        lines.append("")
        lines.append("Runs without results:")
        lines += [f"  {path}: {status}" for path, status in table["not_finished"]]
    return "\n".join(lines)


def load_results(run_dir) -> tuple[str, dict, str]:
    """``(title, test metrics, binning)`` of a finished run folder."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    binning = "sts_b" if cfg["data"]["dataset"] == "sts_b" else "age"
    return cfg.get("title") or results["name"], results["metrics"], binning


def main(argv: list[str] | None = None) -> int:
    """``python -m ranksim.report RUN_DIR [RUN_DIR ...]``: the runs' test metrics side by side."""
    import argparse

    parser = argparse.ArgumentParser(description="Print finished runs' test metrics side by side.")
    parser.add_argument("runs", nargs="+", help="run folders holding results.json and config.yaml")
    args = parser.parse_args(argv)
    loaded = [load_results(run) for run in args.runs]
    print(comparison_table([(name, metrics) for name, metrics, _ in loaded], loaded[0][2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
