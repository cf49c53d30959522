"""Tests for ranksim.methods.ranking (SPEC 2.1, 2.2) and ranksim.methods.regularizer (SPEC 2.3).

The references are the slow, obvious forms: ranks by argsort of argsort of one row at a time,
and the regularizer as the authors define it, a Python loop over the rows of the similarity
matrix with one blackbox ranking per row.
"""

import pytest
import torch
import torch.nn.functional as F

from ranksim.methods import ranking
from ranksim.methods.ranking import TrueRanker, rank_normalised
from ranksim.methods.regularizer import (CosineSimilarity, batchwise_ranking_regularizer, label_ranks,
                                         unique_label_indices)

LAMBDA_EPS = 1e-8


@pytest.fixture(params=["fast", "generic"])
def sort_path(request, monkeypatch):
    """Run a test on CPU's numpy fast path and again on the generic torch.sort path."""
    if request.param == "generic":
        monkeypatch.setattr(ranking, "uses_numpy_sort", lambda x: False)
    return request.param


# ----------------------------------------------------------------------------- references

def ref_rank_row(row: torch.Tensor) -> torch.Tensor:
    """(rank + 1) / n of one 1-D row, descending, by argsort of argsort (valid without ties)."""
    order = torch.argsort(row, descending=True)
    ranks = torch.argsort(order)
    return (ranks + 1).to(torch.float64) / row.numel()


class RefRowRanker(torch.autograd.Function):
    """SPEC 2.2 for a single row, with the slow rank."""

    @staticmethod
    def forward(ctx, row, lam):
        ranks = ref_rank_row(row).to(row.dtype)
        ctx.save_for_backward(row, ranks)
        ctx.lam = lam
        return ranks

    @staticmethod
    def backward(ctx, grad):
        row, ranks = ctx.saved_tensors
        ranks_prime = ref_rank_row(row + ctx.lam * grad).to(row.dtype)
        return -(ranks - ranks_prime) / (ctx.lam + LAMBDA_EPS), None


def ref_label_ranks_row(labels, i):
    """(rank + 1) / m of -|y_i - y_j| over j, equal distances ranked smaller label first (the
    module's documented rule), by sorting (distance, label) pairs one row at a time."""
    m = labels.numel()
    order = sorted(range(m), key=lambda j: (abs(float(labels[i]) - float(labels[j])), float(labels[j])))
    ranks = torch.empty(m, dtype=torch.float64)
    for position, j in enumerate(order):
        ranks[j] = (position + 1) / m
    return ranks.to(labels.device)


def ref_regularizer(features, targets, lam, label_ranks_row=None):
    """Per-row loop of SPEC 2.3 on an already de-duplicated batch; ``label_ranks_row(y, i)`` gives
    row i's label ranks (default: argsort of argsort, valid when no label row has ties)."""
    m = features.shape[0]
    x = F.normalize(features.reshape(m, -1), dim=1)
    sim = x @ x.T
    y = targets.reshape(m).to(torch.float64)
    loss = 0.0
    for i in range(m):
        label_ranks = (ref_rank_row(-(y[i] - y).abs()) if label_ranks_row is None
                       else label_ranks_row(y, i)).to(sim.dtype)
        feature_ranks = RefRowRanker.apply(sim[i], lam)
        loss = loss + ((feature_ranks - label_ranks) ** 2).mean()
    return loss


def tie_free_targets(m, generator, device):
    """Distinct labels whose pairwise distances are all distinct (no ties in any label row)."""
    return (torch.rand(m, generator=generator, dtype=torch.float64) * 100).to(device)


# ----------------------------------------------------------------------------- rank_normalised

def test_rank_normalised_by_hand(sort_path):
    # Row [0.3, 0.9, -1.0, 0.5]: descending order 0.9, 0.5, 0.3, -1.0 -> ranks 2, 0, 3, 1.
    x = torch.tensor([[0.3, 0.9, -1.0, 0.5], [4.0, 3.0, 2.0, 1.0]])
    expected = torch.tensor([[3, 1, 4, 2], [1, 2, 3, 4]], dtype=torch.float32) / 4
    assert torch.equal(rank_normalised(x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bfloat16])
def test_rank_normalised_matches_argsort_of_argsort(device, dtype):
    g = torch.Generator().manual_seed(0)
    # A permutation per row keeps integer and bf16 rows tie-free.
    x = torch.stack([torch.randperm(37, generator=g) for _ in range(11)]).to(device=device, dtype=dtype)
    out = rank_normalised(x)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert out.device == x.device
    expected = torch.stack([ref_rank_row(row.cpu()) for row in x]).to(out.dtype)
    assert torch.equal(out.cpu(), expected)


