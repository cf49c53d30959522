"""Measures of a model's outputs over a split: per-label errors and the feature diagnostics (the
RankSim rank correlation, the cosine similarities of features), during training and after it.

The training loop measures the validation features with :class:`FeatureDiagnostics`; reading a
finished run back (its checkpoint, outputs, saved features and plots) is
:mod:`ranksim.results.run_outputs`, which uses these measures.

Per-label quantities group the evaluated samples by label bin (:mod:`ranksim.methods.binning`: the integer
age, or one of the 50 STS-B bins of width 0.1), and name each bin by its lower edge in label units
(``23`` for age 23, ``0.7`` for the STS-B bin ``[0.7, 0.8)``) and by its shot region (SPEC 5,
decided by the training labels, by the same helpers as the evaluation metrics).

The rank correlation (:func:`rank_similarity_correlation`) is the quantity RankSim optimises,
measured on a whole split instead of a batch: for each sample ``i``, the Spearman correlation
between its row of feature similarities and its row of label similarities. RankSim pushes it
towards 1; plotting its mean per label shows where in the label range it holds.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from ranksim.methods.binning import STS_B_NUM_BINS, STS_B_RANGE, check_binning, label_bins
from ranksim.data.files import atomic_write
from ranksim.evaluation.metrics import per_label_errors, shot_regions, shot_regions_sts_b

logger = logging.getLogger("ranksim.analysis")

# Elements of one chunk of the (N, N) similarity matrices: 4M float64 values (32 MB) per array,
# a handful of arrays alive at once. Bounds the memory of an 11k x 11k split to ~200 MB.
_CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------------------
# Per-label tables


def bin_lower_edges(bins: np.ndarray, binning: str) -> np.ndarray:
    """Lower edge of each label bin in label units: the age itself, or ``k / 10`` for STS-B bin ``k``."""
    check_binning(binning)
    bins = np.asarray(bins, dtype=np.int64)
    if binning == "age":
        return bins.astype(np.float64)
    return np.round(bins * (STS_B_RANGE[1] / STS_B_NUM_BINS), 10)


def sample_regions(labels, train_labels, binning: str) -> np.ndarray:
    """Shot region of each sample ``(N,)``, exactly as the evaluation metrics decide it (SPEC 5)."""
    check_binning(binning)
    return shot_regions_sts_b(labels) if binning == "sts_b" else shot_regions(labels, train_labels)


def per_label_table(preds, labels, train_labels, binning: str) -> list[dict]:
    """Errors per label bin with the bin's label and shot region.

    Args:
        preds, labels: ``(N,)`` predictions and labels in label units.
        train_labels: ``(M,)`` training labels (decide the age shot regions; unused for STS-B).
        binning: ``'age'`` or ``'sts_b'``.

    Returns:
        One dict per bin holding at least one sample, sorted by bin:
        ``{'label_bin', 'label', 'count', 'mae', 'mse', 'region'}``; ``label`` is the bin's lower
        edge (an ``int`` for age, a ``float`` for STS-B).
    """
    rows = per_label_errors(preds, labels, binning=binning)
    labels = np.asarray(labels).reshape(-1)
    regions = sample_regions(labels, train_labels, binning)
    # Every sample of a bin has the bin's region; take it from the bin's first sample.
    bins, first = np.unique(label_bins(labels, binning), return_index=True)
    region_of = dict(zip(bins.tolist(), regions[first].tolist()))
    edges = bin_lower_edges(bins, binning)
    label_of = dict(zip(bins.tolist(), (edges.astype(int).tolist() if binning == "age" else edges.tolist())))
    return [{"label_bin": r["label_bin"], "label": label_of[r["label_bin"]], "count": r["count"],
             "mae": r["mae"], "mse": r["mse"], "region": region_of[r["label_bin"]]} for r in rows]


PER_LABEL_COLUMNS = ("label_bin", "label", "count", "mae", "mse", "region")


def write_per_label_csv(rows: list[dict], path: Path) -> Path:
    """Write :func:`per_label_table` rows as CSV with the columns :data:`PER_LABEL_COLUMNS`."""
    path = Path(path)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=PER_LABEL_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "mae": f"{row['mae']:.6g}", "mse": f"{row['mse']:.6g}"})
    atomic_write(path, lambda fh: fh.write(text.getvalue().encode("utf-8")))
    return path


def per_label_mean(values, labels, binning: str) -> list[dict]:
    """Mean of a per-sample quantity per label bin, ignoring NaN.

    Args:
        values: ``(N,)`` per-sample values (NaN where undefined).
        labels: ``(N,)`` labels.

    Returns:
        One dict per bin holding at least one sample, sorted by bin: ``{'label_bin', 'label',
        'count', 'mean'}``; ``count`` counts the samples of the bin, ``mean`` is over its finite
        values and is ``None`` when it has none.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if values.shape != labels.shape:
        raise ValueError(f"values and labels must have the same length, got {values.shape} and {labels.shape}")
    bins, inverse, counts = np.unique(label_bins(labels, binning), return_inverse=True, return_counts=True)
    finite = np.isfinite(values)
    sums = np.bincount(inverse, weights=np.where(finite, values, 0.0), minlength=len(bins))
    defined = np.bincount(inverse, weights=finite.astype(np.float64), minlength=len(bins))
    edges = bin_lower_edges(bins, binning)
    return [{"label_bin": int(b), "label": float(e), "count": int(c), "mean": float(s / d) if d else None}
            for b, e, c, s, d in zip(bins, edges, counts, sums, defined)]


