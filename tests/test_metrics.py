"""Tests for ranksim.evaluation.metrics (SPEC 5) and the shared ranksim.methods.binning (SPEC 1).

The references loop over the distinct test labels, as the authors' ``shot_metrics`` does: count
the training samples of each label, put the label's test samples in a region, then compute each
region's metrics from the gathered errors.
"""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from ranksim.methods.binning import STS_B_NUM_BINS, STS_B_SHOT_BINS, fds_buckets, label_bins
from ranksim.evaluation.metrics import (per_label_errors, shot_metrics, shot_metrics_sts_b, shot_regions,
                                        shot_regions_sts_b)


# ----------------------------------------------------------------------------- references

def ref_sts_bin(label):
    return sum(1 for k in range(1, 50) if np.float32(k / 10) <= np.float32(label))


def ref_pearson(a, b):
    """sum((a - mean a)(b - mean b)) / sqrt(sum((a - mean a)^2) sum((b - mean b)^2))."""
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b))


def ref_average_ranks(values):
    """1-based ranks; tied values share the mean of the positions they occupy (integer ages tie)."""
    return [sum(v < x for v in values) + (sum(v == x for v in values) + 1) / 2 for x in values]


def ref_spearman(a, b):
    """Pearson's formula on the average ranks."""
    return ref_pearson(ref_average_ranks(a), ref_average_ranks(b))


def ref_region_metrics(preds, labels, bin_of=int):
    if len(preds) == 0:
        return {"mse": None, "mae": None, "gm": None, "pearson": None, "spearman": None, "count": 0,
                "bmse": None, "bmae": None}
    errors = [p - y for p, y in zip(preds, labels)]
    # Balanced metrics (SPEC 9.1): mean error per label bin, then the plain mean over the bins.
    per_bin = {}
    for e, y in zip(errors, labels):
        per_bin.setdefault(bin_of(y), []).append(e)
    bin_mse = [sum(e * e for e in es) / len(es) for es in per_bin.values()]
    bin_mae = [sum(abs(e) for e in es) / len(es) for es in per_bin.values()]
    logs = [math.log(abs(e)) if e != 0 else math.log(1e-10) for e in errors]
    constant = len(set(preds)) < 2 or len(set(labels)) < 2
    return {
        "mse": sum(e * e for e in errors) / len(errors),
        "mae": sum(abs(e) for e in errors) / len(errors),
        "gm": math.exp(sum(logs) / len(logs)),
        "pearson": None if constant else ref_pearson(preds, labels),
        "spearman": None if constant else ref_spearman(preds, labels),
        "count": len(errors),
        "bmse": sum(bin_mse) / len(bin_mse),
        "bmae": sum(bin_mae) / len(bin_mae),
    }


def ref_shot_metrics(preds, labels, train_labels, many=100, low=20):
    train_ints = [int(t) for t in train_labels]
    groups = {"many": ([], []), "medium": ([], []), "few": ([], [])}
    for label in sorted(set(int(y) for y in labels)):
        n_train = sum(1 for t in train_ints if t == label)
        region = "many" if n_train > many else ("few" if n_train < low else "medium")
        for p, y in zip(preds, labels):
            if int(y) == label:
                groups[region][0].append(p)
                groups[region][1].append(y)
    out = {"all": ref_region_metrics(list(preds), list(labels))}
    out.update({r: ref_region_metrics(*groups[r]) for r in groups})
    return out


def ref_sts_region(label):
    b = ref_sts_bin(label)
    return next(r for r, bins in STS_B_SHOT_BINS.items() if b in bins)


def assert_metrics_close(ours, ref):
    assert set(ours) == {"all", "many", "medium", "few"}
    for region in ours:
        assert set(ours[region]) == {"mse", "mae", "gm", "pearson", "spearman", "count", "bmse", "bmae"}
        for key, value in ours[region].items():
            expected = ref[region][key]
            if expected is None:
                assert value is None, (region, key)
            else:
                assert value == pytest.approx(expected, rel=1e-9, abs=1e-12), (region, key)


def age_data(seed=0, n_test=300):
    rng = np.random.default_rng(seed)
    # Training ages: 0..79 with counts from 0 up to about 200, so all three regions are populated.
    train = np.repeat(np.arange(80), rng.integers(0, 200, 80) * (np.arange(80) % 7 != 3))
    labels = rng.integers(0, 90, n_test).astype(np.float64)  # includes ages never seen in training
    preds = labels + rng.normal(0, 5, n_test).round(1)
    preds[:5] = labels[:5]  # a few exact predictions: GM must not collapse to 0
    return preds, labels, train


