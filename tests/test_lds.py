"""Tests for ranksim.methods.lds (SPEC 3): kernel windows, label density and per-sample weights.

The reference weights are computed with per-label Python loops straight from the SPEC: a count
per bin, square root or clip, a hand-written zero-padded convolution, truncation to int for the
faithful integer case, then 1 / density scaled to mean 1.
"""

import math

import numpy as np
import pytest
import torch

from ranksim.methods.lds import get_lds_kernel_window, kernel_window, label_density, prepare_weights


# ----------------------------------------------------------------------------- references

def ref_gaussian_window(ks, sigma):
    """gaussian_filter1d of a unit impulse, by hand: taps exp(-k^2 / 2 sigma^2) for |k| <= 4 sigma
    (scipy's truncate=4), on the impulse extended by half-sample reflection (d c b a | a b c d)."""
    radius = int(4 * sigma + 0.5)
    taps = {k: math.exp(-k * k / (2 * sigma * sigma)) for k in range(-radius, radius + 1)}
    total = sum(taps.values())

    def impulse(i):  # reflect i into [0, ks)
        period = 2 * ks
        i %= period
        if i >= ks:
            i = period - 1 - i
        return 1.0 if i == (ks - 1) // 2 else 0.0

    out = [sum(w * impulse(p + k) for k, w in taps.items()) / total for p in range(ks)]
    return np.array(out) / max(out)


def ref_smooth_counts(counts, window, integer):
    """Zero-padded convolution with a symmetric window; int() truncation for integer counts.

    The sum runs in the order of scipy's symmetric-kernel loop (centre, then the pairs from the
    farthest in), because truncation turns a last-bit difference at an exact integer (14.999...
    against 15.0) into a whole count, and the faithful mode must match the authors' call exactly.
    """
    half = len(window) // 2

    def c(j):
        return float(counts[j]) if 0 <= j < len(counts) else 0.0

    out = []
    for i in range(len(counts)):
        value = c(i) * window[half]
        for t in range(half, 0, -1):
            value += (c(i - t) + c(i + t)) * window[half - t]
        out.append(int(value) if integer else value)
    return out


def ref_bin(label, binning, max_target):
    if binning == "age":
        return min(max_target - 1, int(label))
    # STS-B: the bin is the number of inner edges k / 10 (as float32) at or below the label.
    return sum(1 for k in range(1, 50) if np.float32(k / 10) <= np.float32(label))


def ref_weights(labels, reweight, lds, kernel, ks, sigma, binning, faithful, max_target=121):
    num_bins = max_target if binning == "age" else 50
    counts = [0] * num_bins
    for y in labels:
        counts[ref_bin(y, binning, max_target)] += 1
    integer = False
    if reweight == "sqrt_inv":
        counts = [math.sqrt(c) for c in counts]
    elif reweight == "inverse":
        integer = True
        if binning == "age":
            counts = [min(max(c, 5), 1000) for c in counts]
    if lds:
        counts = ref_smooth_counts(counts, get_lds_kernel_window(kernel, ks, sigma),
                                   integer=integer and faithful)
    weights = [1.0 / counts[ref_bin(y, binning, max_target)] for y in labels]
    scale = len(weights) / sum(weights)
    return np.array([w * scale for w in weights])


def age_labels(n=400, seed=0):
    rng = np.random.default_rng(seed)
    ages = np.clip(rng.normal(40, 18, n), 0, 130).round()
    return np.concatenate([ages, [0.0, 120.0, 125.0, 150.0]]).astype(np.float32)


def sts_labels(n=300, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(0, 5, n) * 5) / 5  # many repeats on a 0.2 grid
    return np.concatenate([scores, [0.0, 0.7, 5.0, 4.99]]).astype(np.float32)


# ----------------------------------------------------------------------------- kernel windows

@pytest.mark.parametrize("ks,sigma", [(1, 1.0), (5, 2.0), (9, 1.0), (5, 0.5)])
def test_gaussian_window_by_hand(ks, sigma):
    np.testing.assert_allclose(get_lds_kernel_window("gaussian", ks, sigma), ref_gaussian_window(ks, sigma),
                               rtol=1e-12)


def test_triang_and_laplace_windows_by_hand():
    np.testing.assert_allclose(get_lds_kernel_window("triang", 5, 2), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    # laplace exp(-|x| / sigma) / (2 sigma) divided by its max 1 / (2 sigma): exp(-|x| / 2).
    np.testing.assert_allclose(get_lds_kernel_window("laplace", 5, 2.0),
                               [math.exp(-1), math.exp(-0.5), 1, math.exp(-0.5), math.exp(-1)])


@pytest.mark.parametrize("kernel", ["gaussian", "triang", "laplace"])
def test_windows_are_symmetric_and_normalised(kernel):
    w_max = kernel_window(kernel, 7, 1.5, normalise="max")
    w_sum = kernel_window(kernel, 7, 1.5, normalise="sum")
    np.testing.assert_allclose(w_max, w_max[::-1])
    assert w_max.max() == 1.0 and abs(w_sum.sum() - 1) < 1e-12
    np.testing.assert_allclose(w_sum, w_max / w_max.sum())


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel="box", ks=5, sigma=2), r"'box'.*\['gaussian', 'triang', 'laplace'\]"),
    (dict(kernel="gaussian", ks=4, sigma=2), r"odd.*4"),
    (dict(kernel="gaussian", ks=0, sigma=2), r"odd.*0"),
    (dict(kernel="gaussian", ks=-3, sigma=2), r"odd.*-3"),
    (dict(kernel="gaussian", ks=5, sigma=0), r"sigma.*0"),
    (dict(kernel="laplace", ks=5, sigma=-1.0), r"sigma.*-1.0"),
])
def test_bad_kernels_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_lds_kernel_window(**kwargs)
    with pytest.raises(ValueError, match=match):
        prepare_weights(age_labels(20), "sqrt_inv", lds=True, lds_kernel=kwargs["kernel"],
                        lds_ks=kwargs["ks"], lds_sigma=kwargs["sigma"])


