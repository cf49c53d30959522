"""Text tables of shot metrics, in the paper's layout.

* :func:`region_table`: one run, every metric per region (``train.py``, ``evaluate.py``).
* :func:`discover_runs`, :func:`collect`, :func:`render`: a folder of runs as one table, one row
  per config (mean ± std over its seeds), the paper's headline metrics per region as columns
  (MAE and GM for age, MSE and Pearson x100 for STS-B, SPEC 5), the authors' numbers beside
  ours. ``scripts/collect_results.py``, the reproduce scripts, the quick start and
  ``scripts/sweep.py`` all print it.

Runs are grouped by what they are (:mod:`ranksim.engine.identity`): their title, their config without
the operational keys and without the seed, their provenance (trained here, or converted from the
authors' weights: never averaged with ours, and labelled) and the fingerprint of their data. Runs
of the same config and seed are duplicates: the first (by path) counts, the others are listed.
Runs of another results version, or RRT runs whose stage 1 cannot be proved, are stale: listed
and left out of the means unless ``include_stale``.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ranksim.engine.identity import (comparable, config_key, format_value, is_set_aside, provenance_key,
                                     provenance_label, read_identity, stale_reason, without_seed)
from ranksim.engine.runs import last_error

REGIONS = ("all", "many", "medium", "few")
HEADLINE = {"age": (("mae", 1.0), ("gm", 1.0)), "sts_b": (("mse", 1.0), ("pearson", 100.0))}
# Feature diagnostics of results.json, shown by render(..., diagnostics=True) as a second table.
DIAGNOSTICS = ("rank_corr", "ranksim_reg", "cos_mean", "cos_p05")
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


# ---------------------------------------------------------------------------------------------
# Collecting a folder of runs into a paper table

REFERENCE_CSV = Path(__file__).resolve().parents[1] / "reference" / "paper_tables.csv"
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
    config: dict = field(default_factory=dict)  # ranksim.engine.identity.comparable of its config.yaml (seed included)
    diagnostics: dict | None = None  # test-split feature diagnostics (ranksim.evaluation.diagnostics.FeatureDiagnostics)
    provenance: dict = field(default_factory=lambda: {"kind": "trained"})  # ranksim.engine.identity: trained or converted
    data: str | None = None   # fingerprint of the splits it saw (ranksim.engine.identity.data_fingerprint)
    stale: str | None = None  # why its numbers are not the current code's (ranksim.engine.identity.stale_reason)


def reference_numbers(dataset: str, path: Path = REFERENCE_CSV) -> dict:
    """``{(title, metric, shot): value}`` of the authors' published numbers for ``dataset``."""
    key = REFERENCE_DATASET.get(dataset)
    with open(path, newline="") as f:
        return {(r["method"], r["metric"], r["shot"]): float(r["value"])
                for r in csv.DictReader(f) if r["dataset"] == key}


def _status_of_unfinished(run_dir: Path, cfg: dict) -> str:
    error = last_error(run_dir)
    if error:
        return "failed: " + error
    metrics = run_dir / "metrics.jsonl"
    done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    return f"unfinished: {done} validations of {cfg['schedule']['epochs']} epochs"


def discover_runs(runs_dir: Path) -> list[Run]:
    runs_dir = Path(runs_dir)
    runs = []
    for config_path in sorted(runs_dir.rglob("config.yaml")):
        run_dir = config_path.parent
        parts = run_dir.relative_to(runs_dir).parts
        if any(is_set_aside(runs_dir.joinpath(*parts[:depth])) for depth in range(1, len(parts) + 1)):
            continue  # it, or a folder it is in, was moved aside by --rerun-stale, which recorded why
        cfg = yaml.safe_load(config_path.read_text())
        results_path = run_dir / "results.json"
        results = json.loads(results_path.read_text()) if results_path.is_file() else {}
        metrics = results.get("metrics")
        config = comparable(cfg, run_dir)
        identity = read_identity(run_dir)
        runs.append(Run(run_dir, cfg["name"], cfg.get("title") or cfg["name"], cfg["data"]["dataset"], cfg["seed"],
                        metrics, "finished" if metrics else _status_of_unfinished(run_dir, cfg),
                        config, results.get("diagnostics"), identity.provenance, identity.data,
                        stale_reason(run_dir, config, identity)))
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