# ---------------------------------------------------------------------------------------------
# The rank correlation RankSim optimises


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows of two ``(m, n)`` arrays; NaN for a constant row."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


def rank_similarity_correlation(features, labels, chunk_size: int | None = None) -> np.ndarray:
    """Per-sample Spearman correlation between feature similarity and label similarity.

    For each sample ``i`` of the ``N`` given:

    - feature similarity ``S_ij = x̂_i · x̂_j``, the cosine similarity of the flattened,
      L2-normalised features (as RankSim, SPEC 2.3);
    - label similarity ``T_ij = -|y_i - y_j|``;
    - ``rho_i`` = Spearman correlation of ``S_i`` and ``T_i`` over the other samples ``j != i``.
      **The diagonal is excluded**: ``S_ii = 1`` and ``T_ii = 0`` are the largest values of their
      rows by construction and would inflate every correlation. **Ties get average ranks**
      (``scipy.stats.rankdata(method='average')``); ties in ``T_i`` are the rule, as many samples
      share a label. The correlation is Pearson's of the two rank rows, i.e. Spearman's rho.

    RankSim's regularizer makes the rank of ``S_i`` match the rank of ``T_i`` within a batch, so
    it pushes ``rho_i`` towards 1. Unlike the batch loss, this uses every sample of the split.

    Rows are processed in chunks of ``chunk_size`` (default: as many as keep a chunk at about 4M
    similarities), so memory grows as ``O(chunk_size * N)``, not ``O(N^2)``; no loop runs over
    samples. The similarities are computed on the features' device in float64 for float64
    features and float32 otherwise (float16 features are upcast); ranking runs on the CPU.

    Args:
        features: ``(N, D)`` (or ``(N, ...)``, flattened) tensor or array.
        labels: ``(N,)`` or ``(N, 1)`` labels.
        chunk_size: rows per chunk; ``None`` chooses it from ``N``.

    Returns:
        ``(N,)`` float64 array; NaN where the correlation is undefined: a constant row (for example
        all-zero features, or all other labels equal), or ``N < 3``.
    """
    x = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(features))
    y = (labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(labels)))
    y = y.detach().cpu().double()
    if x.dim() < 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(x.shape)}")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have shape (N,) or (N, 1) with N = {x.shape[0]} (features "
                         f"{tuple(x.shape)}), got {tuple(np.shape(labels))}")
    n = x.shape[0]
    out = np.full(n, np.nan)
    if n < 3:
        return out
    x = x.detach().flatten(1)
    x = x.double() if x.dtype == torch.float64 else x.float()
    x = F.normalize(x, dim=1)
    y = y.numpy()
    rows = chunk_size or max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        m = stop - start
        s = (x[start:stop] @ x.T).double().cpu().numpy()                 # (m, n)
        t = -np.abs(y[start:stop, None] - y[None, :])                    # (m, n)
        keep = np.ones((m, n), dtype=bool)
        keep[np.arange(m), np.arange(start, stop)] = False               # drop j == i
        s = s[keep].reshape(m, n - 1)
        t = t[keep].reshape(m, n - 1)
        out[start:stop] = _row_pearson(rankdata(s, axis=1, method="average"),
                                       rankdata(t, axis=1, method="average"))
    return out


# ---------------------------------------------------------------------------------------------
# Feature diagnostics: what RankSim does to the features, in every run


DIAGNOSTIC_NAMES = ("cos_mean", "cos_p05", "ranksim_reg", "rank_corr")