def test_rank_normalised_with_ties_is_a_permutation_per_row(device, sort_path):
    x = torch.tensor([[1.0, 1.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]], device=device)
    out = rank_normalised(x)
    for row in out.cpu():
        assert sorted((row * 4).round().tolist()) == [1.0, 2.0, 3.0, 4.0]
    # The element that is strictly smallest still gets the last rank.
    assert out[0, 2].item() == 1.0


def torch_sort_ranks(x):
    """The generic path written out: one stable descending sort, positions scattered back."""
    order = torch.sort(x, dim=1, descending=True, stable=True).indices
    n = x.shape[1]
    return torch.empty(x.shape).scatter_(1, order, (torch.arange(1, n + 1, dtype=torch.float32) / n).expand(x.shape))


@pytest.mark.parametrize("shape", [(3, 5), (700, 300)])
def test_cpu_packed_sort_equals_a_stable_torch_sort(shape):
    assert ranking.uses_numpy_sort(torch.zeros(1))
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(shape, generator=g) * 3).round() / 2  # many ties
    x[0, :3] = torch.tensor([0.0, -0.0, 0.0])  # the two zeros tie
    x[1, :4] = torch.tensor([float("inf"), -float("inf"), 1e-45, -1e-45])
    x[-1] = 5.0  # a constant row
    assert torch.equal(rank_normalised(x), torch_sort_ranks(x))
    assert torch.equal(rank_normalised(x.to(torch.bfloat16)), torch_sort_ranks(x.to(torch.bfloat16).float()))


def test_rank_normalised_single_column_and_bad_shape():
    assert torch.equal(rank_normalised(torch.tensor([[5.0], [-2.0]])), torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"\(m, n\).*\(3,\)"):
        rank_normalised(torch.zeros(3))


