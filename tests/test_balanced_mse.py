"""Balanced MSE (SPEC 9.1): each variant against a per-sample loop written from the formulas,
gradient checks in float64, the GMM and BNI label models, the config errors, and training with
the noise scale (own optimizer group, checkpoint, TensorBoard).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ranksim.methods.balanced_mse import BalancedMSELoss, bmc_loss, bni_buckets, bni_loss, fit_gmm_1d, gai_loss

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tiny import TINY  # noqa: E402

# ----------------------------------------------------------------------------- slow references


def logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def ref_bmc(p, y, nv, w):
    """Row i: cross-entropy of logits_ij = -(p_i - y_j)^2 / (2 nv) with class i."""
    losses = []
    for i in range(len(p)):
        logits = [-(p[i] - y[j]) ** 2 / (2 * nv) for j in range(len(y))]
        losses.append(-(logits[i] - logsumexp(logits)))
    return sum(wi * li for wi, li in zip(w, losses)) / len(p) * 2 * nv


def ref_gai(p, y, nv, pis, mus, vs, w):
    losses = []
    for pi_, yi in zip(p, y):
        mix = [math.log(pk) - 0.5 * math.log(vk + nv) - (pi_ - mk) ** 2 / (2 * (vk + nv))
               for pk, mk, vk in zip(pis, mus, vs)]
        losses.append((pi_ - yi) ** 2 / (2 * nv) + 0.5 * math.log(nv) + logsumexp(mix))
    return sum(wi * li for wi, li in zip(w, losses)) / len(p) * 2 * nv


def ref_bni(p, y, nv, centres, bw, w):
    losses = []
    for pi_, yi in zip(p, y):
        terms = [math.log(b) - (pi_ - c) ** 2 / (2 * nv) for c, b in zip(centres, bw)]
        losses.append((pi_ - yi) ** 2 / (2 * nv) + logsumexp(terms))
    return sum(wi * li for wi, li in zip(w, losses)) / len(p) * 2 * nv


def batch(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 60, (n, 1), generator=g).double()
    p = y + 6 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    w = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)
    return p, y, w


GMM = (torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([10.0, 30.0, 50.0], dtype=torch.float64),
       torch.tensor([20.0, 40.0, 5.0], dtype=torch.float64))
BUCKETS = (torch.arange(0.0, 60.0, dtype=torch.float64), torch.softmax(torch.linspace(0, 3, 60, dtype=torch.float64), 0))


@pytest.mark.parametrize("weighted", [False, True])
def test_each_variant_equals_the_per_sample_loop(weighted):
    p, y, w = batch()
    nv = torch.tensor(7.3, dtype=torch.float64)
    weights = w if weighted else None
    wl = w.flatten().tolist() if weighted else [1.0] * len(p)
    pl, yl = p.flatten().tolist(), y.flatten().tolist()
    assert bmc_loss(p, y, nv, weights).item() == pytest.approx(ref_bmc(pl, yl, 7.3, wl), rel=1e-12)
    assert gai_loss(p, y, nv, *GMM, weights).item() == pytest.approx(
        ref_gai(pl, yl, 7.3, *(t.tolist() for t in GMM), wl), rel=1e-12)
    assert bni_loss(p, y, nv, *BUCKETS, weights).item() == pytest.approx(
        ref_bni(pl, yl, 7.3, *(t.tolist() for t in BUCKETS), wl), rel=1e-12)


def test_gradients_match_finite_differences():
    p, y, w = batch(1, 6)
    p.requires_grad_(True)
    sigma = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    # The (2 nv).detach() factor carries no gradient, while finite differences see it change with
    # sigma; dividing by the same detached factor leaves the NLL itself, whose analytic and
    # numerical gradients must agree (test_scale_factor_is_detached checks the factor).
    def unscaled(fn, *extra):
        return lambda pred, s: fn(pred, y, s ** 2, *extra, w) / (2 * s ** 2).detach()
    for fn in (unscaled(bmc_loss), unscaled(gai_loss, *GMM), unscaled(bni_loss, *BUCKETS)):
        assert torch.autograd.gradcheck(fn, (p, sigma), eps=1e-6, atol=1e-6)


def test_scale_factor_is_detached():
    """d loss / d sigma must be 2 nv times that of the unscaled loss: the factor carries no gradient."""
    p, y, _ = batch(2, 8)
    sigma = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (g_scaled,) = torch.autograd.grad(bmc_loss(p, y, sigma ** 2), sigma)
    sigma2 = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (g_plain,) = torch.autograd.grad(bmc_loss(p, y, sigma2 ** 2) / (2 * sigma2.detach() ** 2), sigma2)
    assert g_scaled.item() == pytest.approx(2 * 9.0 * g_plain.item(), rel=1e-10)


def test_gmm_recovers_a_known_mixture_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(20, 3, 6000), rng.normal(60, 8, 4000)])
    weights, means, variances = fit_gmm_1d(x, k=2)
    order = np.argsort(means)
    assert means[order] == pytest.approx([20, 60], abs=0.5)
    assert np.sqrt(variances[order]) == pytest.approx([3, 8], abs=0.3)
    assert weights[order] == pytest.approx([0.6, 0.4], abs=0.02)
    again = fit_gmm_1d(x, k=2)
    assert all(np.array_equal(a, b) for a, b in zip((weights, means, variances), again))


def test_bni_buckets_are_the_lds_smoothed_histogram():
    labels = np.array([3, 3, 3, 5, 9, 9], dtype=np.float32)
    centres, weights = bni_buckets(labels, "age")
    assert centres.tolist() == [3, 5, 9] and weights.tolist() == pytest.approx([0.5, 1 / 6, 1 / 3])
    # LDS: a triangular window of size 3 is [0.5, 1, 0.5]; counts 3 @ 3, 1 @ 5, 2 @ 9 smooth to
    # 1.5 @ 2, 3 @ 3, 2 @ 4 (1.5 + 0.5), 1 @ 5, 0.5 @ 6, 1 @ 8, 2 @ 9, 1 @ 10.
    centres, weights = bni_buckets(labels, "age", lds=True, lds_kernel="triang", lds_ks=3)
    expected = {2: 1.5, 3: 3, 4: 2, 5: 1, 6: 0.5, 8: 1, 9: 2, 10: 1}
    assert centres.tolist() == list(expected)
    assert weights.tolist() == pytest.approx([v / 12 for v in expected.values()])


def ref_bni_buckets(labels, max_target=200):
    """The authors' IMDB-WIKI-DIR histogram: one bucket per integer age below 200, the rest dropped."""
    counts = {age: 0 for age in range(max_target)}
    for label in labels:
        if int(label) < max_target:
            counts[int(label)] += 1
    kept = {age: n for age, n in counts.items() if n > 0}
    total = sum(kept.values())
    return list(kept), [n / total for n in kept.values()]