class FeatureDiagnostics:
    """Four numbers that show whether the features carry the label order RankSim asks for.

    Measured on a fixed subset of one split (at most ``max_samples``, drawn once with ``seed``),
    so that successive validations of a run, and runs of different methods, are comparable:

    - ``cos_mean`` and ``cos_p05``: the mean and the 5th percentile of the pairwise cosine
      similarity of the features (``i != j``). Both near 1 means the features have collapsed
      onto one direction, and the order of their similarities is noise.
    - ``ranksim_reg``: the RankSim regularizer (SPEC 2.3, the run's ``lambda``) without
      gradients, on consecutive batches of the *training* batch size cut from the subset in its
      fixed random order, averaged over the batches; de-duplication uses a generator seeded
      alike every time. This is the quantity a RankSim run minimises, so a RankSim run whose
      value ends above vanilla's has failed at its own objective.
    - ``rank_corr``: the mean over the subset of the per-sample Spearman correlation of feature
      and label similarity (:func:`rank_similarity_correlation`), over the whole subset rather
      than one batch.

    Features are the model's returned features (the encoder output; FDS does not smooth in eval
    mode). Everything that depends on the labels alone (the subset, the batches, the label-rank
    rows with their average ranks for ties) is computed once here, so a call costs one ``(n, n)``
    similarity matrix and one row-wise argsort. Similarities are ranked ordinally: unlike label
    ties, exact ties of float similarities only occur for duplicated features, where
    :func:`rank_similarity_correlation` (average ranks) can differ.
    """

    def __init__(self, labels, batch_size: int, interpolation_lambda: float, max_samples: int = 2000,
                 seed: int = 0):
        labels = np.asarray(labels, dtype=np.float64).reshape(-1)
        if batch_size < 2 or max_samples < 3 or interpolation_lambda <= 0:
            raise ValueError(f"need batch_size >= 2, max_samples >= 3 and interpolation_lambda > 0; got "
                             f"{batch_size}, {max_samples}, {interpolation_lambda}")
        self.index = torch.from_numpy(np.random.default_rng(seed).permutation(labels.shape[0])[:max_samples])
        self.labels = torch.from_numpy(labels[self.index.numpy()])
        n = self.labels.shape[0]
        self.batch_size = min(batch_size, n)
        self.interpolation_lambda = interpolation_lambda
        self.seed = seed
        # Label-rank rows over j != i, standardised, scattered back into (n, n) with a zero
        # diagonal: a row-wise dot product with any (n, n) array then ignores its diagonal.
        y = self.labels.numpy()
        off_diagonal = ~np.eye(n, dtype=bool)
        t = (-np.abs(y[:, None] - y[None, :]))[off_diagonal].reshape(n, n - 1)
        self.label_ranks = torch.zeros(n, n, dtype=torch.float64)
        self.label_ranks[torch.from_numpy(off_diagonal)] = _standardise_rows(
            torch.from_numpy(rankdata(t, axis=1, method="average"))).flatten()

    @classmethod
    def for_run(cls, labels, cfg) -> "FeatureDiagnostics":
        """The diagnostics a run of config ``cfg`` reports: its batch size, RankSim's lambda,
        ``logging.diagnostic_samples`` and its seed (the trainer and evaluate.py agree through this)."""
        return cls(labels, cfg.optim.batch_size, cfg.method.ranksim.interpolation_lambda,
                   cfg.logging.diagnostic_samples, seed=cfg.seed)

    def __call__(self, features) -> dict:
        """``features``: ``(N, D)`` over the whole split, in dataset order. Returns the four values."""
        from ranksim.methods.regularizer import batchwise_ranking_regularizer

        x = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(features))
        x = x.detach().flatten(1).float().cpu()[self.index]
        n = x.shape[0]
        unit = F.normalize(x, dim=1)
        similarity = unit @ unit.T
        cos_mean = float((similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1)))
        # With the diagonal at +inf it ranks last in its row, so the other n - 1 entries take the
        # ranks 0..n-2, whose mean and spread are the same for every row; nor does it move the
        # 5th percentile of the n(n - 1) off-diagonal values.
        similarity.diagonal().fill_(math.inf)
        cos_p05 = float(similarity.flatten().kthvalue(max(1, int(0.05 * n * (n - 1)))).values)
        ranks = torch.empty(n, n, dtype=torch.float64)
        ranks.scatter_(1, similarity.argsort(dim=1), torch.arange(n, dtype=torch.float64).expand(n, -1))
        centred = torch.arange(n - 1, dtype=torch.float64)
        centred -= centred.mean()
        rho = ((ranks - (n - 2) / 2) * self.label_ranks).sum(dim=1) / centred.norm()  # NaN for constant label rows
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            regs = [float(batchwise_ranking_regularizer(x[start:start + self.batch_size],
                                                        self.labels[start:start + self.batch_size],
                                                        self.interpolation_lambda, generator))
                    for start in range(0, n - self.batch_size + 1, self.batch_size)]
        finite = rho[torch.isfinite(rho)]
        return {"cos_mean": cos_mean, "cos_p05": cos_p05, "ranksim_reg": float(np.mean(regs)),
                "rank_corr": float(finite.mean()) if finite.numel() else None}


def _standardise_rows(a: torch.Tensor) -> torch.Tensor:
    """Rows centred and scaled to unit norm, so that a row-wise dot product is Pearson's r."""
    a = a - a.mean(dim=1, keepdim=True)
    return a / a.norm(dim=1, keepdim=True)


def diagnostics_line(values: dict) -> str:
    return ", ".join(f"{k} {values[k]:.3f}" if values.get(k) is not None else f"{k} n/a" for k in DIAGNOSTIC_NAMES)
