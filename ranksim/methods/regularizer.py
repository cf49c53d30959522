"""RankSim: the batch-wise ranking similarity regularizer (SPEC 2.3).

Paper: Gong, Mori, Tung, "RankSim: Ranking Similarity Regularization for Deep Imbalanced
Regression", ICML 2022 (arXiv 2205.15236).

:func:`batchwise_ranking_regularizer` ``(features (B, ...), targets (B,) or (B, 1), lambda)``
returns a scalar: for the de-duplicated batch of ``m`` samples (one per distinct target),

    loss = sum_i mean_j (rank_normalised(S_i)_j - rank_normalised(T_i)_j) ** 2

with ``S = x_hat x_hat^T`` the cosine similarity of the flattened features and
``T_ij = -|y_i - y_j|``. Feature ranks go through the blackbox ranker
(:class:`ranksim.methods.ranking.TrueRanker`); label ranks are constants. The training loss is
``task_loss + gamma * loss``.

All rows are ranked in one batched sort, with no Python loop over rows or labels, and the result
equals the per-row loop of the authors' definition (the row sum of per-row MSEs), value and
gradient, whenever the label ranks have no ties.

Decisions where the SPEC leaves room:

- De-duplication draws one ``torch.randperm`` (from ``generator`` if given) and keeps, for each
  distinct target, its first sample in that order; the kept samples come sorted by target. A
  batch whose targets are all distinct is used as it is and draws nothing.
- Equal label distances (``y_i - a`` and ``y_i + a``, common with integer ages) are ranked with
  the smaller label first; the authors' ``argsort(argsort(.))`` leaves them to an unstable sort.
- Targets are compared in float64 (float32 on MPS); features in bf16/fp16 are ranked in float32.
- The cosine similarity has a hand-written backward (:class:`CosineSimilarity`): the same
  gradient as autograd through ``F.normalize`` and ``x_hat @ x_hat.T`` with one matmul fewer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ranksim.methods import ranking
from ranksim.methods.ranking import TrueRanker, scatter_positions


def _check_inputs(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Validate shapes and return the targets as a ``(B,)`` tensor."""
    if features.dim() < 1 or features.shape[0] == 0:
        raise ValueError(f"features must be (B, ...) with B >= 1, got shape {tuple(features.shape)}")
    batch = features.shape[0]
    if not (targets.dim() == 1 or (targets.dim() == 2 and targets.shape[1] == 1)) \
            or targets.shape[0] != batch:
        raise ValueError(f"targets must have shape ({batch},) or ({batch}, 1) to match features of "
                         f"shape {tuple(features.shape)}, got {tuple(targets.shape)}")
    return targets.reshape(batch)


# F.normalize's default: rows with a smaller norm are divided by this instead.
_NORM_EPS = 1e-12


class CosineSimilarity(torch.autograd.Function):
    """``S = x_hat x_hat^T`` with ``x_hat = F.normalize(x, dim=1)``, for ``x`` of shape ``(m, d)``.

    The same value and gradient as autograd through ``F.normalize`` and ``x_hat @ x_hat.T``, with
    less work: ``S`` is symmetric, so the backward needs one matmul, ``A = (dS + dS^T) x_hat``
    (autograd would do one per operand, a third of the regularizer's time), and the normalisation
    backward is the closed form ``(A - x_hat * rowsum(A * x_hat)) / ||x||`` in three passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        scaled = norm > _NORM_EPS  # rows whose norm is not clamped get the projection term
        norm = norm.clamp_min(_NORM_EPS)
        x_hat = x / norm
        ctx.save_for_backward(x_hat, norm, scaled)
        return x_hat @ x_hat.T

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x_hat, norm, scaled = ctx.saved_tensors
        a = (grad + grad.T) @ x_hat
        along = (a * x_hat).sum(dim=1, keepdim=True).mul_(scaled)
        return torch.addcmul(a, x_hat, along, value=-1).div_(norm)


def _one_per_group(group: torch.Tensor, num_groups: int, generator: torch.Generator | None) -> torch.Tensor:
    """Index of one uniformly chosen sample per group, ordered by group id.

    A uniform random permutation makes every sample of a group equally likely to come first, so
    the first occurrence of each group in permuted order is a uniform choice within the group;
    ``scatter_reduce(amin)`` over the permuted positions finds it without a loop over groups.
    """
    batch = group.shape[0]
    perm_device = generator.device if generator is not None else group.device
    perm = torch.randperm(batch, generator=generator, device=perm_device).to(group.device)
    position = torch.empty_like(perm)
    position[perm] = torch.arange(batch, device=group.device)
    first = torch.full((num_groups,), batch, dtype=position.dtype, device=group.device)
    first.scatter_reduce_(0, group, position, reduce="amin")
    return perm[first]


def unique_label_indices(targets: torch.Tensor, generator: torch.Generator | None = None):
    """Indices of one sample per distinct target, chosen uniformly at random (SPEC 2.3, step 1).

    Args:
        targets: ``(B,)`` tensor.
        generator: optional ``torch.Generator`` (on any device) that makes the choice reproducible.

    Returns:
        ``(m,)`` LongTensor of sample indices, one per distinct target, ordered by increasing
        target; ``None`` if every target is already distinct (the batch is then kept as it is and
        no random number is drawn). The authors draw with Python's ``random.choice`` in a loop
        over labels; the RNG differs.
    """
    distinct, group = torch.unique(targets, return_inverse=True)
    if distinct.shape[0] == targets.shape[0]:
        return None
    return _one_per_group(group, distinct.shape[0], generator)


def label_ranks(labels: torch.Tensor, sort_index: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``rank_normalised(-|y_i - y_j|)`` of distinct labels, ``(m, m)``, ties to the smaller label.

    Args:
        labels: ``(m,)`` distinct labels, in batch order.
        sort_index: ``argsort(labels)``, or ``None`` if ``labels`` is already ascending.
        dtype: dtype of the ranks.

    The columns are ranked in ascending-label order, so equal distances on both sides of a label
    go to the smaller label first on every path. In that column order each row of ``|y_i - y_j|``
    falls then rises: two sorted runs, which a stable (tim)sort merges in linear time. On CPU
    this numpy sort is far cheaper than a general one; other devices use ``torch.sort``.
    """
    m = labels.shape[0]
    by_label = labels if sort_index is None else labels[sort_index]
    distance = (labels[:, None] - by_label[None, :]).abs_()  # columns in ascending-label order
    if ranking.uses_numpy_sort(labels):
        order_np = np.argsort(distance.numpy(), axis=1, kind="stable")
        if sort_index is not None:
            order_np = sort_index.numpy()[order_np]  # ascending-label position -> batch column
        order = torch.from_numpy(order_np)
    else:
        order = torch.sort(distance, dim=1, stable=True).indices
        if sort_index is not None:
            order = sort_index[order]  # ascending-label position -> batch column
    return scatter_positions(order, dtype)