def test_bni_keeps_one_bucket_per_age_above_120_as_on_imdb_wiki():
    # IMDB-WIKI-DIR training ages run to 200 (val/test stop at 120).
    rng = np.random.default_rng(3)
    labels = np.concatenate([rng.integers(0, 100, 300), [121, 121, 130, 150, 150, 150, 199, 200]]).astype(np.float32)
    centres, weights = bni_buckets(labels, "age")
    ref_centres, ref_weights = ref_bni_buckets(labels)
    assert centres.tolist() == ref_centres and weights.tolist() == pytest.approx(ref_weights, rel=1e-12)
    assert 150 in centres and 200 not in centres
    # The loss with those buckets, predictions past 120 included, against the per-sample loop.
    loss = BalancedMSELoss("bni", 10.0, labels)
    p = torch.tensor([[30.0], [118.0], [140.0], [160.0]], dtype=torch.float64)
    y = torch.tensor([[31.0], [121.0], [150.0], [150.0]], dtype=torch.float64)
    value = loss(p, y)
    expected = ref_bni(p.flatten().tolist(), y.flatten().tolist(), 100.0, ref_centres, ref_weights, [1.0] * 4)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_bni_buckets_at_the_lowest_age_get_no_mass_from_outside_the_range():
    """LDS pads with zeros (SPEC 3, mode='constant'): counts 3 @ 0 and 1 @ 1 with the window
    [0.5, 1, 0.5] give 3.5 @ 0, 2.5 @ 1, 0.5 @ 2. Reflecting at the edge would add 0.5 * 3 to age 0."""
    labels = np.array([0, 0, 0, 1], dtype=np.float32)
    centres, weights = bni_buckets(labels, "age", lds=True, lds_kernel="triang", lds_ks=3)
    assert centres.tolist() == [0, 1, 2]
    assert weights.tolist() == pytest.approx([3.5 / 6.5, 2.5 / 6.5, 0.5 / 6.5])


