"""Re-weighting and Label Distribution Smoothing (LDS) (SPEC 3).

Paper: Yang, Zha, Chen, Wang, Katabi, "Delving into Deep Imbalanced Regression", ICML 2021
(arXiv 2102.09554), used as a baseline and in combination with RankSim (Gong et al., ICML 2022).

- :func:`kernel_window` ``-> (ks,)`` float64: the gaussian / triang / laplace window shared by LDS
  (normalised by its max) and FDS (normalised by its sum).
- :func:`get_lds_kernel_window` ``-> (ks,)``: the LDS window (max-normalised).
- :func:`label_density` ``labels (N,) -> (num_bins,)``: the empirical label density after
  re-weighting (square root or clipping) and optional LDS smoothing.
- :func:`prepare_weights` ``labels (N,) or (N, 1) -> (N,)`` float32 per-sample training weights
  ``1 / density[bin(y)]``, scaled to mean 1.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import convolve1d, gaussian_filter1d
from scipy.signal.windows import triang

from ranksim.methods.binning import STS_B_NUM_BINS, check_binning, label_bins

KERNELS = ("gaussian", "triang", "laplace")
REWEIGHTS = ("none", "inverse", "sqrt_inv")

# Age "inverse" re-weighting clips the per-age counts to this range, as the DIR authors do: the
# lower bound stops a handful of rare ages from getting weights hundreds of times the mean.
AGE_INVERSE_CLIP = (5, 1000)


def check_kernel(kernel: str, ks: int, sigma: float) -> None:
    """Raise a ``ValueError`` naming the bad value and the valid ones for a bad smoothing kernel.

    ``sigma`` is checked for every kernel, triang included (which does not use it), so that a
    config does not silently carry a meaningless value.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid kernels are {list(KERNELS)}")
    if isinstance(ks, bool) or not isinstance(ks, (int, np.integer)) or ks <= 0 or ks % 2 == 0:
        raise ValueError(f"kernel size ks must be a positive odd integer (1, 3, 5, ...), got {ks!r}")
    if not (isinstance(sigma, (int, float, np.integer, np.floating)) and not isinstance(sigma, bool)
            and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"kernel sigma must be a positive number, got {sigma!r}")


def kernel_window(kernel: str, ks: int, sigma: float, normalise: str = "max") -> np.ndarray:
    """Symmetric smoothing window of odd length ``ks`` (float64, shape ``(ks,)``).

    - gaussian: ``scipy.ndimage.gaussian_filter1d`` of a unit impulse of length ``ks`` (with its
      default reflect boundary, so for small ``ks`` the tails fold back, exactly as the authors'
      window does);
    - triang: ``scipy.signal.windows.triang(ks)``;
    - laplace: ``exp(-|x| / sigma) / (2 sigma)`` for ``x = -h..h``, ``h = (ks - 1) / 2``.

    ``normalise='max'`` divides by the max (LDS), ``'sum'`` by the sum (FDS).
    """
    check_kernel(kernel, ks, sigma)
    half = (ks - 1) // 2
    if kernel == "gaussian":
        impulse = np.zeros(ks, dtype=np.float64)
        impulse[half] = 1.0
        window = gaussian_filter1d(impulse, sigma=sigma)
    elif kernel == "triang":
        window = triang(ks).astype(np.float64)
    else:
        x = np.arange(-half, half + 1, dtype=np.float64)
        window = np.exp(-np.abs(x) / sigma) / (2.0 * sigma)
    if normalise == "max":
        return window / window.max()
    if normalise == "sum":
        return window / window.sum()
    raise ValueError(f"unknown normalise {normalise!r}; valid values are ['max', 'sum']")


def get_lds_kernel_window(kernel: str, ks: int, sigma: float) -> np.ndarray:
    """The LDS window: :func:`kernel_window` normalised by its max, shape ``(ks,)``."""
    return kernel_window(kernel, ks, sigma, normalise="max")


def _labels_1d(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,) or (N, 1), got {labels.shape}")
    return labels


def _check_reweight(reweight: str, lds: bool) -> None:
    if reweight not in REWEIGHTS:
        raise ValueError(f"unknown reweight {reweight!r}; valid values are {list(REWEIGHTS)}")
    if lds and reweight == "none":
        raise ValueError("LDS needs a re-weighting scheme: got lds=True with reweight='none'; "
                         "use reweight='sqrt_inv' or 'inverse'")


def _bins_and_count(labels: np.ndarray, binning: str, max_target: int):
    if binning == "age":
        # Ages of max_target - 1 and above share the last bin (SPEC 3).
        bins = label_bins(labels, "age", num_bins=max_target)
        return bins, max_target
    return label_bins(labels, "sts_b", num_bins=STS_B_NUM_BINS), STS_B_NUM_BINS


