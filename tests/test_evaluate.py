"""evaluate.py's result-reading options, ranksim/evaluation/diagnostics.py and ranksim/results/run_outputs.py.

The computations are checked against slow, obvious loops (``scipy.stats.spearmanr`` per sample,
a per-bin loop with the SPEC 5 thresholds written out); the entry point is run end to end on two
tiny synthetic runs (one epoch each, trained in parallel) to check the files it writes.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from ranksim.evaluation.diagnostics import (bin_lower_edges, per_label_mean, per_label_table,
                                            rank_similarity_correlation, write_per_label_csv)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import TINY  # noqa: E402

ONE_EPOCH = [*TINY, "schedule.epochs=1", "schedule.milestones=[]", "logging.tensorboard=false"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("label_histogram.png", "per_label_mae.png", "per_label_mse.png", "rank_correlation.png")


# ---------------------------------------------------------------------------------------------
# rank_similarity_correlation


def slow_rank_correlation(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The definition, one sample at a time: spearmanr of S_i and T_i over j != i."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    x = features / np.where(norms > 0, norms, 1.0)
    out = np.full(len(labels), np.nan)
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        s = x[others] @ x[i]
        t = -np.abs(labels[others] - labels[i])
        if np.ptp(s) > 0 and np.ptp(t) > 0:
            out[i] = stats.spearmanr(s, t)[0]   # average ranks for ties, like rankdata
    return out


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_rank_correlation_equals_spearmanr_per_sample(chunk_size):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(31, 5))
    labels = rng.integers(0, 6, size=31).astype(np.float64)  # 31 samples over 6 labels: many ties
    expected = slow_rank_correlation(features, labels)
    got = rank_similarity_correlation(features, labels, chunk_size=chunk_size)
    assert got.shape == (31,)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # Tensors of shape (N, 1) labels and float32 features give the same up to float32 rounding.
    got32 = rank_similarity_correlation(torch.tensor(features, dtype=torch.float32),
                                        torch.tensor(labels).reshape(-1, 1))
    np.testing.assert_allclose(got32, expected, atol=1e-6)


def test_rank_correlation_by_hand():
    """Features on a quarter circle at the angle of their label: S_ij = cos(theta_i - theta_j)
    falls exactly as |y_i - y_j| grows, so every row ranks like its labels and rho_i = 1. Sending
    the angle the other way round changes nothing (only differences matter). A sample whose
    features are all zero has a constant row, so its rho is undefined (NaN), and its column is
    a tie in every other row, which rho then no longer ranks perfectly."""
    labels = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 8.0])
    theta = labels / labels.max() * np.pi / 2
    features = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    np.testing.assert_allclose(rank_similarity_correlation(features, labels), 1.0)
    np.testing.assert_allclose(rank_similarity_correlation(features[:, ::-1], labels), 1.0)
    dead = features.copy()
    dead[2] = 0.0
    got = rank_similarity_correlation(dead, labels)
    assert np.isnan(got[2]) and np.all(got[np.arange(6) != 2] < 1.0)
    np.testing.assert_allclose(got, slow_rank_correlation(dead, labels), rtol=1e-12)
    assert np.isnan(rank_similarity_correlation(features[:2], labels[:2])).all(), "one other sample: undefined"


def test_rank_correlation_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(5,\)"):
        rank_similarity_correlation(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match=r"N = 5"):
        rank_similarity_correlation(np.zeros((5, 3)), np.zeros(4))


# ---------------------------------------------------------------------------------------------
# Per-label tables


def test_per_label_table_equals_a_loop_with_the_spec_thresholds():
    rng = np.random.default_rng(1)
    # Training counts per age: 150 of age 10 (many), 50 of age 11 (medium), 5 of age 12 (few), 0 of 13 (few).
    train = np.repeat([10.0, 11.0, 12.0], [150, 50, 5]) + rng.uniform(0, 0.99, 205)
    labels = rng.choice([10.0, 10.5, 11.2, 12.9, 13.0], size=60)
    preds = labels + rng.normal(0, 2, 60)
    rows = per_label_table(preds, labels, train, "age")
    expected = []
    for age in sorted(set(np.floor(labels).astype(int))):
        mask = np.floor(labels) == age
        n_train = int(np.sum(np.floor(train) == age))
        region = "many" if n_train > 100 else "few" if n_train < 20 else "medium"
        err = preds[mask] - labels[mask]
        expected.append({"label_bin": age, "label": age, "count": int(mask.sum()), "mae": np.mean(np.abs(err)),
                         "mse": np.mean(err ** 2), "region": region})
    assert [r["region"] for r in expected] == ["many", "medium", "few", "few"]
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected):
        assert {k: got[k] for k in ("label_bin", "label", "count", "region")} == \
               {k: want[k] for k in ("label_bin", "label", "count", "region")}
        assert got["mae"] == pytest.approx(want["mae"]) and got["mse"] == pytest.approx(want["mse"])


def test_per_label_table_sts_b_uses_bin_lower_edges_and_fixed_regions(tmp_path):
    """STS-B bin k is [k/10, (k+1)/10); 5.0 is in bin 49; regions are the SPEC 5 lists (0 many,
    1 few, 2 medium, 49 many). float32(0.7) is in bin 7 (few), not 6."""
    labels = np.array([0.0, 0.05, 0.15, 0.2, 0.7, 5.0], dtype=np.float32)
    preds = labels + np.float32(0.5)
    rows = per_label_table(preds, labels, np.zeros(3), "sts_b")
    assert [(r["label_bin"], r["label"], r["count"], r["region"]) for r in rows] == [
        (0, 0.0, 2, "many"), (1, 0.1, 1, "few"), (2, 0.2, 1, "medium"), (7, 0.7, 1, "few"), (49, 4.9, 1, "many")]
    assert all(r["mae"] == pytest.approx(0.5) and r["mse"] == pytest.approx(0.25) for r in rows)
    path = write_per_label_csv(rows, tmp_path / "per_label_test.csv")
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["label_bin", "label", "count", "mae", "mse", "region"]
    assert [r["label"] for r in read] == ["0.0", "0.1", "0.2", "0.7", "4.9"]
    np.testing.assert_allclose(bin_lower_edges(np.arange(50), "sts_b"), np.arange(50) / 10)


def test_per_label_mean_ignores_nan():
    rows = per_label_mean([1.0, 3.0, np.nan, np.nan, 0.5], [20.2, 20.9, 21.0, 21.5, 7.0], "age")
    assert rows == [{"label_bin": 7, "label": 7.0, "count": 1, "mean": 0.5},
                    {"label_bin": 20, "label": 20.0, "count": 2, "mean": 2.0},
                    {"label_bin": 21, "label": 21.0, "count": 2, "mean": None}]


# ---------------------------------------------------------------------------------------------
# evaluate.py end to end


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root) -> dict[str, Path]:
    """Two one-epoch runs on the tiny synthetic data: VANILLA and Vanilla + RankSim (trained in parallel)."""
    base = tmp_path_factory.mktemp("evaluate")
    procs = {}
    for config in ("vanilla", "ranksim"):
        procs[config] = subprocess.Popen(
            [sys.executable, "train.py", "-c", f"configs/quickstart/{config}.yaml", *ONE_EPOCH, f"data.root={data_root}",
             f"output_dir={base / config}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for config, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    return {config: base / config for config in procs}


@pytest.fixture
def ranksim_logger():
    """evaluate.main() called in-process sets up the 'ranksim' logger; put it back afterwards."""
    logger = logging.getLogger("ranksim")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate, logger.level = propagate, level


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} was not written"
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"


def test_per_label_plots_and_features(runs):
    out = runs["vanilla"]
    proc = run("evaluate.py", str(out), "--per-label", "--plots", "--save-features")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((out / "eval_test.json").read_text())["metrics"]
    assert evaluated == json.loads((out / "results.json").read_text())["metrics"], \
        "evaluating with features must give the metrics of training's test"

    with np.load(out / "features_test.npz") as f:
        features, labels, preds = f["features"], f["labels"], f["preds"]
    n = evaluated["all"]["count"]
    assert features.shape == (n, 4 * 4) and features.dtype == np.float32  # resnet_small: 4 * width features
    assert labels.shape == preds.shape == (n,)

    with open(out / "per_label_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label_bin", "label", "count", "mae", "mse", "region"]
    counts = np.array([int(r["count"]) for r in rows])
    mae = np.array([float(r["mae"]) for r in rows])
    assert counts.sum() == n
    assert np.sum(counts * mae) / n == pytest.approx(evaluated["all"]["mae"], rel=1e-5), \
        "the count-weighted mean of the per-label MAE is the overall MAE"
    for region in ("many", "medium", "few"):
        assert sum(c for c, r in zip(counts, rows) if r["region"] == region) == evaluated[region]["count"]
    for row in rows:  # the slow way, from the saved predictions
        mask = np.floor(labels) == int(row["label_bin"])
        assert int(row["label"]) == int(row["label_bin"]) and int(row["count"]) == mask.sum()
        assert float(row["mae"]) == pytest.approx(np.mean(np.abs(preds[mask] - labels[mask])), rel=1e-5)
        assert float(row["mse"]) == pytest.approx(np.mean((preds[mask] - labels[mask]) ** 2), rel=1e-5)
    for name in PLOTS:
        assert_png(out / "plots" / name)


def test_compare_draws_other_runs_and_reuses_saved_features(runs, capsys, ranksim_logger):
    import evaluate

    out = runs["vanilla"]
    if not (out / "features_test.npz").is_file():  # when run alone
        assert evaluate.main([str(out), "--save-features"]) == 0
    for name in PLOTS:
        (out / "plots" / name).unlink(missing_ok=True)
    assert evaluate.main([str(out), "--compare", str(runs["ranksim"])]) == 0  # --compare implies --plots
    err = capsys.readouterr().err
    assert "reusing the features in" in err and "features_test.npz" in err
    for name in PLOTS:
        assert_png(out / "plots" / name)
    assert not (runs["ranksim"] / "plots").exists(), "the compared run's folder is left alone"


def test_compare_errors(runs, tmp_path, capsys, ranksim_logger):
    import evaluate

    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    shutil.copy(runs["ranksim"] / "config.yaml", unfinished)
    assert evaluate.main([str(runs["vanilla"]), "--compare", str(unfinished)]) == 2
    assert "no results to compare" in capsys.readouterr().err

    other = tmp_path / "other_dataset"
    (other / "checkpoints").mkdir(parents=True)
    checkpoint = torch.load(runs["ranksim"] / "checkpoints" / "best.pt", weights_only=False)
    checkpoint["config"]["data"]["dataset"] = "agedb"
    torch.save(checkpoint, other / "checkpoints" / "best.pt")
    assert evaluate.main([str(runs["vanilla"]), "--compare", str(other)]) == 2
    assert "agedb run but the evaluated run is synthetic" in capsys.readouterr().err

    assert evaluate.main([str(runs["vanilla"]), "--compare", str(tmp_path / "absent")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_partial_file(runs, tmp_path, monkeypatch, capsys, ranksim_logger):
    """Ctrl-C while the first plot is being written (after eval_test.json and the per-label CSV):
    one line and status 130, as train.py, instead of a 60-80-line traceback; no .tmp and no
    half-written PNG."""
    import evaluate
    from matplotlib.figure import Figure

    out = tmp_path / "copy"
    shutil.copytree(runs["vanilla"], out)
    shutil.rmtree(out / "plots", ignore_errors=True)

    def interrupted_savefig(self, fh, **kwargs):
        fh.write(b"half a PNG")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted_savefig)
    capsys.readouterr()
    assert evaluate.main([str(out), "--per-label", "--plots"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert "interrupted; run the same command again" in err[-1] and "Traceback" not in "".join(err)
    assert not [line for line in err if "ERROR" in line or "interrupted" in line][1:], err
    assert not list(out.rglob("*.tmp")) and not list((out / "plots").glob("*.png"))
    assert json.loads((out / "eval_test.json").read_text())["split"] == "test"


def test_write_plots_sts_b_two_runs(tmp_path):
    """The STS-B path of the figures (50 fixed bins of width 0.1), two runs on one axis."""
    from ranksim.results.run_outputs import SplitOutputs, write_plots

    rng = np.random.default_rng(2)
    labels = np.round(rng.uniform(0, 5, 80), 1).astype(np.float32)
    runs = {name: SplitOutputs(labels + rng.normal(0, 0.5, 80), labels.astype(np.float64), rng.normal(size=(80, 6)))
            for name in ("VANILLA", "Vanilla + RankSim")}
    written = write_plots(tmp_path / "plots", runs, rng.uniform(0, 5, 300), "sts_b", "val")
    assert sorted(p.name for p in written) == sorted(PLOTS)
    for path in written:
        assert_png(path)


def test_saved_features_are_reused_only_for_the_same_checkpoint_and_split(tmp_path):
    from ranksim.results.run_outputs import SplitOutputs, load_features, save_features

    outputs = SplitOutputs(np.array([1.0, 2.5]), np.array([1.0, 2.0]), np.ones((2, 3), np.float32))
    made_by = {"checkpoint": "best.pt", "epoch": 7, "step": 70}
    path = save_features(tmp_path / "features_test.npz", outputs, "test", made_by, dtype="float16")
    same = load_features(path, "test", made_by, split_labels=np.array([1.0, 2.0], np.float32))
    assert same is not None and same.features.dtype == np.float16
    np.testing.assert_array_equal(same.preds, outputs.preds)
    assert load_features(path, "val", made_by) is None
    assert load_features(path, "test", {**made_by, "epoch": 8}) is None, "a newer best.pt"
    assert load_features(path, "test", made_by, split_labels=np.array([1.0, 3.0])) is None, "another split file"
    assert load_features(tmp_path / "absent.npz", "test", made_by) is None
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert load_features(tmp_path / "broken.npz", "test", made_by) is None
