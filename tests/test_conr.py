"""ConR (SPEC 9.2): the vectorised loss against a per-anchor loop written from the formula (fixed
and faithful denominators), gradient checks in float64, the undefined cases, the two extra views
of the data, the config, and exact resume of a run with ConR and Balanced MSE.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ranksim.methods.conr import conr_loss

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tiny import TINY  # noqa: E402


def ref_conr(z, y, p, w, thr, t, e, faithful):
    """One anchor at a time, with plain Python sums."""
    n = len(y)
    norms = [math.sqrt(sum(v * v for v in row)) for row in z]
    q = [[v / nrm for v in row] for row, nrm in zip(z, norms)]
    s = [[sum(a * b for a, b in zip(q[i], q[j])) / t for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        pos = [j for j in range(n) if j != i and abs(y[i] - y[j]) <= thr]
        neg = [j for j in range(n) if abs(y[i] - y[j]) > thr and abs(p[i] - p[j]) <= thr]
        if not pos or not neg:
            continue  # no negative: zeroed by the authors; no positive: 0/0, defined as 0
        pos_sum = sum(math.exp(s[i][j]) for j in pos)
        if faithful:
            pos_sum += n - len(pos)  # exp(0) for every non-positive column, the anchor included
        neg_sum = sum(w[i] * math.exp(e * abs(y[i] - y[j])) * math.exp(s[i][j]) for j in neg)
        l_i = sum(-math.log(math.exp(s[i][j]) / (pos_sum + neg_sum)) for j in pos) / len(pos)
        total += w[i] * l_i
    return total / n


def sample(seed=0, n=16, d=5):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, 8, (n, 1), generator=g).double()
    p = y + 2.0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    w = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)
    return z, y, p, w


@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_the_per_anchor_loop(faithful, seed):
    z, y, p, w = sample(seed)
    ours = conr_loss(z, y, p, w, threshold=1.0, temperature=0.2, push=0.05, faithful=faithful)
    ref = ref_conr(z.tolist(), y.flatten().tolist(), p.flatten().tolist(), w.flatten().tolist(),
                   1.0, 0.2, 0.05, faithful)
    assert ref > 0, "the sample has no valid anchor: the test would prove nothing"
    assert ours.item() == pytest.approx(ref, rel=1e-10)


def test_faithful_denominator_is_larger():
    z, y, p, w = sample(3)
    fixed = conr_loss(z, y, p, w, temperature=0.2)
    faithful = conr_loss(z, y, p, w, temperature=0.2, faithful=True)
    assert faithful.item() > fixed.item()


@pytest.mark.parametrize("faithful", [False, True])
def test_gradient_matches_finite_differences(faithful):
    z, y, p, w = sample(4, n=10, d=4)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: conr_loss(f, y, p, w, temperature=0.5, faithful=faithful), (z,),
                                    eps=1e-6, atol=1e-6)


def test_anchor_without_positive_or_negative_counts_zero():
    """Labels 0, 10, 20: no two within w = 1, so no anchor has a positive: the loss is 0 (the
    authors' 0/0), and the gradient is finite (zero)."""
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64)
    loss = conr_loss(z, y, torch.zeros(3, dtype=torch.float64))  # all predicted alike: all negatives
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    # One pair of equal labels, but predictions far apart: positives without negatives -> 0.
    y = torch.tensor([5.0, 5.0, 30.0], dtype=torch.float64)
    p = torch.tensor([5.0, 5.0, 30.0], dtype=torch.float64)
    assert conr_loss(z, y, p).item() == 0.0


def test_predictions_get_no_gradient_and_shapes_are_checked():
    z, y, p, w = sample(5)
    p.requires_grad_(True)
    conr_loss(z.requires_grad_(True), y, p, w).backward()
    assert p.grad is None and z.grad is not None
    with pytest.raises(ValueError, match=r"targets must have shape \(16,\)"):
        conr_loss(z, y[:4], p, w)
    with pytest.raises(ValueError, match="temperature"):
        conr_loss(z, y, p, w, temperature=0.0)


# ----------------------------------------------------------------------------- data and config


def test_views_are_extra_augmentations_of_the_same_image(data_root):
    from ranksim.data.age.dataset import AgeDataset

    rows = pd.read_csv(data_root / "synthetic.csv")
    rows = rows[rows["split"] == "train"].reset_index(drop=True)
    plain = AgeDataset(data_root, rows, train=True, image_size=16, crop_padding=1)
    torch.manual_seed(0)
    image, target, weight = plain[3]
    torch.manual_seed(0)
    (image_v, views), target_v, _ = plain.with_views(2)[3]
    assert torch.equal(image, image_v) and torch.equal(target, target_v), "views change the ordinary batch"
    assert views.shape == (2, *image.shape)
    assert plain.views == 0  # with_views returns a copy


def print_config(*args):
    return subprocess.run([sys.executable, "train.py", *args, "--print-config"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_conr_ranksim_config_has_both_regularizers():
    import yaml
    proc = print_config("-c", "configs/agedb/conr_ranksim.yaml")
    assert proc.returncode == 0, proc.stderr
    method = yaml.safe_load(proc.stdout)["method"]
    assert method["conr"]["enabled"] and method["ranksim"]["enabled"]


def test_conr_on_sts_b_is_refused_in_one_line():
    proc = print_config("-c", "configs/sts_b/cpu_vanilla.yaml", "method.conr.enabled=true")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "method.conr.enabled" in lines[0] and "sts_b" in lines[0]


# ----------------------------------------------------------------------------- training


def test_resume_is_exact_with_conr_and_balanced_mse(tmp_path, data_root):
    """As tests/test_pipeline.py's resume test, with ConR (views, extra pass), RankSim, LDS and the
    learnt noise scale of BMC: a run cut after epoch 1 of 2 (its LR milestone at 1 is the full run's
first decay) and resumed ends as the full run."""
    import train as train_cli

    def train(name, *extra):
        out = tmp_path / name
        args = ["-c", str(REPO / "configs/quickstart/conr.yaml"), *TINY, f"data.root={data_root}",
                f"output_dir={out}", "schedule.epochs=2", "schedule.milestones=[1]", "method.loss=bmse",
                "method.ranksim.enabled=true", "method.reweight=sqrt_inv", "method.lds.enabled=true", *extra]
        assert train_cli.main(args) == 0
        return out

    full = train("full")
    cut = train("cut", "schedule.epochs=1")
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["state"]["epoch"] == 1
    (cut / "config.yaml").write_text((cut / "config.yaml").read_text().replace("epochs: 1", "epochs: 2"))
    (cut / "results.json").unlink()
    assert train_cli.main(["--resume", str(cut)]) == 0
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(a["loss"]["noise_sigma"], b["loss"]["noise_sigma"])
    assert a["loss"]["noise_sigma"].item() != 10.0
    assert json.loads((cut / "results.json").read_text())["metrics"] == \
        json.loads((full / "results.json").read_text())["metrics"]
    train_log = [json.loads(line)["train"] for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert all(row["conr_loss"] > 0 for row in train_log) and np.isfinite(train_log[-1]["loss"])
