"""Balanced MSE in its three forms: BMC, GAI and BNI (SPEC 9.1).

Paper: Ren, Zhang, Yu, Liu, "Balanced MSE for Imbalanced Visual Regression", CVPR 2022
(arXiv 2203.16427). The loss is the negative log-likelihood of the target under the prediction
with a learnable Gaussian noise ``nv = sigma ** 2``, corrected by the training label density:

- **BMC** (batch Monte-Carlo), :func:`bmc_loss`: ``logits_ij = -(p_i - y_j) ** 2 / (2 nv)`` over
  the batch ``(B, B)``; the loss of row ``i`` is the cross-entropy with target class ``i``.
- **GAI** (GMM analytic integration), :func:`gai_loss`: the training labels' density is a 1-D
  Gaussian mixture ``(pi_k, mu_k, v_k)``; per sample
  ``(p - y) ** 2 / (2 nv) + log(nv) / 2 + logsumexp_k[log pi_k - log(v_k + nv) / 2 - (p - mu_k) ** 2 / (2 (v_k + nv))]``.
- **BNI** (bin numerical integration), :func:`bni_loss`: bucket centres ``c_b`` with normalised
  training frequencies ``w_b > 0``; per sample
  ``(p - y) ** 2 / (2 nv) + logsumexp_b[log w_b - (p - c_b) ** 2 / (2 nv)]``.

Every variant multiplies its loss by ``(2 nv).detach()``, so that it has the scale of an MSE and
the learning rate of the network need not change with ``sigma``.

Inputs: ``pred`` and ``target`` ``(B,)`` or ``(B, 1)`` on the training target scale (STS-B trains
on ``score / 5``); ``noise_var`` a scalar tensor; ``weights`` ``None`` or ``(B,)``/``(B, 1)``.
Output: a scalar tensor.

Decisions where the SPEC leaves room:

- **Sample weights.** The authors' Balanced MSE ignores the re-weighting weights. Here the
  per-sample losses are averaged with them (``mean(w * l_i)``), so that Balanced MSE combines with
  re-weighting/LDS like every other loss; with ``reweight: none`` the weights are ones and the
  result is the authors' loss.
- **The GMM fit** (:func:`fit_gmm_1d`) is a small EM in numpy rather than scikit-learn's
  ``GaussianMixture`` (which the authors use): the repository does not depend on scikit-learn,
  the problem is one-dimensional with ``K = 8`` components, and 40 lines of EM are easy to check.
  The initialisation is deterministic (means at the label quantiles), so the fit is the same on
  every run and process without a seed to carry; it is done once per run, at start-up, on the
  training labels on the training target scale.
- **BNI buckets**: age uses the integer labels ``0..max_target-1`` with ``max_target = 200``, the
  authors' IMDB-WIKI-DIR setting: its training ages run past 120, and each keeps its own bucket
  (lumping them into one, as LDS's 121 buckets do, changes the loss). A label of ``max_target``
  or more is left out of the histogram, as in the authors' code. AgeDB-DIR's ages (at most 101)
  give the same buckets with any ``max_target`` above them. STS-B uses the centres of its 50 bins,
  on the training scale. The frequencies are the raw training counts, LDS-smoothed (with the LDS window of
  ``method.lds``) when LDS is on.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import convolve1d
from torch import nn

from ranksim.methods.binning import STS_B_NUM_BINS, label_bins
from ranksim.methods.lds import get_lds_kernel_window
from ranksim.methods.losses import as_batch_vector

logger = logging.getLogger(__name__)

VARIANTS = ("bmc", "gai", "bni")


def _inputs(pred, target, weights):
    p = as_batch_vector("pred", pred)
    y = as_batch_vector("target", target, p.shape[0]).to(p.dtype)
    w = None if weights is None else as_batch_vector("weights", weights, p.shape[0]).to(p.dtype)
    return p, y, w


def _reduce(per_sample: torch.Tensor, weights: torch.Tensor | None, noise_var: torch.Tensor) -> torch.Tensor:
    loss = per_sample.mean() if weights is None else (weights * per_sample).mean()
    return loss * (2 * noise_var).detach()


def bmc_loss(pred, target, noise_var, weights=None) -> torch.Tensor:
    """BMC: cross-entropy of ``-(p_i - y_j)^2 / (2 nv)`` over the batch with class ``i`` for row ``i``.

    Balanced MSE (Ren et al., CVPR 2022, arXiv 2203.16427). ``pred``, ``target`` ``(B,)`` or
    ``(B, 1)``, ``noise_var`` a scalar tensor (``sigma ** 2``), ``weights`` ``None`` or ``(B,)``; a
    scalar out.
    """
    p, y, w = _inputs(pred, target, weights)
    logits = -(p[:, None] - y[None, :]) ** 2 / (2 * noise_var)
    per_sample = F.cross_entropy(logits, torch.arange(p.shape[0], device=p.device), reduction="none")
    return _reduce(per_sample, w, noise_var)


def gathered_bmc_loss(pred, target, noise_var, weights=None) -> torch.Tensor:
    """BMC on the batch of all DDP processes, with gradients through this process's predictions.

    BMC contrasts each prediction with every target of the batch, so on each process's share
    alone it would change with the number of processes; the authors train on the whole batch
    (one GPU or DataParallel). Every process gets the value of :func:`bmc_loss` on the
    concatenation of all processes' batches, in rank order. As with gathered RankSim, DDP averages
    parameter gradients over the N processes, so the caller multiplies the loss by N before
    ``backward`` (``ranksim.engine.loop`` does; sigma's gradient, outside DDP, is then averaged and
    divided by N). Without a process group this is :func:`bmc_loss`.
    """
    from ranksim.distributed import gather_with_local_grad

    p, y, w = _inputs(pred, target, weights)
    all_p, _ = gather_with_local_grad(p)
    all_y, _ = gather_with_local_grad(y)
    all_w = None if w is None else gather_with_local_grad(w)[0]
    return bmc_loss(all_p, all_y, noise_var, all_w)


def gai_loss(pred, target, noise_var, gmm_weights, gmm_means, gmm_vars, weights=None) -> torch.Tensor:
    """GAI with a ``K``-component mixture ``gmm_weights, gmm_means, gmm_vars`` (each ``(K,)``)."""
    p, y, w = _inputs(pred, target, weights)
    total_var = gmm_vars.to(p.dtype) + noise_var                         # (K,)
    log_terms = (torch.log(gmm_weights.to(p.dtype)) - 0.5 * torch.log(total_var)
                 - (p[:, None] - gmm_means.to(p.dtype)) ** 2 / (2 * total_var))  # (B, K)
    per_sample = ((p - y) ** 2 / (2 * noise_var) + 0.5 * torch.log(noise_var)
                  + torch.logsumexp(log_terms, dim=1))
    return _reduce(per_sample, w, noise_var)


def bni_loss(pred, target, noise_var, centres, bucket_weights, weights=None) -> torch.Tensor:
    """BNI with bucket ``centres`` and normalised frequencies ``bucket_weights`` (each ``(M,)``, > 0)."""
    p, y, w = _inputs(pred, target, weights)
    log_terms = (torch.log(bucket_weights.to(p.dtype))
                 - (p[:, None] - centres.to(p.dtype)) ** 2 / (2 * noise_var))  # (B, M)
    per_sample = (p - y) ** 2 / (2 * noise_var) + torch.logsumexp(log_terms, dim=1)
    return _reduce(per_sample, w, noise_var)


# ---------------------------------------------------------------------------------------------
# Label-density models, fitted once per run


def fit_gmm_1d(values, k: int = 8, iters: int = 500, tol: float = 1e-8,
               reg_var: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-likelihood 1-D Gaussian mixture by EM: ``(weights, means, variances)``, each ``(k,)``.

    Deterministic: means start at the ``(j + 0.5) / k`` quantiles of ``values``, variances at the
    overall variance over ``k ** 2``, weights uniform. ``reg_var`` is added to every variance (as
    scikit-learn's ``reg_covar``) so that a component on one repeated integer label stays finite.
    Stops when the mean log-likelihood improves by less than ``tol``.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < k:
        raise ValueError(f"a {k}-component GMM needs at least {k} labels, got {x.size}")
    means = np.quantile(x, (np.arange(k) + 0.5) / k)
    variances = np.full(k, max(x.var(), reg_var) / k ** 2 + reg_var)
    weights = np.full(k, 1.0 / k)
    previous = -np.inf
    for _ in range(iters):
        # E step: responsibilities (N, k) in log space.
        log_p = (np.log(weights) - 0.5 * np.log(2 * np.pi * variances)
                 - (x[:, None] - means) ** 2 / (2 * variances))
        log_norm = np.logaddexp.reduce(log_p, axis=1)
        resp = np.exp(log_p - log_norm[:, None])
        # M step.
        counts = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        weights = counts / x.size
        means = resp.T @ x / counts
        variances = (resp * (x[:, None] - means) ** 2).sum(axis=0) / counts + reg_var
        likelihood = log_norm.mean()
        if likelihood - previous < tol:
            break
        previous = likelihood
    return weights, means, variances


def bni_buckets(train_labels, binning: str, target_scale: float = 1.0, lds: bool = False,
                lds_kernel: str = "gaussian", lds_ks: int = 5, lds_sigma: float = 2.0,
                max_target: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(centres, weights)`` of the BNI buckets that hold training mass, on the training scale.

    Counts per bucket (age: integer label ``0..max_target-1``, labels from ``max_target`` up left
    out; STS-B: the 50 bins), LDS-smoothed with the max-normalised LDS window when ``lds``; buckets
    with zero weight are dropped and the rest normalised to sum 1.
    """
    y = np.asarray(train_labels).reshape(-1)
    if binning == "age":
        bins = label_bins(y, "age")
        bins = bins[bins < max_target]
        centres = np.arange(max_target, dtype=np.float64)
        num = max_target
    else:
        bins = label_bins(y, "sts_b", num_bins=STS_B_NUM_BINS)
        centres = (np.arange(STS_B_NUM_BINS) + 0.5) / 10.0
        num = STS_B_NUM_BINS
    counts = np.bincount(bins, minlength=num).astype(np.float64)
    if lds:
        counts = convolve1d(counts, weights=get_lds_kernel_window(lds_kernel, lds_ks, lds_sigma), mode="constant")
    keep = counts > 0
    return centres[keep] / target_scale, counts[keep] / counts[keep].sum()


