"""Shot regions and evaluation metrics of the DIR benchmarks (SPEC 5).

Papers: the shot regions come from Yang et al., "Delving into Deep Imbalanced Regression"
(ICML 2021, arXiv 2102.09554), and are the ones RankSim (Gong et al., ICML 2022) reports.

Regions:

- age (:func:`shot_regions`): a test sample is ``'many'`` if its integer age has more than
  ``many_shot_thr`` (100) training samples, ``'few'`` if fewer than ``low_shot_thr`` (20, zero
  included), else ``'medium'``.
- STS-B (:func:`shot_regions_sts_b`): fixed lists of the 50 label bins
  (:data:`ranksim.methods.binning.STS_B_SHOT_BINS`), never recomputed from the data.

Metrics (:func:`shot_metrics`, :func:`shot_metrics_sts_b`), for ``'all'``, ``'many'``, ``'medium'``
and ``'few'``: ``mse``, ``mae``, ``gm`` (geometric mean of ``|error|`` with exact zeros replaced by
1e-10), ``pearson``, ``spearman``, ``count``, and the balanced ``bmse`` and ``bmae`` (SPEC 9.1,
Balanced MSE's metrics: the MSE / MAE of each label bin present in the region, averaged over the
bins with equal weight; bins are integer ages, or STS-B's 50 bins). A region with no sample gets ``None`` for every
metric and ``count = 0``; Pearson and Spearman are ``None`` for fewer than 2 samples or a constant
input. Values are plain Python floats and ints (JSON-serialisable), never NaN.

Inputs: ``preds`` and ``labels`` are ``(N,)`` or ``(N, 1)`` numpy arrays, lists or tensors, in the
same units (for STS-B the caller rescales the model's outputs, trained on ``score / 5``, by 5).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from ranksim.methods.binning import STS_B_NUM_BINS, STS_B_SHOT_BINS, check_binning, label_bins

REGIONS = ("many", "medium", "few")
METRICS = ("mse", "mae", "gm", "pearson", "spearman", "count", "bmse", "bmae")

# GM replaces exact zeros so that one perfect prediction does not zero a whole region.
_GM_ZERO = 1e-10


def _as_1d(name: str, values) -> np.ndarray:
    """``(N,)`` float array; float32 stays float32 so that its STS-B bins are those of the float32
    labels (``float32(0.7)`` is just below 0.7 in float64 and would drop from bin 7 to bin 6)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = (values if values.dtype in (torch.float32, torch.float64) else values.double()).numpy()
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.reshape(-1)
    if values.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {values.shape}")
    return values


def _preds_and_labels(preds, labels):
    p, y = _as_1d("preds", preds), _as_1d("labels", labels)
    if p.shape != y.shape:
        raise ValueError(f"preds and labels must have the same length, got {p.shape} and {y.shape}")
    return p, y


def shot_regions(labels, train_labels, many_shot_thr: int = 100, low_shot_thr: int = 20) -> np.ndarray:
    """Region of each test label (age binning): ``(N,)`` array of ``'many'|'medium'|'few'``.

    ``labels`` ``(N,)`` and ``train_labels`` ``(M,)`` (or ``(., 1)``); the regions of Yang et al.,
    ICML 2021 (arXiv 2102.09554).
    """
    test_bins = label_bins(_as_1d("labels", labels), "age")
    train_bins, train_counts = np.unique(label_bins(_as_1d("train_labels", train_labels), "age"),
                                         return_counts=True)
    # Training count of each test bin, 0 where the bin never occurs in training.
    counts = np.zeros(test_bins.shape, dtype=np.int64)
    if train_bins.size:
        pos = np.searchsorted(train_bins, test_bins).clip(max=train_bins.size - 1)
        counts = np.where(train_bins[pos] == test_bins, train_counts[pos], 0)
    return np.where(counts > many_shot_thr, "many", np.where(counts < low_shot_thr, "few", "medium"))


def shot_regions_sts_b(labels) -> np.ndarray:
    """Region of each STS-B label from the fixed bin lists: ``(N,)`` array of region names.

    ``labels`` ``(N,)`` or ``(N, 1)`` scores in [0, 5]; the regions of Yang et al., ICML 2021
    (arXiv 2102.09554).
    """
    bins = label_bins(_as_1d("labels", labels), "sts_b")
    lookup = np.empty(STS_B_NUM_BINS, dtype="<U6")
    for region in REGIONS:  # three fixed lists, not a loop over the data
        lookup[STS_B_SHOT_BINS[region]] = region
    return lookup[bins]


