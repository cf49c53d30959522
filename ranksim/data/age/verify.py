"""Checking a prepared age data root against its split file and the published totals.

Every path exists as a non-empty file, no path is listed twice, every age is in range, and the rows
per split are printed beside the published totals.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ranksim.data.age.benchmarks import AgeBenchmark
from ranksim.data.age.split_file import SPLITS, read_age_split
from ranksim.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_age_split`. Problems are listed by file name."""

    counts: dict
    published: dict
    published_source: str
    age_min: int
    age_max: int
    age_range: tuple
    missing: list = field(default_factory=list)      # listed but not on disk
    empty: list = field(default_factory=list)        # on disk with 0 bytes
    bad_ages: list = field(default_factory=list)     # (path, age) outside age_range
    duplicates: list = field(default_factory=list)   # paths listed more than once
    files_checked: bool = True

    @property
    def ok(self) -> bool:
        return not (self.missing or self.empty or self.bad_ages or self.duplicates)

    @property
    def counts_match(self) -> bool:
        return all(self.counts.get(s, 0) == self.published.get(s) for s in SPLITS)


def _scan(root: Path, paths: list[str]) -> tuple[list[str], list[str]]:
    # One directory listing per folder instead of one stat per path: 200k stats cost minutes on a
    # network file system, a few hundred listings do not.
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel in paths:
        folder, _, name = rel.rpartition("/")
        by_dir[folder].append(name)
    missing, empty = [], []
    for folder, names in tqdm(by_dir.items(), desc="checking images", unit="dir", leave=False,
                              disable=len(by_dir) < 20):
        try:
            entries = {e.name: e for e in os.scandir(root / folder)}
        except (FileNotFoundError, NotADirectoryError):
            entries = {}
        for name in names:
            rel = f"{folder}/{name}" if folder else name
            entry = entries.get(name)
            if entry is None or not entry.is_file():
                missing.append(rel)
            elif entry.stat().st_size == 0:
                empty.append(rel)
    return missing, empty


def verify_age_split(root: str | os.PathLike, split: pd.DataFrame | str | os.PathLike,
                     benchmark: AgeBenchmark, check_files: bool = True) -> VerifyReport:
    """Check a split file against the data root and the published totals.

    Checks: every path exists under ``root`` as a non-empty file (when ``check_files``), no path
    is listed twice, every age lies in ``benchmark.age_range``; and counts rows per split for
    comparison with ``benchmark.published`` (a difference is reported, not an error).
    """
    df = read_age_split(split) if not isinstance(split, pd.DataFrame) else split
    root = Path(root)
    counts = {s: int((df["split"] == s).sum()) for s in SPLITS}
    lo, hi = benchmark.age_range
    out_of_range = df[(df["age"] < lo) | (df["age"] > hi)]
    report = VerifyReport(counts=counts, published=dict(benchmark.published),
                          published_source=benchmark.published_source,
                          age_min=int(df["age"].min()), age_max=int(df["age"].max()), age_range=(lo, hi),
                          bad_ages=list(zip(out_of_range["path"], out_of_range["age"].astype(int), strict=True)),
                          duplicates=sorted(set(df.loc[df["path"].duplicated(), "path"])),
                          files_checked=check_files)
    if check_files:
        report.missing, report.empty = _scan(root, df["path"].tolist())
    return report


def _listing(items: list, limit: int = 10) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def print_verify_report(report: VerifyReport, benchmark: AgeBenchmark, split_path: Path, root: Path) -> None:
    """Print the counts table (stdout) and log each problem, naming the files."""
    lines = [f"{benchmark.title}: {split_path}",
             f"{'split':<6} {'rows':>9} {'published':>10} {'diff':>7}"]
    for s in SPLITS:
        ours, theirs = report.counts[s], report.published.get(s)
        lines.append(f"{s:<6} {ours:>9,} {theirs:>10,} {ours - theirs:>+7,}")
    lines.append(f"ages {report.age_min}..{report.age_max} (allowed {report.age_range[0]}..{report.age_range[1]})")
    if report.files_checked:
        n = sum(report.counts.values())
        lines.append(f"images under {root}: {n - len(report.missing):,} of {n:,} found, "
                     f"{len(report.empty):,} empty")
    print("\n".join(lines))
    if not report.counts_match:
        logger.warning("the rows per split differ from the %s (%s); results will not be comparable "
                       "with the papers' tables", report.published_source,
                       " / ".join(f"{report.published[s]:,}" for s in SPLITS))
    if report.missing:
        logger.error("%d image(s) listed in %s are missing under %s: %s", len(report.missing),
                     split_path.name, root, _listing(report.missing))
        if len(report.missing) == sum(report.counts.values()):
            logger.error("no image at all was found: is %s the folder that holds the images' folders "
                         "(the split file's paths are relative to it)?", root)
    if report.empty:
        logger.error("%d image(s) are empty files: %s", len(report.empty), _listing(report.empty))
    if report.bad_ages:
        logger.error("%d row(s) have an age outside %d..%d: %s", len(report.bad_ages), *report.age_range,
                     _listing([f"{p} ({a})" for p, a in report.bad_ages]))
    if report.duplicates:
        logger.error("%d path(s) are listed more than once: %s", len(report.duplicates), _listing(report.duplicates))
    if report.ok:
        logger.info("%s verified", split_path)


def verify_cli(root: Path, split_path: Path, benchmark: AgeBenchmark, check_files: bool = True) -> int:
    if not split_path.is_file():
        raise UserError(f"{split_path} does not exist, so there is nothing to verify; prepare the data first with "
                        f"'python -m ranksim.data.prepare {benchmark.name} --root {root}' (see data/README.md)")
    report = verify_age_split(root, split_path, benchmark, check_files=check_files)
    print_verify_report(report, benchmark, split_path, root)
    return 0 if report.ok else 1