def _sort_value(value) -> tuple:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, format_value(value))


def collect(runs: list[Run], dataset: str, reference: dict | None = None, columns: list[str] = (),
            include_stale: bool = False) -> dict:
    """One row per run identity but the seed (mean and std over seeds), in paper order.

    Rows that share a title are labelled by the config keys in which they differ
    (``Vanilla + RankSim (method.ranksim.gamma=10)``) and carry no authors' numbers, which belong
    to one of them at most. Converted weights are a row of their own, labelled as the authors'
    weights evaluated here, beside the published number. Runs of the same config on other data
    are rows of their own, labelled by the data fingerprint. ``columns`` are config keys shown as
    columns instead of in the label. Stale runs are listed apart, or with ``include_stale``
    counted in rows of their own marked ``[stale]``.
    """
    binning = "sts_b" if dataset == "sts_b" else "age"
    reference = reference_numbers(dataset) if reference is None else reference
    chosen = [r for r in runs if r.dataset == dataset]
    counted = [r for r in chosen if r.metrics and (include_stale or not r.stale)]
    fingerprints = {r.data for r in counted} - {None}
    groups: dict[tuple, list[Run]] = {}
    for run in sorted(counted, key=lambda r: str(r.path)):
        title = " ".join(filter(None, [run.title, provenance_label(run.provenance),
                                       f"[data {run.data[:8]}]" if len(fingerprints) > 1 and run.data else "",
                                       "[stale]" if run.stale else ""]))
        key = (title, config_key(without_seed(run.config)), provenance_key(run.provenance), run.data, bool(run.stale))
        groups.setdefault(key, []).append(run)
    duplicates, kept = [], {}
    for key, group in groups.items():
        by_seed: dict[int, Run] = {}
        for run in group:
            if run.seed in by_seed:
                duplicates.append((str(run.path), str(by_seed[run.seed].path)))
            else:
                by_seed[run.seed] = run
        kept[key] = list(by_seed.values())
    labels, sort_values = {}, {}
    for title in {k[0] for k in kept}:
        keys = [k for k in kept if k[0] == title]
        configs = [without_seed(kept[k][0].config) for k in keys]
        differing = sorted(name for name in set().union(*configs)
                           if len({format_value(c.get(name)) for c in configs}) > 1)
        shown = [name for name in differing if name not in columns]
        for k, config in zip(keys, configs):
            label = ", ".join(f"{name}={format_value(config.get(name))}" for name in shown)
            labels[k] = f"{title} ({label})" if label else title
            sort_values[k] = tuple(_sort_value(config.get(name)) for name in list(columns) + differing)
    finished = [r for group in kept.values() for r in group]
    headline = HEADLINE[binning] + tuple(h for h in BALANCED[binning]
                                         if any((r.metrics.get("all") or {}).get(h[0]) is not None for r in finished))
    rows = []
    for key in sorted(kept, key=lambda k: _row_key(k[0]) + (sort_values[k], kept[k][0].name)):
        group, title = kept[key], key[0]
        shared = sum(k[0] == title for k in kept) > 1
        paper_title = group[0].title  # the published number is looked up by the row's own title
        cells = {}
        for metric, scale in headline:
            for region in REGIONS:
                values = [r.metrics[region][metric] * scale for r in group
                          if r.metrics.get(region) and r.metrics[region].get(metric) is not None]
                mean, std = _mean_std(values) if values else (None, None)
                cells[(metric, region)] = {"ours": mean, "std": std,
                                           "theirs": None if shared else reference.get((paper_title, metric, region))}
        diagnostics = {}
        for name in DIAGNOSTICS:
            values = [r.diagnostics[name] for r in group if r.diagnostics and r.diagnostics.get(name) is not None]
            mean, std = _mean_std(values) if values else (None, None)
            diagnostics[name] = {"ours": mean, "std": std, "theirs": None}
        rows.append({"name": group[0].name, "title": labels[key], "seeds": sorted(r.seed for r in group),
                     "values": {c: group[0].config.get(c) for c in columns}, "cells": cells,
                     "diagnostics": diagnostics})
    return {"dataset": dataset, "headline": headline, "rows": rows, "columns": list(columns),
            "duplicates": duplicates, "not_finished": [(str(r.path), r.status) for r in chosen if not r.metrics],
            "stale": [] if include_stale else [(str(r.path), r.stale) for r in chosen if r.metrics and r.stale]}