def test_bni_buckets_on_sts_b_are_bin_centres_on_the_training_scale():
    """STS-B bins are [k/10, (k+1)/10), 5.0 in bin 49; their centres are (k + 0.5) / 10, and the
    model trains on score / 5. Scores 0, 0.05 | 0.15 | 2.5 | 4.95, 5 fill bins 0, 1, 25, 49."""
    labels = np.array([0.0, 0.05, 0.15, 2.5, 4.95, 5.0], dtype=np.float32)
    centres, weights = bni_buckets(labels, "sts_b", target_scale=5.0)
    assert centres.tolist() == pytest.approx([0.05 / 5, 0.15 / 5, 2.55 / 5, 4.95 / 5])
    assert weights.tolist() == pytest.approx([2 / 6, 1 / 6, 1 / 6, 2 / 6])


def test_loss_module_state_is_plain_tensors():
    labels = np.random.default_rng(0).integers(0, 60, 500).astype(np.float32)
    for variant in ("bmc", "gai", "bni"):
        loss = BalancedMSELoss(variant, 10.0, labels)
        state = loss.state_dict()
        assert "noise_sigma" in state and all(isinstance(v, torch.Tensor) for v in state.values())
        value = loss(torch.zeros(4, 1), torch.ones(4, 1))
        assert torch.isfinite(value)


# ----------------------------------------------------------------------------- config and training


def run_cli(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, fragment", [
    ("method.bmse.variant=bmx", "method.bmse.variant"),
    ("method.conr.temperature=-0.1", "method.conr.temperature"),
    ("method.bmse.init_noise_sigma=0", "init_noise_sigma"),
])
def test_bad_values_exit_2_with_one_line(override, fragment):
    proc = run_cli("-c", "configs/quickstart/bmc.yaml", override, "--print-config")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_noise_scale_trains_in_its_own_group_and_is_logged(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import train as train_cli
    out = tmp_path / "bmc"
    args = ["-c", str(REPO / "configs/quickstart/bmc.yaml"), *TINY, f"data.root={data_root}", f"output_dir={out}",
            "schedule.epochs=1", "logging.log_every_iters=1", "method.bmse.sigma_lr=0.05"]
    assert train_cli.main(args) == 0
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    sigma = last["loss"]["noise_sigma"].item()
    assert sigma != 10.0, "sigma did not move"
    groups = last["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["initial_lr"] == 0.05 and groups[1]["weight_decay"] == 0.0
    scalars = set()
    for path in out.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
    assert "train/noise_sigma" in scalars


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler\.step\(\)` before")
def test_noise_scale_lr_does_not_decay_with_the_network_lr(data_root):
    """The milestones and the plateau decay cut the network's learning rate, never sigma's."""
    from ranksim.config import load_config
    from ranksim.engine.loop import Trainer

    cfg = load_config(REPO / "configs/quickstart/bmc.yaml",
                      [*TINY, f"data.root={data_root}", "schedule.milestones=[1,2]", "schedule.plateau_lr_factor=0.5",
                       "optim.lr=1e-3", "method.bmse.sigma_lr=0.02"])
    trainer = Trainer(cfg, None, torch.device("cpu"))
    network, sigma = trainer.optimizer.param_groups
    assert sigma["params"] == [trainer.bmse.noise_sigma]
    for epoch in range(3):
        trainer.scheduler.step()
        trainer.plateau.step(1.0 + epoch)  # worse every time: a plateau decay each step
    assert network["lr"] == pytest.approx(1e-3 * 0.1 ** 2 * 0.5 ** 2)  # two milestones, two plateau cuts
    assert sigma["lr"] == 0.02
    # The same after a resume: the restored schedulers still leave sigma alone.
    state = {"optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
             "plateau": trainer.plateau.state_dict()}
    again = Trainer(cfg, None, torch.device("cpu"))
    again.optimizer.load_state_dict(state["optimizer"])
    again.scheduler.load_state_dict(state["scheduler"])
    again.plateau.load_state_dict(state["plateau"])
    again.scheduler.step()
    again.plateau.step(10.0)
    assert again.optimizer.param_groups[1]["lr"] == 0.02
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1 ** 2 * 0.5 ** 3)
