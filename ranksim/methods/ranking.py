"""Row-wise ranking and its blackbox-differentiable version (SPEC 2.1, 2.2).

Papers: RankSim (Gong, Mori, Tung, ICML 2022, arXiv 2205.15236) uses the blackbox combinatorial
solver gradient of Vlastelica et al. (ICLR 2020, arXiv 1912.02175) to differentiate ranks.

- :func:`rank_normalised` ``(m, n) -> (m, n)``: ``(rank + 1) / n`` of each element within its row,
  ranks counted from 0 in **descending** order (the largest element of a row gets ``1 / n``).
- :class:`TrueRanker`: ``TrueRanker.apply(s, lam)`` is ``rank_normalised(s)`` forward; backward,
  for an incoming gradient ``g``, it returns ``-(r - rank_normalised(s + lam * g)) / (lam + 1e-8)``
  and no gradient for ``lam``.

Ties are broken by position (the earlier column ranks first) on every device and path; callers
must not rely on it.

Speed. Ranking is one sort per row plus a scatter of the positions back (``argsort(argsort(x))``
would sort twice). On CPU, ``torch.sort`` of float rows costs two to three times numpy's SIMD
integer sort, which made ranking the bulk of RankSim's time on top of the similarity matmul. So
on CPU, rows that fit in float32 are ranked through one numpy sort of packed int64 keys: the high
32 bits are an order-preserving integer image of ``-x`` and the low 32 bits the column index. The
keys are distinct, so an unstable sort gives exactly the stable descending order, and the column
falls out of the sorted keys. Other devices, and float64 rows (which do not pack), use
``torch.sort(stable=True)``; both paths give identical ranks. (Splitting large matrices by rows
over threads was tried and removed: it only acted from m * n >= 2**17, which no shipped config
reaches, and it did not measurably pay on the 2-core test machine.)
"""

from __future__ import annotations

import numpy as np
import torch

# Added to lambda in the backward, as in the blackbox-backprop formulation, so lambda -> 0 does
# not divide by zero.
_LAMBDA_EPS = 1e-8


def uses_numpy_sort(x: torch.Tensor) -> bool:
    """Whether rows of ``x`` are sorted by numpy (CPU tensors) rather than ``torch.sort``.

    The one switch for both fast paths (here and in :func:`ranksim.methods.regularizer.label_ranks`);
    tests turn it off to run the generic path on CPU.
    """
    return x.device.type == "cpu"


def _rank_dtype(dtype: torch.dtype) -> torch.dtype:
    # (rank + 1) / n must be exact enough to tell neighbouring ranks apart: bf16 cannot for
    # n > 256 and fp16 for n > 2048, so ranks are never returned in less than float32.
    if dtype == torch.float64:
        return torch.float64
    return torch.float32


def scatter_positions(order: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``out[i, order[i, k]] = (k + 1) / n``: the normalised ranks of a row-wise sort ``order``."""
    m, n = order.shape
    positions = torch.arange(1, n + 1, device=order.device, dtype=dtype).div_(n)
    return torch.empty(m, n, device=order.device, dtype=dtype).scatter_(1, order, positions.expand(m, n))


def _packed_order_cpu(x: torch.Tensor) -> torch.Tensor:
    """Stable descending sort order of the rows of a float32 CPU tensor, as an int64 tensor."""
    m, n = x.shape
    src = x.detach().contiguous().numpy()
    keys = np.empty((m, n), dtype=np.int64)
    columns = np.arange(n, dtype=np.int64)

    # -x + 0.0 turns -0.0 into +0.0, so the two zeros tie as torch.sort sees them.
    neg = np.negative(src) + np.float32(0.0)
    bits = neg.view(np.int32)
    # Flip the magnitude bits of negatives: the int32 order becomes the float order.
    bits ^= (bits >> 31) & np.int32(0x7FFFFFFF)
    keys[...] = bits
    keys <<= 32
    keys |= columns
    keys.sort(axis=1)
    keys &= 0xFFFFFFFF
    return torch.from_numpy(keys)


def rank_normalised(x: torch.Tensor) -> torch.Tensor:
    """Normalised descending ranks of each row of ``x``.

    Args:
        x: ``(m, n)`` tensor (any real dtype, any device).

    Returns:
        ``(m, n)`` tensor of ``(rank + 1) / n`` in ``(0, 1]``, float64 for float64 input and float32
        otherwise, on ``x``'s device. Ties are broken by position (the earlier column gets the
        smaller rank).
    """
    if x.dim() != 2:
        raise ValueError(f"rank_normalised expects an (m, n) tensor, got shape {tuple(x.shape)}")
    if uses_numpy_sort(x) and x.is_floating_point() and x.dtype != torch.float64 and x.numel() > 0:
        order = _packed_order_cpu(x.to(torch.float32))
    else:
        order = torch.sort(x, dim=1, descending=True, stable=True).indices
    return scatter_positions(order, _rank_dtype(x.dtype))


class TrueRanker(torch.autograd.Function):
    """Blackbox-differentiable :func:`rank_normalised` (SPEC 2.2).

    ``TrueRanker.apply(sequence, interpolation_lambda)``: ``sequence`` is ``(m, n)``; the output is
    ``rank_normalised(sequence)``. The backward perturbs the input along the incoming gradient,
    ``s' = s + lambda * g``, re-ranks, and returns ``-(r - r') / (lambda + 1e-8)`` in the dtype of
    ``sequence``. ``interpolation_lambda`` is a positive float and receives no gradient.
    """

    @staticmethod
    def forward(ctx, sequence: torch.Tensor, interpolation_lambda: float) -> torch.Tensor:
        lam = float(interpolation_lambda)
        if not lam > 0:
            raise ValueError(f"interpolation_lambda must be > 0, got {interpolation_lambda!r}")
        ranks = rank_normalised(sequence)
        ctx.lam = lam
        ctx.save_for_backward(sequence, ranks)
        return ranks

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        sequence, ranks = ctx.saved_tensors
        lam = ctx.lam
        # The perturbation is taken in the input's own dtype, as the solver would see it.
        perturbed = torch.add(sequence, grad_output.to(sequence.dtype), alpha=lam)
        grad = rank_normalised(perturbed).sub_(ranks).div_(lam + _LAMBDA_EPS)
        return grad.to(sequence.dtype), None
