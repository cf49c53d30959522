"""Label bins: the one place that decides which bin a label falls in.

LDS (label density), FDS (feature buckets) and the shot metrics all group labels into bins; they
all go through this module so that the three can never disagree (SPEC 1, 3, 4, 5).

Binnings
--------
- ``'age'``: the bin of ``y`` is ``int(y)`` (truncation toward zero, which is ``floor`` for the
  non-negative ages of the benchmarks). With ``num_bins`` given, bins are clamped into
  ``[0, num_bins - 1]`` (LDS uses ``num_bins=max_target=121``, so ages of 120 and more share the
  last bin).
- ``'sts_b'``: ``num_bins`` (default 50) equal bins over ``[0, 5]``; bin ``k`` holds
  ``[5k/num_bins, 5(k+1)/num_bins)``, 5.0 goes to the last bin, and labels outside ``[0, 5]`` are
  clamped into the first or last bin. The edges are computed in float64 and rounded to the
  labels' own float dtype before comparing, which is what the authors' ``np.histogram`` edges
  on float32 scores amount to (a float32 label such as ``float32(0.7)`` lands in bin 7, not 6).

Shapes: ``labels`` is ``(N,)`` or ``(N, 1)`` (a trailing axis of size 1 is dropped), a tensor
(any device) or anything ``numpy.asarray`` accepts. The bins come back as ``(N,)`` int64, a
LongTensor on the labels' device for a tensor input and a numpy array otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

BINNINGS = ("age", "sts_b")

# STS-B-DIR: 50 bins of width 0.1 over [0, 5] (SPEC 1).
STS_B_NUM_BINS = 50
STS_B_RANGE = (0.0, 5.0)

# STS-B-DIR shot regions are part of the benchmark definition (SPEC 5): fixed lists of bins,
# never recomputed from the data (recomputing gives different lists).
STS_B_SHOT_BINS = {
    "many": [0, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44, 46, 48, 49],
    "medium": [2, 4, 6, 8, 27, 35, 37],
    "few": [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 29, 31, 33, 39, 41, 43, 45, 47],
}


def check_binning(binning: str) -> str:
    """Return ``binning`` if it is a known binning, else raise a ``ValueError`` naming the valid ones."""
    if binning not in BINNINGS:
        raise ValueError(f"unknown binning {binning!r}; valid binnings are {list(BINNINGS)}")
    return binning


def _flatten_labels(labels):
    """Drop a trailing axis of size 1 so that ``(N, 1)`` and ``(N,)`` give the same bins."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        return labels.reshape(-1)
    return labels


def _sts_b_inner_edges(num_bins: int) -> np.ndarray:
    # Only the num_bins - 1 inner edges: counting how many of them are <= y gives the bin and
    # clamps into [0, num_bins - 1] for free (y < 0 -> 0; y >= 5, including 5.0, -> last bin).
    # k * 5.0 is exact, so k * 5.0 / num_bins is the correctly rounded edge (k / 10 for 50 bins).
    return np.arange(1, num_bins, dtype=np.float64) * STS_B_RANGE[1] / num_bins


def label_bins(labels, binning: str = "age", num_bins: int | None = None):
    """Bin index of each label; see the module docstring for the two binnings.

    Args:
        labels: ``(N,)`` or ``(N, 1)`` tensor, numpy array or list of labels.
        binning: ``'age'`` or ``'sts_b'``.
        num_bins: age: optional, clamps the bins into ``[0, num_bins - 1]``; STS-B: the number
            of bins over ``[0, 5]`` (default :data:`STS_B_NUM_BINS`).

    Returns:
        ``(N,)`` int64 bins: a LongTensor on the labels' device if ``labels`` is a tensor, else a
        numpy array.
    """
    check_binning(binning)
    if num_bins is not None and int(num_bins) < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    if binning == "sts_b" and num_bins is None:
        num_bins = STS_B_NUM_BINS

    if isinstance(labels, torch.Tensor):
        y = _flatten_labels(labels.detach())
        if binning == "age":
            # Out of place throughout: for int64 labels .long() is the caller's own tensor.
            bins = (torch.trunc(y) if y.is_floating_point() else y).long()
            return bins.clone() if num_bins is None else bins.clamp(0, int(num_bins) - 1)
        # Half-precision labels are compared in float32: their own grid is too coarse for edges.
        work_dtype = y.dtype if y.dtype in (torch.float32, torch.float64) else (
            torch.float32 if y.is_floating_point() else torch.float64)
        y = y.to(work_dtype).contiguous()
        edges = torch.as_tensor(_sts_b_inner_edges(int(num_bins)), dtype=work_dtype, device=y.device)
        return torch.searchsorted(edges, y, right=True).long()

    y = _flatten_labels(np.asarray(labels))
    if binning == "age":
        bins = (np.trunc(y) if np.issubdtype(y.dtype, np.floating) else y).astype(np.int64)
        return bins if num_bins is None else np.clip(bins, 0, int(num_bins) - 1)
    work_dtype = y.dtype if y.dtype in (np.float32, np.float64) else np.float64
    y = y.astype(work_dtype, copy=False)
    edges = _sts_b_inner_edges(int(num_bins)).astype(work_dtype)
    return np.searchsorted(edges, y, side="right").astype(np.int64)


def fds_buckets(labels, bucket_num: int, bucket_start: int = 0, binning: str = "age"):
    """FDS bucket of each label: ``clamp(bin, bucket_start, bucket_num - 1) - bucket_start``.

    This is the plain clamp of SPEC 4: labels below ``bucket_start`` share the first bucket and
    labels at or above ``bucket_num - 1`` share the last one. The authors' age code clamps only
    when the edge label itself is present in the batch (otherwise out-of-range labels are skipped
    and left uncalibrated); we always clamp. For STS-B the bins are ``bucket_num`` equal bins over
    ``[0, 5]``, as in the authors' ``np.histogram(..., bins=bucket_num, range=(0, 5))``.

    Returns ``(N,)`` int64 buckets in ``[0, bucket_num - bucket_start - 1]``, same kind as
    :func:`label_bins`.
    """
    if not 0 <= bucket_start < bucket_num:
        raise ValueError(f"need 0 <= bucket_start < bucket_num, got bucket_start={bucket_start}, "
                         f"bucket_num={bucket_num}")
    bins = label_bins(labels, binning, num_bins=bucket_num if binning == "sts_b" else None)
    if isinstance(bins, torch.Tensor):
        return bins.clamp(bucket_start, bucket_num - 1) - bucket_start
    return np.clip(bins, bucket_start, bucket_num - 1) - bucket_start
