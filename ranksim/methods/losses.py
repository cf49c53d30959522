"""Weighted regression losses (SPEC 3), chosen by name.

Paper context: the DIR benchmark (Yang et al., ICML 2021, arXiv 2102.09554) trains with weighted
L1/MSE (re-weighting, LDS), Focal-R (``focal_l1``, ``focal_mse``) and Huber; RankSim (Gong et al.,
ICML 2022) adds its regularizer on top of one of these.

Every loss is ``mean(w * l(pred, target))`` over the batch, with ``e = pred - target``:

- ``mse``: ``e ** 2``
- ``l1``: ``|e|``
- ``huber``: ``0.5 e ** 2 / beta`` if ``|e| < beta`` else ``|e| - 0.5 beta``
- ``focal_l1``: ``|e| * f(|e|)`` and ``focal_mse``: ``e ** 2 * f(|e|)``, with
  ``f = (2 sigmoid(beta |e|) - 1) ** gamma`` (``activate='sigmoid'``) or ``tanh(beta |e|) ** gamma``
  (``activate='tanh'``); defaults ``beta=0.2, gamma=1``.

``bmse`` (Balanced MSE, SPEC 9.1) is not here: it holds a learnable noise scale and statistics of
the training labels, so it is a module (:mod:`ranksim.methods.balanced_mse`), which the training
loss factory :func:`ranksim.engine.build.build_loss` builds from the config.

Shapes: ``pred`` and ``target`` are ``(B,)`` or ``(B, 1)`` (they need not match, as long as ``B``
does; a ``(B, 1)`` against ``(B,)`` pair is never broadcast to ``(B, B)``); ``weights`` is ``None``,
``(B,)`` or ``(B, 1)``. The result is a scalar tensor in ``pred``'s dtype.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

ACTIVATIONS = ("sigmoid", "tanh")


def as_batch_vector(name: str, tensor: torch.Tensor, batch: int | None = None, context: str = "") -> torch.Tensor:
    """``tensor`` of shape ``(B,)`` or ``(B, 1)`` (``B = batch`` when given) as ``(B,)``; else a ValueError naming it."""
    ok = tensor.dim() == 1 or (tensor.dim() == 2 and tensor.shape[1] == 1)
    if not ok or (batch is not None and tensor.shape[0] != batch):
        expected = "(B,) or (B, 1)" if batch is None else f"({batch},) or ({batch}, 1)"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}{context}")
    return tensor.reshape(-1)


def _error_and_weights(pred, target, weights):
    """Flatten the inputs to ``(B,)`` after checking shapes; return ``e = pred - target`` and ``w``."""
    p = as_batch_vector("pred", pred)
    context = f" (pred has shape {tuple(pred.shape)})"
    t = as_batch_vector("target", target, p.shape[0], context)
    w = None if weights is None else as_batch_vector("weights", weights, p.shape[0], context).to(p.dtype)
    return p - t.to(p.dtype), w


def _weighted_mean(loss: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return (loss if weights is None else loss * weights).mean()


def _focal_factor(abs_err: torch.Tensor, activate: str, beta: float, gamma: float) -> torch.Tensor:
    if activate == "sigmoid":
        return (2 * torch.sigmoid(beta * abs_err) - 1) ** gamma
    if activate == "tanh":
        return torch.tanh(beta * abs_err) ** gamma
    raise ValueError(f"unknown activate {activate!r}; valid values are {list(ACTIVATIONS)}")


def mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean squared error.

    ``pred``, ``target`` ``(B,)`` or ``(B, 1)``, ``weights`` ``None`` or ``(B,)``/``(B, 1)``; scalar out (DIR, arXiv 2102.09554).
    """
    err, w = _error_and_weights(pred, target, weights)
    return _weighted_mean(err ** 2, w)


def l1(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean absolute error.

    ``pred``, ``target`` ``(B,)`` or ``(B, 1)``, ``weights`` ``None`` or ``(B,)``/``(B, 1)``; scalar out (DIR, arXiv 2102.09554).
    """
    err, w = _error_and_weights(pred, target, weights)
    return _weighted_mean(err.abs(), w)


def huber(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
          beta: float = 1.0) -> torch.Tensor:
    """Weighted Huber loss with threshold ``beta > 0``.

    ``pred``, ``target`` ``(B,)`` or ``(B, 1)``, ``weights`` ``None`` or ``(B,)``/``(B, 1)``; scalar out (DIR, arXiv 2102.09554).
    """
    if not beta > 0:
        raise ValueError(f"huber beta must be > 0, got {beta!r}")
    err, w = _error_and_weights(pred, target, weights)
    abs_err = err.abs()
    loss = torch.where(abs_err < beta, 0.5 * abs_err ** 2 / beta, abs_err - 0.5 * beta)
    return _weighted_mean(loss, w)


def focal_l1(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
             activate: str = "sigmoid", beta: float = 0.2, gamma: float = 1.0) -> torch.Tensor:
    """Weighted Focal-R L1: ``|e| * f(|e|)`` (see the module docstring).

    ``pred``, ``target`` ``(B,)`` or ``(B, 1)``, ``weights`` ``None`` or ``(B,)``/``(B, 1)``; scalar out (DIR, arXiv 2102.09554).
    """
    err, w = _error_and_weights(pred, target, weights)
    abs_err = err.abs()
    return _weighted_mean(abs_err * _focal_factor(abs_err, activate, beta, gamma), w)


def focal_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
              activate: str = "sigmoid", beta: float = 0.2, gamma: float = 1.0) -> torch.Tensor:
    """Weighted Focal-R MSE: ``e ** 2 * f(|e|)`` (see the module docstring).

    ``pred``, ``target`` ``(B,)`` or ``(B, 1)``, ``weights`` ``None`` or ``(B,)``/``(B, 1)``; scalar out (DIR, arXiv 2102.09554).
    """
    err, w = _error_and_weights(pred, target, weights)
    return _weighted_mean(err ** 2 * _focal_factor(err.abs(), activate, beta, gamma), w)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "mse": mse,
    "l1": l1,
    "huber": huber,
    "focal_l1": focal_l1,
    "focal_mse": focal_mse,
}


def get_loss(name: str, **params) -> Callable[..., torch.Tensor]:
    """The loss ``name`` with its extra parameters bound: a callable ``(pred, target, weights=None)``.

    ``pred``, ``target`` ``(B,)`` or ``(B, 1)``, ``weights`` ``None`` or ``(B,)``; a scalar out. The
    losses of the DIR benchmark (Yang et al., ICML 2021, arXiv 2102.09554); see the module docstring.

    Unknown names and unknown parameters raise a ``ValueError`` that lists the valid ones.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses are {sorted(LOSSES)}")
    fn = LOSSES[name]
    valid = [p for p in inspect.signature(fn).parameters if p not in ("pred", "target", "weights")]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for loss {name!r}; valid parameters are {valid}")
    if "activate" in params:
        _focal_factor(torch.zeros(()), params["activate"], 1.0, 1.0)
    if name == "huber" and "beta" in params and not params["beta"] > 0:
        raise ValueError(f"huber beta must be > 0, got {params['beta']!r}")
    return functools.partial(fn, **params) if params else fn
