"""Figures for TensorBoard and ``evaluate.py --plots``: where in the label range a method wins.

Every function returns a matplotlib ``Figure`` (Agg backend, no display needed); the caller logs it
to TensorBoard or saves it as PNG.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
import numpy as np  # noqa: E402

from ranksim.methods.binning import label_bins  # noqa: E402
from ranksim.evaluation.metrics import shot_regions, shot_regions_sts_b  # noqa: E402

REGION_COLOURS = {"many": "#d9ead3", "medium": "#fff2cc", "few": "#f4cccc"}


def bin_regions(train_labels: np.ndarray, binning: str, num_bins: int, many_shot_thr: int = 100,
                low_shot_thr: int = 20) -> list[str]:
    """The shot region of every label bin ``0..num_bins-1``, by the metrics' own rule (SPEC 5)."""
    if binning == "sts_b":  # each bin's centre, (k + 0.5) / 10, lies safely inside bin k
        return shot_regions_sts_b((np.arange(num_bins) + 0.5) * 0.1).tolist()
    return shot_regions(np.arange(num_bins), train_labels, many_shot_thr, low_shot_thr).tolist()


def _bin_width(binning: str) -> float:
    return 0.1 if binning == "sts_b" else 1.0


def _shade_regions(ax, regions: list[str], width: float) -> None:
    for b, region in enumerate(regions):
        ax.axvspan(b * width, (b + 1) * width, color=REGION_COLOURS[region], lw=0, zorder=0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in REGION_COLOURS.values()]
    # Outside the axes, right of the plot, so that it hides no bar or curve; add_artist keeps it
    # when a caller adds a second legend for its curves (placed below it).
    ax.add_artist(ax.legend(handles, [f"{r}-shot" for r in REGION_COLOURS], loc="upper left",
                            bbox_to_anchor=(1.01, 1.0), fontsize=8, title="regions", title_fontsize=8))


def _layout(fig, ax) -> None:
    """``tight_layout``, then room on the right for the legends placed outside the axes.

    ``tight_layout`` does not count a legend kept with ``add_artist``, so the right margin is set
    from the widest legend's rendered width.
    """
    fig.tight_layout()
    fig.canvas.draw()
    legends = [child for child in ax.get_children() if isinstance(child, Legend)]
    if legends:
        width = max(legend.get_window_extent().width for legend in legends) / fig.bbox.width
        fig.subplots_adjust(right=min(fig.subplotpars.right, 0.985 - width - 0.015))


def label_histogram_figure(train_labels: np.ndarray, binning: str):
    """Training samples per label bin, with the many/medium/few regions shaded."""
    bins = label_bins(np.asarray(train_labels), binning)
    num_bins = 50 if binning == "sts_b" else int(bins.max()) + 1
    counts = np.bincount(bins, minlength=num_bins)
    width = _bin_width(binning)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    _shade_regions(ax, bin_regions(train_labels, binning, num_bins), width)
    ax.bar(np.arange(num_bins) * width, counts, width=width * 0.9, align="edge", color="#3c78d8", zorder=2)
    ax.set_xlabel("label" if binning == "sts_b" else "label (integer bin)")
    ax.set_ylabel("training samples")
    ax.set_title("Training label distribution and shot regions")
    _layout(fig, ax)
    return fig


def _num_bins(curves: dict[str, list[dict]], train_labels: np.ndarray, binning: str) -> int:
    if binning == "sts_b":
        return 50
    return int(max([int(label_bins(np.asarray(train_labels), binning).max())] +
                   [row["label_bin"] for rows in curves.values() for row in rows])) + 1


def _curves_figure(curves: dict[str, list[dict]], key: str, train_labels: np.ndarray, binning: str,
                   ylabel: str, title: str):
    """One curve per run of ``row[key]`` against the bin centre, regions shaded; ``None`` leaves a gap."""
    width = _bin_width(binning)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    _shade_regions(ax, bin_regions(train_labels, binning, _num_bins(curves, train_labels, binning)), width)
    for name, rows in curves.items():
        xs = [(row["label_bin"] + 0.5) * width for row in rows]
        ys = [np.nan if row[key] is None else row[key] for row in rows]
        ax.plot(xs, ys, marker=".", lw=1.2, label=name, zorder=3)
    ax.set_xlabel("label")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend(loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8, title="runs", title_fontsize=8)
    _layout(fig, ax)
    return fig


def per_label_error_figure(curves: dict[str, list[dict]], train_labels: np.ndarray, binning: str,
                           metric: str = "mae", title: str | None = None):
    """Per-label error of one or several runs on one axis, regions shaded (the paper's style).

    ``curves`` maps a run name to ``ranksim.evaluation.metrics.per_label_errors`` output.
    """
    return _curves_figure(curves, metric, train_labels, binning, metric.upper(),
                          title or f"Per-label {metric.upper()}")


def rank_correlation_figure(curves: dict[str, list[dict]], train_labels: np.ndarray, binning: str,
                            split: str = "test"):
    """Mean rank correlation of feature and label similarity per label, one curve per run.

    ``curves`` maps a run name to ``ranksim.evaluation.diagnostics.per_label_mean`` output of
    ``ranksim.evaluation.diagnostics.rank_similarity_correlation``: the quantity RankSim pushes towards 1.
    """
    fig = _curves_figure(curves, "mean", train_labels, binning, "Spearman(feature sim., label sim.)",
                         f"Rank correlation of feature and label similarity ({split} split)")
    ax = fig.axes[0]
    ax.axhline(0.0, color="grey", lw=0.8, zorder=1)
    low = min([0.0] + [row["mean"] for rows in curves.values() for row in rows if row["mean"] is not None])
    ax.set_ylim(min(-0.05, low - 0.05), 1.05)
    return fig
