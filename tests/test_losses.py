"""Tests for ranksim.methods.losses (SPEC 3): each weighted loss against a per-sample loop of its formula."""

import math

import pytest
import torch

from ranksim.methods.losses import LOSSES, get_loss


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def ref_sample_loss(name, e, beta=None, gamma=1.0, activate="sigmoid"):
    a = abs(e)
    if name == "mse":
        return e * e
    if name == "l1":
        return a
    if name == "huber":
        beta = 1.0 if beta is None else beta
        return 0.5 * e * e / beta if a < beta else a - 0.5 * beta
    beta = 0.2 if beta is None else beta
    factor = (math.tanh(beta * a) if activate == "tanh" else 2 * sigmoid(beta * a) - 1) ** gamma
    return (a if name == "focal_l1" else e * e) * factor


def ref_loss(name, pred, target, weights=None, **params):
    p, t = pred.reshape(-1).tolist(), target.reshape(-1).tolist()
    w = [1.0] * len(p) if weights is None else weights.reshape(-1).tolist()
    return sum(wi * ref_sample_loss(name, pi - ti, **params) for pi, ti, wi in zip(p, t, w)) / len(p)


def batch(device, n=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = (torch.randn(n, 1, generator=g, dtype=torch.float64) * 3).to(device)
    target = (torch.randn(n, 1, generator=g, dtype=torch.float64) * 3).to(device)
    target[0] = pred[0] + 0.5  # inside the huber threshold
    target[1] = pred[1] - 1.0  # exactly at it (the linear branch)
    weights = torch.rand(n, 1, generator=g, dtype=torch.float64).to(device) + 0.5
    return pred, target, weights


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("use_weights", [False, True])
def test_every_loss_equals_its_formula(device, name, use_weights):
    pred, target, weights = batch(device)
    w = weights if use_weights else None
    out = LOSSES[name](pred, target, w)
    assert out.dim() == 0 and out.dtype == torch.float64
    assert out.item() == pytest.approx(ref_loss(name, pred.cpu(), target.cpu(), None if w is None else w.cpu()),
                                       rel=1e-12)


@pytest.mark.parametrize("name,params", [
    ("huber", dict(beta=2.5)),
    ("focal_l1", dict(activate="tanh", beta=0.3, gamma=2.0)),
    ("focal_mse", dict(activate="tanh", beta=0.5, gamma=1.5)),
    ("focal_mse", dict(activate="sigmoid", beta=0.1, gamma=2.0)),
])
def test_parameters_by_name(device, name, params):
    pred, target, weights = batch(device, seed=1)
    fn = get_loss(name, **params)
    assert fn(pred, target, weights).item() == pytest.approx(
        ref_loss(name, pred.cpu(), target.cpu(), weights.cpu(), **params), rel=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_flat_and_column_shapes_agree_and_never_broadcast(name):
    pred, target, weights = batch("cpu", seed=2)
    fn = get_loss(name)
    reference = fn(pred, target, weights)
    for p, t, w in [(pred[:, 0], target[:, 0], weights[:, 0]), (pred, target[:, 0], weights[:, 0]),
                    (pred[:, 0], target, weights)]:
        assert torch.equal(fn(p, t, w), reference)


def test_gradient_flows_to_pred_only():
    pred, target, weights = batch("cpu", seed=3)
    pred.requires_grad_(True)
    get_loss("l1")(pred, target, weights).backward()
    expected = (weights * torch.sign(pred.detach() - target)) / pred.shape[0]
    torch.testing.assert_close(pred.grad, expected)


def test_shape_errors_name_the_shapes():
    pred = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=r"target must have shape \(4,\) or \(4, 1\), got \(5,\)"):
        LOSSES["mse"](pred, torch.zeros(5))
    with pytest.raises(ValueError, match=r"weights .*got \(4, 2\)"):
        LOSSES["l1"](pred, torch.zeros(4), torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"pred must have shape .*got \(4, 3\)"):
        LOSSES["huber"](torch.zeros(4, 3), torch.zeros(4, 3))


def test_unknown_names_and_parameters():
    with pytest.raises(ValueError, match=r"'smooth_l1'.*\['focal_l1', 'focal_mse', 'huber', 'l1', 'mse'\]"):
        get_loss("smooth_l1")
    with pytest.raises(ValueError, match=r"\['gamma'\].*'l1'.*\[\]"):
        get_loss("l1", gamma=2.0)
    with pytest.raises(ValueError, match=r"'relu'.*\['sigmoid', 'tanh'\]"):
        get_loss("focal_l1", activate="relu")
    with pytest.raises(ValueError, match="beta"):
        get_loss("huber", beta=0.0)
