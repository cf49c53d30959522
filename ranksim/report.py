"""Text tables of shot metrics, in the paper's layout.

* :func:`region_table`: one run, every metric per region (``evaluate.py``).
* :func:`comparison_table`: several runs as rows, the paper's headline metrics per region as
  columns: MAE and GM for age, MSE and Pearson (x100) for STS-B (SPEC 5).
"""

from __future__ import annotations

REGIONS = ("all", "many", "medium", "few")
HEADLINE = {"age": (("mae", 1.0), ("gm", 1.0)), "sts_b": (("mse", 1.0), ("pearson", 100.0))}


def _cell(value, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def region_table(metrics: dict) -> str:
    """All metrics of one run, one row per shot region."""
    names = ("count", "mse", "mae", "gm", "pearson", "spearman")
    lines = [f"{'region':<8}" + "".join(f"{n:>10}" for n in names)]
    for region in REGIONS:
        values = metrics.get(region)
        if values is None:
            lines.append(f"{region:<8}" + f"{'0':>10}" + "".join(f"{'-':>10}" for _ in names[1:]))
            continue
        cells = [str(values["count"])] + [_cell(values[n]) for n in names[1:]]
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


def load_results(run_dir) -> tuple[str, dict, str]:
    """``(name, test metrics, binning)`` of a finished run folder."""
    import json
    from pathlib import Path

    import yaml

    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    binning = "sts_b" if cfg["data"]["dataset"] == "sts_b" else "age"
    return results["name"], results["metrics"], binning


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
