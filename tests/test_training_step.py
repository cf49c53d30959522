"""One real training step per loss composition: every configured term reaches the backward pass.

For each composition a Trainer is built from a quick-start config (the path train.py takes), given
one tiny batch with distinct labels (so RankSim draws nothing at random), and run for one step of
``train_epoch``. The gradient it leaves on every parameter is compared, to float precision, with
the gradient of a loss written out in this file from its parts, each with its weight:

    mean_i(w_i * l_i)  +  gamma * RankSim_lambda(features the config routes to RankSim)
                       +  beta * ConR(two extra views)

- ``w_i`` is worked out here from the training labels (square root of the per-age counts, LDS by
  a loop with zero padding, ``1 / density``, scaled to mean 1 over the training set); the weighted
  mean divides by the batch size (SPEC 3: ``mean(w * l)``, weights normalised over the training set).
- ``l_i`` is L1, Focal-R or BMC written out by hand; FDS's calibration is written out by hand from
  the module's last-epoch buffers, and the regressor and RankSim are fed the features SPEC 4 says.
- The RankSim and ConR kernels are the library's (each is checked against a slow loop in its own
  test file); what is checked here is what they are given and with which weight.

Each test also checks that every term moves the gradient by far more than the tolerance, so that
dropping a term, its weight or the sample weights cannot pass unnoticed.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ranksim.config import load_config
from ranksim.methods.conr import conr_loss
from ranksim.engine.loop import Trainer
from ranksim.methods.lds import get_lds_kernel_window
from ranksim.methods.regularizer import batchwise_ranking_regularizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from tiny import TINY  # noqa: E402

BATCH = 8
# Non-default values throughout, so that a setting that is not passed on shows.
GAMMA, LAMBDA = 7.5, 0.7
FOCAL_BETA, FOCAL_GAMMA = 0.3, 2.0
# A warm temperature, so that the faithful denominator's extra ones are visible next to exp(s / t).
CONR = dict(weight=2.5, threshold=1.0, temperature=0.5, push=0.05)
RANKSIM = ["method.ranksim.enabled=true", f"method.ranksim.gamma={GAMMA}",
           f"method.ranksim.interpolation_lambda={LAMBDA}"]
SQINV_LDS = ["method.reweight=sqrt_inv", "method.lds.enabled=true", "method.lds.ks=5", "method.lds.sigma=2.0"]
FDS = ["method.fds.enabled=true", "method.fds.clip_min=0.5", "method.fds.clip_max=1.5"]
FOCAL = ["method.loss=focal_l1", f"method.focal_beta={FOCAL_BETA}", f"method.focal_gamma={FOCAL_GAMMA}"]
CONR_ON = ["method.conr.enabled=true", *(f"method.conr.{k}={v}" for k, v in CONR.items())]
BMC = ["method.loss=bmse", "method.bmse.variant=bmc", "method.bmse.init_noise_sigma=3.0"]

# name -> (overrides, the terms the hand-built loss must have)
COMPOSITIONS = {
    "plain": ([], {"task"}),
    "sqinv_lds": (SQINV_LDS, {"task", "weights"}),
    "focal": (FOCAL, {"task"}),
    "ranksim": (RANKSIM, {"task", "ranksim"}),
    "fds_faithful_ranksim": ([*FDS, "method.faithful=true", *RANKSIM], {"task", "fds", "ranksim"}),
    "fds_fixed_ranksim": ([*FDS, "method.faithful=false", *RANKSIM], {"task", "fds", "ranksim"}),
    "conr": (CONR_ON, {"task", "conr"}),
    "conr_faithful": ([*CONR_ON, "method.faithful=true"], {"task", "conr", "faithful_conr"}),
    "bmc": (BMC, {"task", "sigma"}),
    "all_bmc_faithful": ([*BMC, *SQINV_LDS, *FDS, "method.faithful=true", *RANKSIM, *CONR_ON],
                         {"task", "weights", "fds", "ranksim", "conr", "sigma"}),
    "all_focal_fixed": ([*FOCAL, *SQINV_LDS, *FDS, "method.faithful=false", *RANKSIM, *CONR_ON],
                        {"task", "weights", "fds", "ranksim", "conr"}),
}


def build_trainer(data_root: Path, overrides: list[str]) -> Trainer:
    cfg = load_config(REPO / "configs/quickstart/vanilla.yaml", [*TINY, f"data.root={data_root}", *overrides])
    return Trainer(cfg, None, torch.device("cpu"))


def distinct_label_batch(trainer: Trainer):
    """The first BATCH samples of distinct labels from the trainer's first training batch."""
    inputs, targets, weights = next(iter(trainer.train_loader))
    labels = targets.reshape(-1).tolist()
    keep = [i for i, y in enumerate(labels) if y not in labels[:i]][:BATCH]
    assert len(keep) == BATCH, "the tiny batch has too few distinct labels"
    pick = torch.tensor(keep)
    if isinstance(inputs, (list, tuple)):
        inputs = type(inputs)(x[pick] for x in inputs)
    else:
        inputs = inputs[pick]
    return inputs, targets[pick], weights[pick]