def label_density(labels, reweight: str = "sqrt_inv", lds: bool = False, lds_kernel: str = "gaussian",
                  lds_ks: int = 5, lds_sigma: float = 2, max_target: int = 121, binning: str = "age",
                  faithful: bool = False) -> np.ndarray:
    """Effective label density per bin, shape ``(num_bins,)`` (``max_target`` for age, 50 for STS-B).

    Counts per bin, then ``sqrt_inv``: square root; ``inverse``: clipped to [5, 1000] for age, raw
    for STS-B; ``none``: raw counts. With ``lds``, the result is convolved with the LDS window
    (``scipy.ndimage.convolve1d``, ``mode='constant'``).

    ``faithful=True`` reproduces the authors' integer truncation: with ``inverse`` their counts are
    integers and ``convolve1d`` returns integers, so smoothed counts are truncated toward zero.
    ``faithful=False`` keeps the smoothed counts as floats. ``sqrt_inv`` counts are floats either
    way, so the switch changes nothing there.
    """
    _check_reweight(reweight, lds)
    check_binning(binning)
    if lds:
        check_kernel(lds_kernel, lds_ks, lds_sigma)
    if binning == "age" and (int(max_target) != max_target or max_target < 1):
        raise ValueError(f"max_target must be a positive integer, got {max_target!r}")
    bins, num_bins = _bins_and_count(_labels_1d(labels), binning, int(max_target))
    counts = np.bincount(bins, minlength=num_bins).astype(np.int64)

    if reweight == "sqrt_inv":
        density = np.sqrt(counts.astype(np.float64))
    elif reweight == "inverse" and binning == "age":
        density = np.clip(counts, *AGE_INVERSE_CLIP)
    else:
        density = counts

    if lds:
        window = get_lds_kernel_window(lds_kernel, lds_ks, lds_sigma)
        if not (faithful and np.issubdtype(density.dtype, np.integer)):
            density = density.astype(np.float64)
        # convolve1d writes its output in the input's dtype: integer counts come back truncated.
        density = convolve1d(density, weights=window, mode="constant")
    return density.astype(np.float64)


def prepare_weights(labels, reweight: str = "none", lds: bool = False, lds_kernel: str = "gaussian",
                    lds_ks: int = 5, lds_sigma: float = 2, max_target: int = 121, binning: str = "age",
                    faithful: bool = False) -> np.ndarray:
    """Per-sample training weights for weighted losses (SPEC 3): INV / SQINV re-weighting and LDS.

    Yang, Zha, Chen, Wang, Katabi, "Delving into Deep Imbalanced Regression", ICML 2021
    (arXiv 2102.09554).

    Args:
        labels: training labels, ``(N,)`` or ``(N, 1)``; numpy array, list or tensor.
        reweight: ``'none'``, ``'inverse'`` or ``'sqrt_inv'``.
        lds: smooth the label density with the LDS kernel (needs ``reweight != 'none'``).
        lds_kernel, lds_ks, lds_sigma: LDS window (``'gaussian'``, ``'triang'``, ``'laplace'``;
            odd ``ks > 0``; ``sigma > 0``). Paper: gaussian, 5, 2.
        max_target: number of age bins (ages of ``max_target - 1`` and more share the last bin).
            Unused for STS-B, whose 50 bins over [0, 5] are fixed.
        binning: ``'age'`` or ``'sts_b'``.
        faithful: reproduce the authors' integer truncation of LDS-smoothed ``inverse`` counts.

    Returns:
        ``(N,)`` float32 weights ``1 / density[bin(y)]`` scaled to mean 1; all ones for
        ``reweight='none'``; an empty array for no labels.
    """
    _check_reweight(reweight, lds)
    check_binning(binning)
    y = _labels_1d(labels)
    if reweight == "none" or y.size == 0:
        return np.ones(y.shape[0], dtype=np.float32)
    density = label_density(y, reweight=reweight, lds=lds, lds_kernel=lds_kernel, lds_ks=lds_ks,
                            lds_sigma=lds_sigma, max_target=max_target, binning=binning,
                            faithful=faithful)
    bins, _ = _bins_and_count(y, binning, int(max_target))
    # Every bin that holds a label has a count >= 1 and the max-normalised window is 1 at its
    # centre, so the density there is >= 1 even after truncation: no division by zero.
    weights = 1.0 / density[bins]
    weights *= y.shape[0] / weights.sum()
    return weights.astype(np.float32)