def batchwise_ranking_regularizer(features: torch.Tensor, targets: torch.Tensor,
                                  interpolation_lambda: float,
                                  generator: torch.Generator | None = None,
                                  center_features: bool = False) -> torch.Tensor:
    """The RankSim regularizer of one batch (see the module docstring).

    Gong, Mori, Tung, "RankSim: Ranking Similarity Regularization for Deep Imbalanced
    Regression", ICML 2022 (arXiv 2205.15236). The training loss is
    ``task_loss + gamma * batchwise_ranking_regularizer(features, targets, lam)``; the paper uses
    ``gamma = 100, lam = 2`` on AgeDB-DIR and IMDB-WIKI-DIR, ``gamma = 3e-4, lam = 2`` on STS-B-DIR.

    Args:
        features: ``(B, ...)`` encoder features, any trailing shape (flattened per sample), any
            float dtype and device. bf16/fp16 features are ranked in float32.
        targets: ``(B,)`` or ``(B, 1)`` regression targets.
        interpolation_lambda: the blackbox interpolation strength ``lambda > 0`` (paper: 2).
        generator: optional ``torch.Generator`` for the de-duplication draw (reproducible runs).
        center_features: not in the paper, off by default: subtract the mean feature of the whole
            batch (before de-duplication) first, so that the similarities compare how samples
            differ rather than a component they all share (see docs/ranksim_features.md).

    Returns:
        Scalar tensor (float32, or float64 for float64 features): the sum over the ``m`` rows of the
        per-row mean squared rank difference, so it lies in ``[0, m)``. 0 for a single sample.
    """
    y = _check_inputs(features, targets).detach()
    if center_features:
        features = features.flatten(1)
        features = features - features.mean(dim=0, keepdim=True)
    # Label differences in float64 (where the device has it), so that distinct distances stay
    # distinct for any integer or float targets.
    y = y.to(torch.float32 if y.device.type == "mps" else torch.float64)
    distinct, group = torch.unique(y, return_inverse=True)
    m = distinct.shape[0]
    if m < y.shape[0]:
        features = features[_one_per_group(group, m, generator)]
        labels, sort_index = distinct, None  # the kept samples come in label order
    else:
        labels, sort_index = y, torch.empty_like(group).scatter_(
            0, group, torch.arange(m, device=group.device))  # inverse of "position in label order"

    x = features.reshape(m, -1)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    similarity = CosineSimilarity.apply(x)
    feature_ranks = TrueRanker.apply(similarity, interpolation_lambda)

    with torch.no_grad():  # label ranks are constants
        target_ranks = label_ranks(labels, sort_index, feature_ranks.dtype).to(feature_ranks.device)

    return F.mse_loss(feature_ranks, target_ranks, reduction="sum") / m


def gathered_ranking_regularizer(features: torch.Tensor, targets: torch.Tensor, interpolation_lambda: float,
                                 generator: torch.Generator | None = None, center_features: bool = False) -> torch.Tensor:
    """RankSim on the batch of all DDP processes, with gradients through this process's features.

    Every process gets the value of :func:`batchwise_ranking_regularizer` on the concatenation
    of all processes' batches (in rank order), provided ``generator`` is seeded alike on every
    process so that de-duplication keeps the same samples. Gradients flow only to the local
    ``features``: ``d loss / d features`` is the slice of the single-process gradient. DDP
    *averages* parameter gradients over the N processes, so a caller that wants the gradient of
    the global regularizer multiplies the loss by N before ``backward`` (``ranksim.engine.loop`` does).
    Without a process group this is :func:`batchwise_ranking_regularizer`.
    """
    from ranksim.distributed import gather_with_local_grad

    batch = features.shape[0]
    targets = _check_inputs(features, targets)
    all_features, _ = gather_with_local_grad(features.reshape(batch, -1))
    all_targets, _ = gather_with_local_grad(targets)
    return batchwise_ranking_regularizer(all_features, all_targets, interpolation_lambda, generator=generator,
                                         center_features=center_features)