def expected_weights(train_labels: np.ndarray, labels: torch.Tensor, lds: bool, max_target: int = 121) -> torch.Tensor:
    """SPEC 3 by hand: sqrt of the per-age counts, LDS by a loop with zero padding, 1 / density,
    scaled so that the mean over the training set is 1; the weights of ``labels``."""
    ages = np.minimum(np.asarray(train_labels).reshape(-1).astype(int), max_target - 1)
    counts = np.zeros(max_target)
    for age in ages:
        counts[age] += 1
    density = np.sqrt(counts)
    if lds:
        window = get_lds_kernel_window("gaussian", 5, 2.0)
        smoothed = np.zeros(max_target)
        for b in range(max_target):
            for k, w in enumerate(window):
                source = b + k - 2
                if 0 <= source < max_target:
                    smoothed[b] += w * density[source]
        density = smoothed
    scale = len(ages) / np.sum(1.0 / density[ages])
    batch_ages = np.minimum(labels.reshape(-1).numpy().astype(int), max_target - 1)
    return torch.tensor(scale / density[batch_ages], dtype=torch.float32)


def hand_fds(z: torch.Tensor, labels: torch.Tensor, fds) -> torch.Tensor:
    """SPEC 4's calibration written out: z' = (z - mu_b) * sqrt(clip(var_s_b / var_b)) + mu_s_b."""
    buckets = labels.reshape(-1).long().clamp(fds.bucket_start, fds.bucket_num - 1) - fds.bucket_start
    mu, var = fds.running_mean_last_epoch[buckets], fds.running_var_last_epoch[buckets]
    mu_s, var_s = fds.smoothed_mean_last_epoch[buckets], fds.smoothed_var_last_epoch[buckets]
    ratio = (var_s / var).clamp(fds.clip_min, fds.clip_max)
    return (z - mu) * ratio.sqrt() + mu_s


def hand_terms(cfg, model, sigma, batch, weights, epoch: int) -> dict:
    """The loss terms of one step, each already multiplied by its weight from the config."""
    m = cfg.method
    inputs, targets, _ = batch
    views = None
    if m.conr.enabled:
        inputs, views = inputs
    z = model.encoder(inputs)
    smoothed = hand_fds(z, targets, model.fds) if m.fds.enabled else z
    pred = model.head.linear(smoothed).reshape(-1)
    y = targets.reshape(-1)
    err = pred - y
    if m.loss == "l1":
        per_sample = err.abs()
    elif m.loss == "focal_l1":
        per_sample = err.abs() * (2 * torch.sigmoid(FOCAL_BETA * err.abs()) - 1) ** FOCAL_GAMMA
    else:  # BMC: cross-entropy of -(p_i - y_j)^2 / (2 nv) with class i, times 2 nv (detached)
        nv = sigma ** 2
        logits = -(pred[:, None] - y[None, :]) ** 2 / (2 * nv)
        per_sample = -torch.log_softmax(logits, dim=1).diagonal() * (2 * nv).detach()
    terms = {"task": (weights * per_sample).sum() / len(y)}
    if m.ranksim.enabled:
        seen = smoothed if m.faithful else z
        terms["ranksim"] = GAMMA * batchwise_ranking_regularizer(seen, targets, LAMBDA)
    if m.conr.enabled:
        both = torch.cat([views[:, 0], views[:, 1]])
        view_pred, view_z = model(both)
        terms["conr"] = CONR["weight"] * conr_loss(
            view_z, torch.cat([targets, targets]), view_pred.detach(), torch.cat([weights, weights]),
            CONR["threshold"], CONR["temperature"], CONR["push"], faithful=m.faithful)
    return terms