def test_lds_without_reweighting_and_unknown_reweight_are_rejected():
    with pytest.raises(ValueError, match=r"reweight='none'.*'sqrt_inv'.*'inverse'"):
        prepare_weights(age_labels(20), "none", lds=True)
    with pytest.raises(ValueError, match=r"'inv'.*\['none', 'inverse', 'sqrt_inv'\]"):
        prepare_weights(age_labels(20), "inv")
    with pytest.raises(ValueError, match=r"'imdb'.*\['age', 'sts_b'\]"):
        prepare_weights(age_labels(20), "inverse", binning="imdb")


# ----------------------------------------------------------------------------- weights

CASES = [(rw, lds, kernel) for rw in ("inverse", "sqrt_inv") for lds, kernel in
         ((False, "gaussian"), (True, "gaussian"), (True, "triang"), (True, "laplace"))]


@pytest.mark.parametrize("binning", ["age", "sts_b"])
@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("reweight,lds,kernel", CASES)
def test_weights_equal_the_per_label_reference(binning, faithful, reweight, lds, kernel):
    labels = age_labels() if binning == "age" else sts_labels()
    ks, sigma = (5, 2.0) if kernel != "laplace" else (7, 1.0)
    w = prepare_weights(labels, reweight, lds=lds, lds_kernel=kernel, lds_ks=ks, lds_sigma=sigma,
                        binning=binning, faithful=faithful)
    expected = ref_weights(labels, reweight, lds, kernel, ks, sigma, binning, faithful)
    assert w.dtype == np.float32 and w.shape == labels.shape
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    assert abs(w.mean() - 1) < 1e-5


def test_faithful_truncation_changes_inverse_lds_only():
    labels = sts_labels()
    inv = [prepare_weights(labels, "inverse", lds=True, binning="sts_b", faithful=f) for f in (True, False)]
    assert not np.allclose(inv[0], inv[1])
    sq = [prepare_weights(labels, "sqrt_inv", lds=True, binning="sts_b", faithful=f) for f in (True, False)]
    np.testing.assert_array_equal(sq[0], sq[1])
    plain = [prepare_weights(labels, "inverse", binning="sts_b", faithful=f) for f in (True, False)]
    np.testing.assert_array_equal(plain[0], plain[1])


def test_truncated_density_is_integer_valued():
    density = label_density(sts_labels(), "inverse", lds=True, binning="sts_b", faithful=True)
    np.testing.assert_array_equal(density, np.trunc(density))
    fixed = label_density(sts_labels(), "inverse", lds=True, binning="sts_b", faithful=False)
    assert np.all(density <= fixed) and np.any(density < fixed)


def test_none_gives_ones_and_inputs_of_every_kind():
    labels = age_labels(50)
    np.testing.assert_array_equal(prepare_weights(labels), np.ones(len(labels), np.float32))
    base = prepare_weights(labels, "sqrt_inv", lds=True)
    for variant in (labels.reshape(-1, 1), torch.from_numpy(labels), torch.from_numpy(labels)[:, None],
                    labels.tolist()):
        np.testing.assert_array_equal(prepare_weights(variant, "sqrt_inv", lds=True), base)
    assert prepare_weights(np.zeros(0), "inverse", lds=True).shape == (0,)
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, 1\).*\(3, 2\)"):
        prepare_weights(np.zeros((3, 2)), "inverse")


def test_single_label_and_all_equal_labels_give_unit_weights():
    np.testing.assert_allclose(prepare_weights([33.0], "inverse", lds=True), [1.0])
    np.testing.assert_allclose(prepare_weights([2.4] * 7, "sqrt_inv", lds=True, binning="sts_b"), np.ones(7))


def test_ages_from_max_target_share_the_last_bin():
    # Bin 10 holds two labels; bin 120 holds three (120, 121 and 200 all clamp to max_target - 1).
    labels = np.array([10.0, 120.0, 121.0, 200.0, 10.0])
    w = prepare_weights(labels, "sqrt_inv")
    np.testing.assert_array_equal(w[1:4], np.full(3, w[1]))
    assert w[0] / w[1] == pytest.approx(math.sqrt(3) / math.sqrt(2), rel=1e-6)