def _correlation(fn, p: np.ndarray, y: np.ndarray):
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(y) == 0:
        return None
    value = float(fn(p, y)[0])
    return value if np.isfinite(value) else None


def _balanced(abs_err: np.ndarray, bins: np.ndarray) -> tuple[float, float]:
    """Per-bin MSE and MAE averaged over the bins present, each bin weighted equally."""
    _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    mse = np.bincount(inverse, weights=abs_err ** 2) / counts
    mae = np.bincount(inverse, weights=abs_err) / counts
    return float(mse.mean()), float(mae.mean())


def _region_metrics(p: np.ndarray, y: np.ndarray, bins: np.ndarray) -> dict:
    count = int(p.size)
    if count == 0:
        return {"mse": None, "mae": None, "gm": None, "pearson": None, "spearman": None, "count": 0,
                "bmse": None, "bmae": None}
    p, y = p.astype(np.float64), y.astype(np.float64)
    abs_err = np.abs(p - y)
    bmse, bmae = _balanced(abs_err, bins)
    return {
        "mse": float(np.mean(abs_err ** 2)),
        "mae": float(np.mean(abs_err)),
        "gm": float(np.exp(np.mean(np.log(np.where(abs_err == 0, _GM_ZERO, abs_err))))),
        "pearson": _correlation(stats.pearsonr, p, y),
        "spearman": _correlation(stats.spearmanr, p, y),
        "count": count,
        "bmse": bmse,
        "bmae": bmae,
    }


def metrics_by_region(preds, labels, regions, binning: str = "age") -> dict:
    """``{'all'|'many'|'medium'|'few': {metric: value}}`` for per-sample region names ``(N,)``.

    ``binning`` ('age' or 'sts_b') gives the label bins of the balanced metrics.
    """
    p, y = _preds_and_labels(preds, labels)
    regions = np.asarray(regions)
    if regions.shape != p.shape:
        raise ValueError(f"regions must have shape {p.shape}, got {regions.shape}")
    bins = label_bins(y, binning)
    out = {"all": _region_metrics(p, y, bins)}
    for region in REGIONS:
        mask = regions == region
        out[region] = _region_metrics(p[mask], y[mask], bins[mask])
    return out


def shot_metrics(preds, labels, train_labels, many_shot_thr: int = 100, low_shot_thr: int = 20) -> dict:
    """Age shot metrics (SPEC 5); regions from the training count of each integer age.

    ``preds``, ``labels`` ``(N,)`` or ``(N, 1)``, ``train_labels`` ``(M,)``; returns
    ``{'all'|'many'|'medium'|'few': {'mae', 'mse', 'gm', ...}}`` (see the module docstring). The
    shot regions and metrics of Yang et al., ICML 2021 (arXiv 2102.09554), reported by RankSim.
    """
    p, y = _preds_and_labels(preds, labels)
    regions = shot_regions(y, train_labels, many_shot_thr=many_shot_thr, low_shot_thr=low_shot_thr)
    return metrics_by_region(p, y, regions)


def shot_metrics_sts_b(preds, labels) -> dict:
    """STS-B shot metrics (SPEC 5); regions from the fixed bin lists. Same units for both inputs.

    ``preds``, ``labels`` ``(N,)`` or ``(N, 1)`` scores; returns
    ``{'all'|'many'|'medium'|'few': {'mse', 'pearson', ...}}``. The shot regions of Yang et al.,
    ICML 2021 (arXiv 2102.09554), reported by RankSim.
    """
    p, y = _preds_and_labels(preds, labels)
    return metrics_by_region(p, y, shot_regions_sts_b(y), binning="sts_b")


def per_label_errors(preds, labels, binning: str = "age") -> list[dict]:
    """Errors per label bin, for per-label plots and tables.

    Returns a list, sorted by bin, of ``{'label_bin': int, 'count': int, 'mae': float,
    'mse': float}`` for every bin that holds at least one sample.
    """
    check_binning(binning)
    p, y = _preds_and_labels(preds, labels)
    bins, inverse, counts = np.unique(label_bins(y, binning), return_inverse=True, return_counts=True)
    err = p.astype(np.float64) - y.astype(np.float64)
    mae = np.bincount(inverse, weights=np.abs(err), minlength=len(bins)) / np.maximum(counts, 1)
    mse = np.bincount(inverse, weights=err ** 2, minlength=len(bins)) / np.maximum(counts, 1)
    return [{"label_bin": int(b), "count": int(c), "mae": float(a), "mse": float(s)}
            for b, c, a, s in zip(bins, counts, mae, mse)]