# ----------------------------------------------------------------------------- age

def test_age_shot_metrics_equal_the_per_label_loop():
    preds, labels, train = age_data()
    assert_metrics_close(shot_metrics(preds, labels, train), ref_shot_metrics(preds, labels, train))


@pytest.mark.parametrize("convert", [
    lambda a: a, lambda a: a.reshape(-1, 1), lambda a: torch.from_numpy(a),
    lambda a: torch.from_numpy(a).float()[:, None], lambda a: a.tolist()])
def test_inputs_of_every_kind(convert):
    preds, labels, train = age_data(1, 50)
    base = shot_metrics(preds.astype(np.float32), labels, train)
    ours = shot_metrics(convert(preds.astype(np.float32)), convert(labels), convert(train.astype(np.float64)))
    assert_metrics_close(ours, base)


def test_region_thresholds():
    train = np.concatenate([np.full(101, 1), np.full(100, 2), np.full(20, 3), np.full(19, 4)])
    regions = shot_regions([1, 2, 3, 4, 5, 1.9], train)
    assert regions.tolist() == ["many", "medium", "medium", "few", "few", "many"]


def test_empty_regions_and_single_samples_are_none_not_nan():
    train = np.full(500, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy ConstantInputWarning, no numpy RuntimeWarning
        out = shot_metrics([31.0], [30.0], train)
        assert out["many"]["count"] == 1 and out["many"]["mae"] == 1.0
        assert out["many"]["pearson"] is None and out["all"]["spearman"] is None
        assert out["medium"] == {"mse": None, "mae": None, "gm": None, "pearson": None, "spearman": None,
                                 "count": 0, "bmse": None, "bmae": None}
        const = shot_metrics([5.0, 5.0, 5.0], [30.0, 30.0, 30.0], train)
        assert const["all"]["pearson"] is None and const["all"]["mse"] == 625.0
        empty = shot_metrics(np.zeros(0), np.zeros(0), train)
        assert empty["all"]["count"] == 0 and empty["all"]["mae"] is None
    json.dumps(out)


def test_results_are_plain_python_types():
    preds, labels, train = age_data(2, 80)
    out = shot_metrics(preds, labels, train)
    for region in out.values():
        for key, value in region.items():
            assert value is None or type(value) is (int if key == "count" else float)
    json.dumps(out)


def test_gm_replaces_exact_zeros():
    out = shot_metrics([1.0, 3.0], [1.0, 1.0], np.full(300, 1))
    assert out["all"]["gm"] == pytest.approx(math.sqrt(1e-10 * 2.0))


def test_mismatched_lengths_and_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"same length.*\(3,\).*\(2,\)"):
        shot_metrics([1.0, 2.0, 3.0], [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, 1\).*\(2, 2\)"):
        shot_metrics(np.zeros((2, 2)), np.zeros((2, 2)), [1.0])


# ----------------------------------------------------------------------------- STS-B

def test_sts_b_shot_metrics_equal_the_loop_over_fixed_bins():
    rng = np.random.default_rng(3)
    labels = np.concatenate([rng.integers(0, 26, 400) / 5, [0.0, 0.7, 4.99, 5.0]]).astype(np.float32)
    preds = np.clip(labels + rng.normal(0, 0.6, labels.size), 0, 5).astype(np.float32)
    groups = {r: ([], []) for r in ("many", "medium", "few")}
    for p, y in zip(preds.tolist(), labels.tolist()):
        groups[ref_sts_region(y)][0].append(p)
        groups[ref_sts_region(y)][1].append(y)
    ref = {"all": ref_region_metrics(preds.tolist(), labels.tolist(), ref_sts_bin)}
    ref.update({r: ref_region_metrics(*groups[r], ref_sts_bin) for r in groups})
    assert_metrics_close(shot_metrics_sts_b(torch.from_numpy(preds)[:, None], labels), ref)
    assert shot_regions_sts_b(labels).tolist() == [ref_sts_region(y) for y in labels.tolist()]


def test_sts_b_fixed_lists_partition_the_bins():
    assert sorted(sum(STS_B_SHOT_BINS.values(), [])) == list(range(STS_B_NUM_BINS))
    assert STS_B_SHOT_BINS["medium"] == [2, 4, 6, 8, 27, 35, 37]
    # 5.0 is in bin 49 (many), 0.7 (as float32) in bin 7 (few), 0.2 in bin 2 (medium).
    assert shot_regions_sts_b(np.float32([5.0, 0.7, 0.2])).tolist() == ["many", "few", "medium"]


# ----------------------------------------------------------------------------- per label

def test_per_label_errors_equal_a_loop():
    preds, labels, _ = age_data(4, 120)
    ours = per_label_errors(preds, labels)
    expected = []
    for b in sorted(set(int(y) for y in labels)):
        errs = [p - y for p, y in zip(preds, labels) if int(y) == b]
        expected.append({"label_bin": b, "count": len(errs), "mae": sum(abs(e) for e in errs) / len(errs),
                         "mse": sum(e * e for e in errs) / len(errs)})
    assert [d["label_bin"] for d in ours] == [d["label_bin"] for d in expected]
    for a, b in zip(ours, expected):
        assert a["count"] == b["count"]
        assert a["mae"] == pytest.approx(b["mae"]) and a["mse"] == pytest.approx(b["mse"])
    sts = per_label_errors([4.0, 5.0], [5.0, 4.95], binning="sts_b")
    assert [d["label_bin"] for d in sts] == [49] and sts[0]["count"] == 2


# ----------------------------------------------------------------------------- binning

def test_age_bins():
    labels = [0.0, 0.99, 1.0, 25.5, 130.0]
    assert label_bins(np.array(labels)).tolist() == [0, 0, 1, 25, 130]
    assert label_bins(np.array(labels), num_bins=121).tolist() == [0, 0, 1, 25, 120]
    t = label_bins(torch.tensor(labels)[:, None])
    assert t.dtype == torch.int64 and t.shape == (5,) and t.tolist() == [0, 0, 1, 25, 130]
    assert label_bins(torch.tensor([3, 4])).tolist() == [3, 4]


def test_sts_b_bins_match_the_float32_histogram_edges():
    rng = np.random.default_rng(5)
    labels = np.concatenate([np.arange(0, 51) / 10, rng.uniform(0, 5, 500), [-0.3, 5.2]]).astype(np.float32)
    edges = np.histogram(np.array([], dtype=np.float32), bins=50, range=(0.0, 5.0))[1]
    # The authors' rule: the first edge above the label, minus one; 5.0 and above go to bin 49.
    expected = [49 if y >= 5.0 else max(int(np.where(edges > y)[0][0]) - 1, 0) for y in labels]
    assert label_bins(labels, "sts_b").tolist() == expected
    assert label_bins(torch.from_numpy(labels), "sts_b").tolist() == expected
    # float64 labels k / 10 sit exactly on the float64 edges.
    assert label_bins(torch.arange(51, dtype=torch.float64) / 10, "sts_b").tolist() == list(range(50)) + [49]
    assert label_bins(np.arange(51) / 10, "sts_b").tolist() == list(range(50)) + [49]


def test_binning_never_writes_into_the_labels():
    ages = torch.tensor([0, 50, 140])
    label_bins(ages, num_bins=121)
    fds_buckets(ages, 100, 3)
    label_bins(ages).add_(1)
    assert ages.tolist() == [0, 50, 140]
    array = np.array([0, 50, 140])
    label_bins(array, num_bins=121)[0] = 7
    assert array.tolist() == [0, 50, 140]


def test_fds_buckets_plain_clamp():
    ages = torch.tensor([0.0, 2.0, 3.0, 50.0, 99.0, 100.0, 140.0])
    assert fds_buckets(ages, 100, 3).tolist() == [0, 0, 0, 47, 96, 96, 96]
    assert fds_buckets(np.float32([0.0, 2.5, 5.0]), 50, 0, "sts_b").tolist() == [0, 25, 49]


def test_unknown_binning_is_rejected():
    with pytest.raises(ValueError, match=r"'imdb'.*\['age', 'sts_b'\]"):
        label_bins([1.0], "imdb")
    with pytest.raises(ValueError, match=r"'x'.*\['age', 'sts_b'\]"):
        per_label_errors([1.0], [1.0], binning="x")


def test_balanced_metrics_weight_every_label_equally():
    """Label 30 has three samples with error 1, label 40 one with error 5: MAE = (3 + 5) / 4 = 2,
    bMAE = (1 + 5) / 2 = 3; MSE = (3 + 25) / 4 = 7, bMSE = (1 + 25) / 2 = 13."""
    out = shot_metrics([31.0, 29.0, 31.0, 45.0], [30.0, 30.0, 30.0, 40.0], np.full(500, 30))
    assert out["all"]["mae"] == 2.0 and out["all"]["bmae"] == 3.0
    assert out["all"]["mse"] == 7.0 and out["all"]["bmse"] == 13.0
