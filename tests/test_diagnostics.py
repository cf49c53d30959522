"""Tests for the feature diagnostics (ranksim.evaluation.diagnostics.FeatureDiagnostics) and RankSim's
off-by-default ``center_features`` variant.

The references are written out plainly: pairwise cosines by a double loop over pairs, the 5th
percentile by numpy, the rank correlation by :func:`rank_similarity_correlation` (scipy's average
ranks), and the regularizer by calling it batch by batch on the same fixed batches.
"""

import json

import numpy as np
import pytest
import torch
from tiny import load_script

from ranksim.evaluation.diagnostics import FeatureDiagnostics, rank_similarity_correlation
from ranksim.methods.regularizer import batchwise_ranking_regularizer


def _features(n=150, d=12, seed=0):
    g = np.random.default_rng(seed)
    labels = g.integers(0, 30, n).astype(np.float64)
    # Features that carry the label along one direction, plus noise: a correlation well inside (0, 1).
    x = g.normal(size=(n, d)) + labels[:, None] * g.normal(size=d) * 0.2
    return torch.tensor(x, dtype=torch.float32), labels


def test_values_match_slow_references():
    x, labels = _features()
    diag = FeatureDiagnostics(labels, batch_size=32, interpolation_lambda=2.0, max_samples=100, seed=3)
    got = diag(x)
    idx = diag.index.numpy()
    assert len(set(idx)) == 100 and len(idx) == 100
    sub, y = x[idx].double().numpy(), labels[idx]
    cos = [sub[i] @ sub[j] / np.linalg.norm(sub[i]) / np.linalg.norm(sub[j])
           for i in range(100) for j in range(100) if i != j]
    assert got["cos_mean"] == pytest.approx(np.mean(cos), abs=1e-5)
    assert abs(got["cos_p05"] - np.quantile(cos, 0.05)) < 0.02 * (max(cos) - min(cos))
    assert got["rank_corr"] == pytest.approx(np.nanmean(rank_similarity_correlation(sub, y)), abs=1e-6)
    g = torch.Generator().manual_seed(3)
    regs = [float(batchwise_ranking_regularizer(x[idx][s:s + 32], torch.tensor(y[s:s + 32]), 2.0, g))
            for s in (0, 32, 64)]  # three full batches of 32 in 100 samples
    assert got["ranksim_reg"] == pytest.approx(np.mean(regs), rel=1e-6)
    assert diag(x) == got, "a second call on the same features must give the same values"


def test_collapsed_features_read_as_collapsed():
    """One common direction plus a tiny label signal: cosines near 1, yet the ranks still follow labels."""
    g = np.random.default_rng(1)
    labels = g.integers(0, 30, 200).astype(np.float64)
    common = torch.ones(200, 16)
    spread = torch.tensor(g.normal(size=(200, 16)), dtype=torch.float32)
    collapsed = FeatureDiagnostics(labels, 64, 2.0)(common + 1e-3 * spread)
    healthy = FeatureDiagnostics(labels, 64, 2.0)(spread)
    assert collapsed["cos_mean"] > 0.999 and collapsed["cos_p05"] > 0.999
    assert healthy["cos_mean"] < 0.2
    # Random features: ranks are noise, so the correlation is near 0 and the regularizer near its
    # chance level, m / 6 for m distinct labels in a batch (about 26 of 30 here).
    assert abs(healthy["rank_corr"]) < 0.1 and healthy["ranksim_reg"] > 3


def test_label_ordered_features_score_well():
    labels = np.arange(60, dtype=np.float64).repeat(3)
    angle = torch.tensor(labels / 60 * np.pi / 2, dtype=torch.float32)
    x = torch.stack([angle.cos(), angle.sin()], dim=1)  # cosine similarity falls with label distance
    got = FeatureDiagnostics(labels, 64, 2.0)(x)
    assert got["rank_corr"] > 0.95 and got["ranksim_reg"] < 0.5


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="batch_size"):
        FeatureDiagnostics(np.arange(10.0), 1, 2.0)


def test_centred_regularizer_ignores_a_common_component():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, dtype=torch.float64, generator=g)
    y = torch.randperm(40, generator=g).double()
    shift = torch.full((1, 8), 5.0, dtype=torch.float64)
    centred = batchwise_ranking_regularizer(x - x.mean(0), y, 2.0)
    assert batchwise_ranking_regularizer(x, y, 2.0, center_features=True) == pytest.approx(float(centred), abs=1e-12)
    assert batchwise_ranking_regularizer(x + shift, y, 2.0, center_features=True) == pytest.approx(float(centred), abs=1e-12)
    assert float(batchwise_ranking_regularizer(x + shift, y, 2.0)) != pytest.approx(float(centred), abs=1e-3)
    # The gradient reaches the features through the centring.
    leaf = x.clone().requires_grad_(True)
    batchwise_ranking_regularizer(leaf, y, 2.0, center_features=True).backward()
    assert leaf.grad.abs().sum() > 0 and torch.allclose(leaf.grad.sum(0), torch.zeros(8, dtype=torch.float64), atol=1e-9)


def test_collapse_report_averages_the_seeds_asked_for(tmp_path):
    """scripts/ranksim_collapse.py's table: last-epoch diagnostics and best-epoch validation MAE,
    mean ± sample std over exactly the requested seeds (issue 10's held-out seeds are reported apart)."""
    collapse = load_script("ranksim_collapse")
    for seed, (reg, few) in enumerate([(1.0, 4.0), (2.0, 6.0), (9.0, 9.0)]):
        run = tmp_path / "w8_vanilla" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text("{}")
        epochs = [  # epoch 0 has the best MAE, epoch 1 the last diagnostics
            {"val": {"all": {"mae": 1.0}, "few": {"mae": few}}, "val_diagnostics": {"ranksim_reg": 50.0, "rank_corr": 0.1, "cos_mean": 0.9}},
            {"val": {"all": {"mae": 3.0}, "few": {"mae": 99.0}}, "val_diagnostics": {"ranksim_reg": reg, "rank_corr": 0.2, "cos_mean": 0.8}}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    row = collapse.report(tmp_path, ["w8_vanilla"], seeds=[0, 1]).splitlines()[2].split(" | ")
    assert row[1] == "2" and row[2] == f"1.500 ± {np.std([1.0, 2.0], ddof=1):.3f}"
    assert row[-2] == f"5.000 ± {np.std([4.0, 6.0], ddof=1):.3f}"
    assert collapse.report(tmp_path, ["w8_vanilla"]).splitlines()[2].split(" | ")[1] == "3"