class BalancedMSELoss(nn.Module):
    """The loss ``method.loss: bmse``: a callable ``(pred, target, weights=None)`` with state.

    Balanced MSE (Ren, Zhang, Yu, Liu, CVPR 2022, arXiv 2203.16427), ``variant`` ``'bmc'``,
    ``'gai'`` or ``'bni'``. ``pred``, ``target`` ``(B,)`` or ``(B, 1)``, ``weights`` ``None`` or
    ``(B,)``; a scalar out. ``train_labels`` ``(N,)`` (GAI and BNI fit their density to them).

    ``noise_sigma`` is a parameter (the caller puts it in its own optimizer group); GAI's mixture
    and BNI's buckets are buffers. All of it is in :meth:`state_dict` as plain tensors, so a
    checkpoint restores it exactly.
    """

    def __init__(self, variant: str, init_noise_sigma: float, train_labels=None, binning: str = "age",
                 target_scale: float = 1.0, gmm_components: int = 8, lds: dict | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown Balanced MSE variant {variant!r}; valid variants are {list(VARIANTS)}")
        if not init_noise_sigma > 0:
            raise ValueError(f"init_noise_sigma must be > 0, got {init_noise_sigma!r}")
        self.variant = variant
        self.noise_sigma = nn.Parameter(torch.tensor(float(init_noise_sigma)))
        if variant == "gai":
            labels = np.asarray(train_labels, dtype=np.float64).reshape(-1) / target_scale
            weights, means, variances = fit_gmm_1d(labels, gmm_components)
            logger.info("GAI: %d-component GMM of the training labels: means %s", gmm_components,
                        np.array2string(means * target_scale, precision=1))
            for name, value in (("gmm_weights", weights), ("gmm_means", means), ("gmm_vars", variances)):
                self.register_buffer(name, torch.tensor(value, dtype=torch.float32))
        elif variant == "bni":
            lds = lds or {}
            centres, weights = bni_buckets(train_labels, binning, target_scale, **lds)
            self.register_buffer("bucket_centres", torch.tensor(centres, dtype=torch.float32))
            self.register_buffer("bucket_weights", torch.tensor(weights, dtype=torch.float32))

    @property
    def noise_var(self) -> torch.Tensor:
        return self.noise_sigma ** 2

    @property
    def gathers_batch(self) -> bool:
        """Whether the loss is the whole DDP batch's (BMC), so that the caller scales it by N."""
        return self.variant == "bmc"

    def forward(self, pred, target, weights=None) -> torch.Tensor:
        nv = self.noise_var.to(pred.dtype)
        if self.variant == "bmc":
            return gathered_bmc_loss(pred, target, nv, weights)
        if self.variant == "gai":
            return gai_loss(pred, target, nv, self.gmm_weights, self.gmm_means, self.gmm_vars, weights)
        return bni_loss(pred, target, nv, self.bucket_centres, self.bucket_weights, weights)