def _format_cell(cell: dict, digits: int) -> str:
    if cell["ours"] is None:
        text = "-"
    else:
        text = f"{cell['ours']:.{digits}f}" + (f" ± {cell['std']:.{digits}f}" if cell["std"] is not None else "")
    if cell["theirs"] is not None:
        diff = "" if cell["ours"] is None else f", {cell['ours'] - cell['theirs']:+.{digits}f}"
        text += f" ({cell['theirs']:.{digits}f}{diff})"
    return text


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text) -> str:
    """``text`` as LaTeX prints it literally (row labels hold config keys such as
    ``method.ranksim.interpolation_lambda=2``, whose ``_`` does not compile)."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _notes(table: dict) -> list[list[str]]:
    """What follows the table: duplicate, stale and unfinished runs, each a heading and one line per run."""
    notes = []
    if table.get("duplicates"):
        notes.append(["Duplicate runs (the same config and seed as a run in the table; left out of the means):"]
                     + [f"  {path}: same as {kept}" for path, kept in table["duplicates"]])
    if table.get("stale"):
        notes.append(["Stale runs (left out of the table; rerun them, or count them with --include-stale):"]
                     + [f"  {path}: {reason}" for path, reason in table["stale"]])
    if table["not_finished"]:
        # A failure's message is one log line, but a hand-edited log could hold a line break.
        notes.append(["Runs without results:"]
                     + [f"  {path}: {' '.join(str(status).splitlines())}" for path, status in table["not_finished"]])
    return notes


def render(table: dict, fmt: str = "markdown", diagnostics: bool = False) -> str:
    """The collected table as markdown, csv or latex; duplicates, unfinished and failed runs below.

    Every format carries the same rows, seeds and notes, in a form that stays valid: csv gives
    each duplicate and each run without results a record of its own, with only its last column
    ``note`` filled (empty in the metric records); latex escapes the text of its cells and puts
    the notes in ``%`` comment lines after the tabular, so that ``> table.tex`` compiles.

    With ``diagnostics``, the feature diagnostics on the test split: rank correlation, RankSim
    regularizer and pairwise cosine (docs/ranksim_features.md); a second table
    in markdown and latex, records of shot ``test features`` in csv.
    """
    # The paper's precision: MSE to 3 decimals, Pearson x100 to 1, MAE and GM to 2.
    places = {"mse": 3, "bmse": 3, "pearson": 1}
    digit_of = {c: places.get(c[0], 2) for c in ((m, r) for m, _ in table["headline"] for r in REGIONS)}
    columns = [(metric, region) for metric, _ in table["headline"] for region in REGIONS]
    labels = [f"{m.upper()}{' x100' if scale != 1 else ''} {r}" for m, scale in table["headline"] for r in REGIONS]
    keys = table.get("columns", [])  # config keys shown as columns (a sweep's swept keys)

    def values(row: dict) -> list[str]:
        return [format_value(row["values"][k]) for k in keys]

    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        header = ["row", "title", *keys, "seeds", "metric", "shot", "ours", "std", "theirs", "difference", "note"]
        writer.writerow(header)
        for row in table["rows"]:
            for (metric, region), cell in row["cells"].items():
                diff = None if cell["ours"] is None or cell["theirs"] is None else cell["ours"] - cell["theirs"]
                writer.writerow([row["name"], row["title"], *values(row), " ".join(map(str, row["seeds"])), metric,
                                 region, cell["ours"], cell["std"], cell["theirs"], diff, ""])
            for name in DIAGNOSTICS if diagnostics else ():
                cell = row["diagnostics"][name]
                writer.writerow([row["name"], row["title"], *values(row), " ".join(map(str, row["seeds"])), name,
                                 "test features", cell["ours"], cell["std"], None, None, ""])
        blank = [""] * (len(header) - 1)
        for path, kept in table.get("duplicates", []):
            writer.writerow(blank + [f"duplicate run {path}: the same config and seed as {kept}; left out of the means"])
        for path, reason in table.get("stale", []):
            writer.writerow(blank + [f"stale run {path}: {reason}; left out of the table"])
        for path, status in table["not_finished"]:
            writer.writerow(blank + [f"run without results {path}: {' '.join(str(status).splitlines())}"])
        return out.getvalue().rstrip("\n")
    lines = []
    if fmt == "latex":
        lines.append("\\begin{tabular}{l" + "r" * (len(keys) + 1 + len(columns)) + "}")
        lines.append(" & ".join(["Method", *map(latex_escape, keys), "seeds"] + labels) + " \\\\ \\hline")
        for row in table["rows"]:
            lines.append(" & ".join([latex_escape(row["title"]), *map(latex_escape, values(row)), str(len(row["seeds"]))]
                                    + [_format_cell(row["cells"][c], digit_of[c]).replace("±", "$\\pm$")
                                       for c in columns]) + " \\\\")
        lines.append("\\end{tabular}")
        if diagnostics:
            lines += ["", "\\begin{tabular}{l" + "r" * (1 + len(DIAGNOSTICS)) + "}",
                      " & ".join(["Method", "seeds", *map(latex_escape, DIAGNOSTICS)]) + " \\\\ \\hline"]
            lines += [" & ".join([latex_escape(row["title"]), str(len(row["seeds"]))]
                                 + [_format_cell(row["diagnostics"][d], 3).replace("±", "$\\pm$") for d in DIAGNOSTICS])
                      + " \\\\" for row in table["rows"]]
            lines.append("\\end{tabular}")
        # Comments need no escaping (only a line break would end one), so the paths stay copyable.
        lines += ["% " + line for note in _notes(table) for line in note]
        return "\n".join(lines)
    else:
        lines.append("| Method | " + "".join(f"{k} | " for k in keys) + "seeds | " + " | ".join(labels) + " |")
        lines.append("|---|" + "---:|" * len(keys) + "---|" + "---:|" * len(columns))
        for row in table["rows"]:
            title = row["title"].replace("|", "\\|")  # a | in a title would split its markdown cell
            lines.append(f"| {title} | " + "".join(f"{v} | " for v in values(row)) + f"{len(row['seeds'])} | "
                         + " | ".join(_format_cell(row["cells"][c], digit_of[c]) for c in columns) + " |")
        lines.append("")
        theirs = any(cell["theirs"] is not None for row in table["rows"] for cell in row["cells"].values())
        lines.append("Cells: ours (mean ± std over seeds)" + (", then in brackets the authors' number and our "
                                                                "difference where they published one." if theirs else "."))
        if diagnostics:
            lines += ["", "Features on the test split (higher rank_corr, lower ranksim_reg: the label order "
                          "RankSim asks for; cos near 1: collapsed):", "",
                      "| Method | seeds | " + " | ".join(DIAGNOSTICS) + " |", "|---|---|" + "---:|" * len(DIAGNOSTICS)]
            for row in table["rows"]:
                lines.append(f"| {row['title']} | {len(row['seeds'])} | "
                             + " | ".join(_format_cell(row["diagnostics"][d], 3) for d in DIAGNOSTICS) + " |")
    for note in _notes(table):
        lines += ["", *note]
    return "\n".join(lines)