def give_fds_statistics(trainer: Trainer) -> None:
    """Random running statistics, made the last-epoch ones, so that epoch 1 calibrates visibly;
    the variances spread over two decades so that both ends of the clip are reached."""
    fds = trainer.fds
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        fds.running_mean.copy_(0.3 * torch.randn(fds.running_mean.shape, generator=g))
        fds.running_var.copy_(10 ** (2 * torch.rand(fds.running_var.shape, generator=g) - 2))
    assert fds.update_last_epoch_stats(1)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_one_training_step_backpropagates_each_configured_term(data_root, name):
    overrides, expected_terms = COMPOSITIONS[name]
    trainer = build_trainer(data_root, overrides)
    cfg, epoch = trainer.cfg, 0
    if cfg.method.fds.enabled:
        give_fds_statistics(trainer)
        epoch = 1
    batch = distinct_label_batch(trainer)
    weights = expected_weights(trainer.data.train_labels, batch[1], cfg.method.lds.enabled) \
        if cfg.method.reweight == "sqrt_inv" else torch.ones(BATCH)
    torch.testing.assert_close(batch[2].reshape(-1), weights, rtol=1e-5, atol=0)

    reference = copy.deepcopy(trainer.module)  # the parameters before the step
    sigma = None
    if trainer.bmse is not None:
        sigma = trainer.bmse.noise_sigma.detach().clone().requires_grad_(True)
    trainer.train_loader = [batch]
    trainer.train_epoch(epoch)
    names = [n for n, p in trainer.module.named_parameters() if p.requires_grad]
    got = [dict(trainer.module.named_parameters())[n].grad for n in names]
    if sigma is not None:
        names.append("noise_sigma")
        got.append(trainer.bmse.noise_sigma.grad)
    assert all(g is not None for g in got), [n for n, g in zip(names, got) if g is None]

    reference.train()
    params = [dict(reference.named_parameters())[n] for n in names if n != "noise_sigma"]
    params += [sigma] if sigma is not None else []
    terms = hand_terms(cfg, reference, sigma, batch, weights, epoch)

    def gradient(loss):
        return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    per_term = {k: [torch.zeros_like(p) if g is None else g for p, g in zip(params, gradient(v))]
                for k, v in terms.items()}
    want = [sum(gs) for gs in zip(*per_term.values())]
    # Float32 rounding: the two computations differ by about 1e-6 of the largest gradient.
    tolerance = 1e-5 * max(float(w.abs().max()) for w in want)
    for n, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=tolerance, msg=lambda msg: f"{name}, {n}: {msg}")

    # Every term, and each thing that shapes one, must move the gradient far beyond the tolerance.
    def flat(grads):
        return torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1) for p, g in zip(params, grads)])

    def far(a, b):
        return bool((a - b).abs().max() > 10 * tolerance)

    for term, grads in per_term.items():
        assert far(flat(grads), 0), f"{name}: the {term} term leaves no visible gradient"
    shown = set(terms)
    if "weights" in expected_terms:
        unweighted = hand_terms(cfg, reference, sigma, batch, torch.ones(BATCH), epoch)["task"]
        assert far(flat(gradient(unweighted)), flat(per_term["task"])), "the sample weights are invisible"
        shown.add("weights")
    if "fds" in expected_terms:
        changed = copy.deepcopy(cfg)
        changed.method.fds.enabled = False
        assert far(flat(gradient(hand_terms(changed, reference, sigma, batch, weights, epoch)["task"])),
                   flat(per_term["task"])), "FDS's calibration is invisible"
        if "ranksim" in terms:  # RankSim on the other features (the routing) must show too
            changed = copy.deepcopy(cfg)
            changed.method.faithful = not cfg.method.faithful
            other = hand_terms(changed, reference, sigma, batch, weights, epoch)["ranksim"]
            assert far(flat(gradient(other)), flat(per_term["ranksim"])), "the feature routing is invisible"
        shown.add("fds")
    if "faithful_conr" in expected_terms:  # the authors' denominator must show against the fixed one
        changed = copy.deepcopy(cfg)
        changed.method.faithful = not cfg.method.faithful
        other = hand_terms(changed, reference, sigma, batch, weights, epoch)["conr"]
        assert far(flat(gradient(other)), flat(per_term["conr"])), "ConR's faithful denominator is invisible"
        shown.add("faithful_conr")
    if sigma is not None:
        assert got[-1].abs() > 0, "noise sigma gets no gradient"
        shown.add("sigma")
    assert shown == expected_terms
