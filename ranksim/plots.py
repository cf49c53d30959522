"""Figures for TensorBoard and ``evaluate.py --plots``: where in the label range a method wins.

Every function returns a matplotlib ``Figure`` (Agg backend, no display needed); the caller logs it
to TensorBoard or saves it as PNG.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ranksim.binning import STS_B_SHOT_BINS, label_bins  # noqa: E402

REGION_COLOURS = {"many": "#d9ead3", "medium": "#fff2cc", "few": "#f4cccc"}


def bin_regions(train_labels: np.ndarray, binning: str, num_bins: int, many_shot_thr: int = 100,
                low_shot_thr: int = 20) -> list[str]:
    """The shot region of every label bin ``0..num_bins-1`` (SPEC 5)."""
    if binning == "sts_b":
        region = {b: name for name, bins in STS_B_SHOT_BINS.items() for b in bins}
        return [region[b] for b in range(num_bins)]
    counts = np.bincount(label_bins(np.asarray(train_labels), binning), minlength=num_bins)[:num_bins]
    return ["many" if c > many_shot_thr else "few" if c < low_shot_thr else "medium" for c in counts]


def _bin_width(binning: str) -> float:
    return 0.1 if binning == "sts_b" else 1.0


def _shade_regions(ax, regions: list[str], width: float) -> None:
    for b, region in enumerate(regions):
        ax.axvspan(b * width, (b + 1) * width, color=REGION_COLOURS[region], lw=0, zorder=0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in REGION_COLOURS.values()]
    # add_artist keeps this legend when a caller adds a second one for its curves
    ax.add_artist(ax.legend(handles, [f"{r}-shot" for r in REGION_COLOURS], loc="upper right", fontsize=8))


def label_histogram_figure(train_labels: np.ndarray, binning: str):
    """Training samples per label bin, with the many/medium/few regions shaded."""
    bins = label_bins(np.asarray(train_labels), binning)
    num_bins = 50 if binning == "sts_b" else int(bins.max()) + 1
    counts = np.bincount(bins, minlength=num_bins)
    width = _bin_width(binning)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    _shade_regions(ax, bin_regions(train_labels, binning, num_bins), width)
    ax.bar(np.arange(num_bins) * width, counts, width=width * 0.9, align="edge", color="#3c78d8", zorder=2)
    ax.set_xlabel("label" if binning == "sts_b" else "label (integer bin)")
    ax.set_ylabel("training samples")
    ax.set_title("Training label distribution and shot regions")
    fig.tight_layout()
    return fig


def per_label_error_figure(curves: dict[str, list[dict]], train_labels: np.ndarray, binning: str,
                           metric: str = "mae"):
    """Per-label error of one or several runs on one axis, regions shaded (the paper's style).

    ``curves`` maps a run name to ``ranksim.metrics.per_label_errors`` output.
    """
    width = _bin_width(binning)
    num_bins = 50 if binning == "sts_b" else int(max(
        [int(label_bins(np.asarray(train_labels), binning).max())] +
        [row["label_bin"] for rows in curves.values() for row in rows])) + 1
    fig, ax = plt.subplots(figsize=(8, 3.2))
    _shade_regions(ax, bin_regions(train_labels, binning, num_bins), width)
    for name, rows in curves.items():
        xs = [(row["label_bin"] + 0.5) * width for row in rows]
        ax.plot(xs, [row[metric] for row in rows], marker=".", lw=1.2, label=name, zorder=3)
    ax.set_xlabel("label")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"Per-label {metric.upper()}")
    if len(curves) > 1:
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