# ----------------------------------------------------------------------------- TrueRanker

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_true_ranker_backward_is_its_definition(device, dtype, lam):
    """gradcheck-style: the autograd gradient equals -(r - rank(s + lam g)) / (lam + 1e-8)."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(6, 20, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    s.requires_grad_(True)
    grad_out = torch.randn(6, 20, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    ranks = TrueRanker.apply(s, lam)
    (grad_s,) = torch.autograd.grad(ranks, s, grad_out)

    s_ref = s.detach().cpu().double()
    expected = torch.stack([
        -(ref_rank_row(s_ref[i]) - ref_rank_row(s_ref[i] + lam * grad_out[i].cpu().double()))
        / (lam + LAMBDA_EPS) for i in range(6)])
    assert grad_s.dtype == dtype
    torch.testing.assert_close(ranks.detach().cpu().double(), torch.stack([ref_rank_row(r) for r in s_ref]))
    torch.testing.assert_close(grad_s.cpu().double(), expected, rtol=1e-6, atol=1e-7)


def test_true_ranker_no_gradient_to_lambda_and_zero_for_zero_grad():
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    out = TrueRanker.apply(s, lam)
    out.backward(torch.zeros_like(out))
    assert lam.grad is None
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("lam", [0.0, -1.0])
def test_true_ranker_rejects_non_positive_lambda(lam):
    with pytest.raises(ValueError, match="interpolation_lambda"):
        TrueRanker.apply(torch.randn(2, 3), lam)


# ----------------------------------------------------------------------------- regularizer

def test_cosine_similarity_gradient(device):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(CosineSimilarity.apply, (x,))
    x = x.detach().clone()
    x[3] = 0.0  # a zero row: its norm is clamped, as in F.normalize (not differentiable there)
    x.requires_grad_(True)
    grad_s = torch.randn(7, 7, generator=g, dtype=torch.float64).to(device)
    (ours,) = torch.autograd.grad(CosineSimilarity.apply(x), x, grad_s)
    x_hat = F.normalize(x, dim=1)
    (ref,) = torch.autograd.grad(x_hat @ x_hat.T, x, grad_s)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(CosineSimilarity.apply(x), x_hat @ x_hat.T, rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 2, 7, 40])
def test_regularizer_value_and_gradient_equal_the_row_loop(device, batch, sort_path):
    g = torch.Generator().manual_seed(batch)
    features = torch.randn(batch, 4, 3, generator=g, dtype=torch.float64).to(device)
    targets = tie_free_targets(batch, g, device).reshape(batch, 1)

    ours_in = features.clone().requires_grad_(True)
    ours = batchwise_ranking_regularizer(ours_in, targets, 2.0)
    ours.backward()

    ref_in = features.clone().requires_grad_(True)
    ref = ref_regularizer(ref_in, targets, 2.0)
    if batch == 1:
        assert ours.item() == 0.0 and torch.equal(ours_in.grad, torch.zeros_like(features))
        return
    ref.backward()
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)
    if batch > 2:  # with two samples the self-similarity always ranks first: no gradient
        assert ours_in.grad.abs().sum() > 0


@pytest.mark.parametrize("lam", [0.3, 5.0, 40.0])
def test_regularizer_at_other_lambdas_equals_the_row_loop(device, lam, sort_path):
    """Lambda only enters the backward: small ones flip few ranks, large ones many; every one
    gives the loop's gradient, and they differ from each other."""
    g = torch.Generator().manual_seed(21)
    features = torch.randn(12, 5, generator=g, dtype=torch.float64).to(device)
    targets = tie_free_targets(12, g, device)
    grads = {}
    for value in (lam, 2.0):
        ours_in = features.clone().requires_grad_(True)
        batchwise_ranking_regularizer(ours_in, targets, value).mul(50.0).backward()
        ref_in = features.clone().requires_grad_(True)
        ref_regularizer(ref_in, targets, value).mul(50.0).backward()
        torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)
        grads[value] = ours_in.grad
    assert grads[lam].abs().sum() > 0
    assert not torch.allclose(grads[lam], grads[2.0])


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_integer_labels_with_tied_distances_equal_the_row_loop(device, lam, sort_path):
    """Integer ages, the realistic case: y_i - a and y_i + a tie in row i. Value and gradient
    equal the loop whose label ranks send the smaller label first."""
    g = torch.Generator().manual_seed(22)
    ages = torch.randperm(30, generator=g)[:16].double() + 20  # distinct, many equal distances
    assert any(len({abs(a - b) for b in ages.tolist()}) < 16 for a in ages.tolist())
    features = torch.randn(16, 6, generator=g, dtype=torch.float64).to(device)
    ours_in = features.clone().requires_grad_(True)
    ours = batchwise_ranking_regularizer(ours_in, ages.to(device), lam)
    ours.mul(20.0).backward()
    ref_in = features.clone().requires_grad_(True)
    ref = ref_regularizer(ref_in, ages.to(device), lam, label_ranks_row=ref_label_ranks_row)
    ref.mul(20.0).backward()
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)
    assert ours_in.grad.abs().sum() > 0

def test_float32_regularizer_equals_the_float32_row_loop(device, sort_path):
    g = torch.Generator().manual_seed(8)
    features = torch.randn(50, 16, generator=g).to(device)
    targets = tie_free_targets(50, g, device)
    ours_in = features.clone().requires_grad_(True)
    ours = batchwise_ranking_regularizer(ours_in, targets, 2.0)
    ours.backward()
    ref_in = features.clone().requires_grad_(True)
    ref = ref_regularizer(ref_in, targets, 2.0)
    ref.backward()
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-7)


def test_label_ranks_break_equal_distances_towards_the_smaller_label(sort_path):
    # Integer labels give equal distances on both sides; every path sends the smaller label first.
    labels = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0, 8.0, 11.0], dtype=torch.float64)
    generic = rank_normalised(-(labels[:, None] - labels[None, :]).abs())  # stable, ascending columns
    assert torch.equal(label_ranks(labels, None, torch.float64), generic)
    # Row of label 3: distances 2 (to 1 and 5) tie, 1 comes first.
    assert label_ranks(labels, None, torch.float64)[2, 0] < label_ranks(labels, None, torch.float64)[2, 3]

    g = torch.Generator().manual_seed(9)
    big = torch.unique(torch.randint(0, 3000, (900,), generator=g)).double()
    generic = torch_sort_ranks(-(big[:, None] - big[None, :]).abs())
    assert torch.equal(label_ranks(big, None, torch.float32), generic)
    # Unsorted labels: the same ranks, rows and columns permuted along.
    perm = torch.randperm(big.numel(), generator=g)
    shuffled = label_ranks(big[perm], torch.argsort(big[perm]), torch.float32)
    assert torch.equal(shuffled, generic[perm][:, perm])


