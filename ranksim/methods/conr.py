"""ConR: the contrastive regularizer for deep imbalanced regression (SPEC 9.2).

Paper: Keramati, Meng, Evans, "ConR: Contrastive Regularizer for Deep Imbalanced Regression",
ICLR 2024 (arXiv 2309.06651).

:func:`conr_loss` ``(features (N, D), targets (N,) or (N, 1), preds (N,) or (N, 1), weights (N,)
or (N, 1) or None)`` returns a scalar. ``N`` is ``2B``: the two augmented views of a batch. With
``q = normalise(features)``, ``s_ij = q_i . q_j / t``, label distances ``L_ij = |y_i - y_j|`` and
prediction distances ``P_ij = |p_i - p_j|``:

- positives of anchor ``i``: ``L_ij <= w`` and ``j != i``;
- negatives: ``L_ij > w`` and ``P_ij <= w`` (a different label that the model predicts as close);
- pushing weights ``rho_ij = omega_i exp(e L_ij)`` with ``omega`` the sample weights;
- ``l_i = mean over positives j of -log(exp(s_ij) / D_i)`` with
  ``D_i = sum_{k pos} exp(s_ik) + sum_{k neg} rho_ik exp(s_ik)``;
- ``loss = mean_i(omega_i l_i)`` over all ``N`` anchors, where an anchor with no negative, or with
  no positive (0/0 in the authors' code), contributes 0.

``faithful=True`` reproduces the authors' denominator: their positive sum runs over every ``k``
with ``s_ik`` zeroed where ``k`` is not a positive, so each non-positive column (the anchor itself
included) adds ``exp(0) = 1`` to ``D_i``. ``faithful=False`` sums over the positives only.

Gradients flow only through ``features``: the predictions choose the negatives and are detached;
labels and weights are constants. The whole batch is one ``(N, N)`` computation in log space
(``logsumexp``), with no loop over anchors; the features are used in float32 or float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ranksim.methods.losses import as_batch_vector


def _column(name: str, tensor: torch.Tensor, n: int) -> torch.Tensor:
    return as_batch_vector(name, tensor, n, f" (features have {n} rows)")


def conr_loss(features: torch.Tensor, targets: torch.Tensor, preds: torch.Tensor,
              weights: torch.Tensor | None = None, threshold: float = 1.0, temperature: float = 0.07,
              push: float = 0.01, faithful: bool = False) -> torch.Tensor:
    """ConR of ``N`` samples (see the module docstring); ``features`` ``(N, D)``, a scalar out.

    Keramati, Meng, Evans, ICLR 2024 (arXiv 2309.06651). ``targets``, ``preds`` ``(N,)`` or
    ``(N, 1)``, ``weights`` ``None`` or ``(N,)``; the authors' AgeDB-DIR settings are the defaults
    (``threshold=1, temperature=0.07, push=0.01``), with loss weight 4.
    """
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"features must have shape (N, D) with N >= 1, got {tuple(features.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    n = features.shape[0]
    x = features if features.dtype == torch.float64 else features.float()
    y = _column("targets", targets, n).to(x.dtype)
    p = _column("preds", preds, n).detach().to(x.dtype)
    omega = torch.ones(n, dtype=x.dtype, device=x.device) if weights is None \
        else _column("weights", weights, n).to(x.dtype)

    q = F.normalize(x, dim=1)
    sim = q @ q.T / temperature                                           # (N, N)
    label_dist = (y[:, None] - y[None, :]).abs()
    close_label = label_dist <= threshold
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    pos = close_label & ~eye
    neg = ~close_label & ((p[:, None] - p[None, :]).abs() <= threshold)
    n_pos = pos.sum(dim=1)
    valid = (n_pos > 0) & neg.any(dim=1)

    # log D_i as one logsumexp: positives enter with s_ik, negatives with s_ik + log rho_ik.
    log_rho = torch.log(omega)[:, None] + push * label_dist
    terms = torch.where(pos, sim, torch.where(neg, sim + log_rho, torch.full_like(sim, -torch.inf)))
    if faithful:  # every non-positive column adds exp(0) = 1
        extra = torch.log((n - n_pos).to(x.dtype))[:, None]
        terms = torch.cat([terms, extra], dim=1)
    terms = torch.where(valid[:, None], terms, torch.zeros_like(terms))  # rows zeroed below; keeps grads finite
    log_denom = torch.logsumexp(terms, dim=1)
    mean_pos_sim = (sim * pos).sum(dim=1) / n_pos.clamp(min=1)
    per_anchor = torch.where(valid, log_denom - mean_pos_sim, torch.zeros_like(log_denom))
    return (omega * per_anchor).mean()


def gathered_conr_loss(features: torch.Tensor, targets: torch.Tensor, preds: torch.Tensor,
                       weights: torch.Tensor | None = None, **settings) -> torch.Tensor:
    """ConR on the views of all DDP processes, with gradients through this process's features.

    ConR contrasts each anchor with every view of the batch, so on each process's share alone it
    would change with the number of processes; the authors train on the whole batch. Features,
    (detached) predictions, targets and weights of all processes are concatenated in rank order;
    the loss does not depend on the order of the views, so every process gets the value of
    :func:`conr_loss` on the whole batch. DDP averages parameter gradients over the N processes,
    so the caller multiplies the loss by N before ``backward`` (``ranksim.engine.loop`` does). Without a
    process group this is :func:`conr_loss`. ``settings`` are :func:`conr_loss`'s keywords.
    """
    from ranksim.distributed import gather_with_local_grad

    n = features.shape[0]
    all_features, _ = gather_with_local_grad(features)
    all_targets, _ = gather_with_local_grad(_column("targets", targets, n))
    all_preds, _ = gather_with_local_grad(_column("preds", preds, n).detach())
    all_weights = None if weights is None else gather_with_local_grad(_column("weights", weights, n))[0]
    return conr_loss(all_features, all_targets, all_preds, all_weights, **settings)