def test_regularizer_on_duplicated_labels_equals_the_loop_on_the_kept_samples(device, sort_path):
    g = torch.Generator().manual_seed(3)
    distinct = tie_free_targets(9, g, device)
    pick = torch.randint(0, 9, (30,), generator=g).to(device)
    pick[:9] = torch.arange(9, device=device)  # every label present at least once
    targets = distinct[pick]
    features = torch.randn(30, 8, generator=g, dtype=torch.float64).to(device)

    keep = unique_label_indices(targets, torch.Generator(device=device).manual_seed(11))
    ours_in = features.clone().requires_grad_(True)
    ours = batchwise_ranking_regularizer(ours_in, targets, 2.0,
                                         generator=torch.Generator(device=device).manual_seed(11))
    ours.backward()
    ref_in = features.clone().requires_grad_(True)
    ref = ref_regularizer(ref_in[keep], targets[keep], 2.0)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)
    # Samples that were dropped get no gradient.
    dropped = torch.ones(30, dtype=torch.bool, device=device)
    dropped[keep] = False
    assert torch.equal(ours_in.grad[dropped], torch.zeros_like(ours_in.grad[dropped]))


def test_dedup_keeps_one_sample_per_label_and_is_reproducible(device):
    targets = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 3.0, 5.0], device=device)
    draws = []
    for seed in range(40):
        keep = unique_label_indices(targets, torch.Generator(device=device).manual_seed(seed))
        again = unique_label_indices(targets, torch.Generator(device=device).manual_seed(seed))
        assert torch.equal(keep, again)
        assert targets[keep].tolist() == [1.0, 2.0, 3.0, 5.0]
        draws.append(tuple(keep.tolist()))
    # Label 3 has three samples (0, 2, 5); over 40 seeds each of them gets picked.
    assert {d[2] for d in draws} == {0, 2, 5}
    assert {d[0] for d in draws} == {1, 4}


def test_dedup_choice_is_uniform():
    targets = torch.tensor([7.0, 7.0, 7.0, 7.0, 1.0])
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(5)
    for _ in range(2000):
        hits[unique_label_indices(targets, g)[1]] += 1
    # 500 expected per sample of label 7; 4 standard deviations is about 80.
    assert (hits[:4] - 500).abs().max() < 80 and hits[4] == 0


def test_distinct_labels_keep_the_batch_and_draw_nothing():
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    assert unique_label_indices(torch.tensor([2.0, 1.0, 3.0]), g) is None
    assert torch.equal(g.get_state(), state)


def test_all_labels_equal_gives_zero(device):
    features = torch.randn(16, 5, device=device, requires_grad=True)
    loss = batchwise_ranking_regularizer(features, torch.full((16,), 4.0, device=device), 2.0)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(features.grad, torch.zeros_like(features))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_features_are_ranked_in_float32(device, dtype):
    g = torch.Generator().manual_seed(2)
    features64 = torch.randn(24, 32, generator=g, dtype=torch.float64)
    targets = tie_free_targets(24, g, "cpu").to(device)
    features = features64.to(device=device, dtype=dtype).requires_grad_(True)
    loss = batchwise_ranking_regularizer(features, targets, 2.0)
    loss.backward()
    assert loss.dtype == torch.float32 and features.grad.dtype == dtype
    assert torch.isfinite(features.grad.float()).all()
    # Same value as the float64 loop on the same (rounded) features, up to near-ties in S.
    ref = ref_regularizer(features.detach().cpu().double(), targets.cpu(), 2.0)
    assert abs(loss.item() - ref.item()) < 0.05 * max(ref.item(), 1e-3)


def test_integer_targets_and_loss_range(device):
    g = torch.Generator().manual_seed(4)
    ages = torch.randint(1, 100, (64,), generator=g).to(device)
    features = torch.randn(64, 16, generator=g).to(device)
    loss = batchwise_ranking_regularizer(features, ages, 2.0)
    m = torch.unique(ages).numel()
    assert 0.0 <= loss.item() < m


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(5,\) or \(5, 1\).*\(5, 3\).*\(4,\)"):
        batchwise_ranking_regularizer(torch.randn(5, 3), torch.randn(4), 2.0)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        batchwise_ranking_regularizer(torch.randn(5, 3), torch.randn(5, 2), 2.0)
    with pytest.raises(ValueError, match="B >= 1"):
        batchwise_ranking_regularizer(torch.randn(0, 3), torch.randn(0), 2.0)
