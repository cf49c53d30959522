"""Tests for ranksim.methods.fds (SPEC 4).

``RefFDS`` is the slow, obvious FDS written from the SPEC: a Python loop over the labels of a
batch and over the buckets, float64 statistics, and, in faithful mode, the authors' aliasing
done literally (the last-epoch attribute *is* the running-statistics tensor). The module under
test must follow it, in both modes, over several simulated epochs.
"""

import copy
import io

import numpy as np
import pytest
import torch

from ranksim.methods.fds import FDS
from ranksim.methods.lds import kernel_window

AGE = dict(bucket_num=12, bucket_start=2, binning="age", clip_min=0.1, clip_max=10.0)
STS = dict(bucket_num=50, bucket_start=0, binning="sts_b", clip_min=0.5, clip_max=2.0)


# ----------------------------------------------------------------------------- reference

class RefFDS:
    def __init__(self, dim, bucket_num, bucket_start, binning, clip_min, clip_max, faithful,
                 ks=5, sigma=2.0, kernel="gaussian", momentum=0.9, start_update=0):
        self.bucket_num, self.bucket_start, self.binning = bucket_num, bucket_start, binning
        self.clip = (clip_min, clip_max)
        self.faithful, self.momentum, self.start_update = faithful, momentum, start_update
        self.window = kernel_window(kernel, ks, sigma, normalise="sum").tolist()
        k = bucket_num - bucket_start
        self.stored_epoch = start_update
        self.running_mean = torch.zeros(k, dim, dtype=torch.float64)
        self.running_var = torch.ones(k, dim, dtype=torch.float64)
        self.last_mean, self.last_var = self.running_mean.clone(), self.running_var.clone()
        self.smooth_mean, self.smooth_var = self.running_mean.clone(), self.running_var.clone()
        self.tracked = [0] * k

    def bucket(self, label):
        label = float(label)
        if self.binning == "age":
            b = int(label)
        else:  # number of inner edges k / 10 (float32) at or below the float32 label
            b = sum(1 for k in range(1, self.bucket_num) if np.float32(k * 5 / self.bucket_num) <= np.float32(label))
        return min(max(b, self.bucket_start), self.bucket_num - 1) - self.bucket_start

    def update_last_epoch_stats(self, epoch):
        if epoch != self.stored_epoch + 1:
            return
        self.stored_epoch += 1
        if self.faithful:
            self.last_mean, self.last_var = self.running_mean, self.running_var  # the alias
        else:
            self.last_mean, self.last_var = self.running_mean.clone(), self.running_var.clone()
        self.smooth_mean = self.conv_reflect(self.running_mean)
        self.smooth_var = self.conv_reflect(self.running_var)

    def conv_reflect(self, stats):
        k, half = stats.shape[0], len(self.window) // 2
        out = torch.zeros_like(stats)
        for b in range(k):
            for t, w in enumerate(self.window):
                j = b + t - half
                j = -j if j < 0 else (2 * (k - 1) - j if j >= k else j)  # reflect, edge not repeated
                out[b] += w * stats[j]
        return out

    def update_running_stats(self, features, labels, epoch):
        if epoch < self.stored_epoch:
            return
        features = features.double()
        buckets = [self.bucket(y) for y in labels.reshape(-1).tolist()]
        seen = sorted(set(buckets))
        for b in seen:
            feats = features[[i for i, bi in enumerate(buckets) if bi == b]]
            n = feats.shape[0]
            mean, var = feats.mean(0), feats.var(0, unbiased=n > 1)
            self.tracked[b] += n
            factor = self.momentum if self.momentum is not None else 1 - n / self.tracked[b]
            factor = 0.0 if epoch == self.start_update else factor
            self.running_mean[b] = (1 - factor) * mean + factor * self.running_mean[b]
            self.running_var[b] = (1 - factor) * var + factor * self.running_var[b]
        if self.binning == "sts_b":
            k = self.running_mean.shape[0]
            for b in range(k):
                if b in seen:
                    continue
                for stats in (self.running_mean, self.running_var):
                    if b == 0:
                        stats[0] = stats[1]
                    elif b == k - 1:
                        stats[b] = stats[b - 1]
                    else:
                        stats[b] = (stats[b - 1] + stats[b + 1]) / 2

    def smooth(self, features, labels):
        out = features.double().clone()
        buckets = [self.bucket(y) for y in labels.reshape(-1).tolist()]
        for b in sorted(set(buckets)):
            rows = [i for i, bi in enumerate(buckets) if bi == b]
            m1, v1, m2, v2 = self.last_mean[b], self.last_var[b], self.smooth_mean[b], self.smooth_var[b]
            if v1.sum() < 1e-10:
                continue
            for d in range(out.shape[1]):
                if v1[d] > 0:
                    factor = min(max((v2[d] / v1[d]).item(), self.clip[0]), self.clip[1])
                    out[rows, d] = (out[rows, d] - m1[d]) * factor ** 0.5 + m2[d]
        return out

    def reload(self):
        """A checkpoint reload into a fresh object: every tensor gets its own storage."""
        fresh = copy.copy(self)
        for name in ("running_mean", "running_var", "last_mean", "last_var", "smooth_mean", "smooth_var"):
            setattr(fresh, name, getattr(self, name).clone())
        fresh.tracked = list(self.tracked)
        return fresh


# ----------------------------------------------------------------------------- data

def make_labels(setting, n, g):
    if setting["binning"] == "age":
        # Ages 0..15 cover labels below bucket_start (2) and above bucket_num - 1 (11); 6 and 7
        # never occur, so some buckets stay empty.
        ages = torch.randint(0, 16, (n,), generator=g)
        ages[(ages == 6) | (ages == 7)] = 8
        return ages.float()
    # STS-B scores on a coarse grid with gaps, plus the edges 0 and 5.
    scores = torch.randint(0, 26, (n,), generator=g).float() / 5
    scores[scores.gt(1.5) & scores.lt(2.5)] = 1.0
    scores[:2] = torch.tensor([0.0, 5.0])
    return scores


def make_features(labels, dim, g, scale=1.0):
    centre = labels[:, None] * torch.linspace(-1, 1, dim)[None, :]
    return centre + scale * torch.randn(labels.shape[0], dim, generator=g) * (1 + labels[:, None] / 10)


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), rtol=tol, atol=tol)


def assert_same_state(fds, ref):
    close(fds.running_mean, ref.running_mean)
    close(fds.running_var, ref.running_var)
    close(fds.running_mean_last_epoch, ref.last_mean)
    close(fds.running_var_last_epoch, ref.last_var)
    close(fds.smoothed_mean_last_epoch, ref.smooth_mean)
    close(fds.smoothed_var_last_epoch, ref.smooth_var)
    assert int(fds.stored_epoch) == ref.stored_epoch


def run_epoch(fds, ref, epoch, g, setting, dim, device, n_train=300):
    """One simulated epoch: smooth two batches (checked), then the end-of-epoch updates."""
    for _ in range(2):
        labels = make_labels(setting, 32, g)
        feats = make_features(labels, dim, g)
        out = fds.smooth(feats.to(device), labels.to(device)[:, None], epoch)
        close(out, ref.smooth(feats, labels) if epoch >= fds.start_smooth else feats)
    labels = make_labels(setting, n_train, g)
    feats = make_features(labels, dim, g)
    fds.update_last_epoch_stats(epoch)
    ref.update_last_epoch_stats(epoch)
    fds.update_running_stats(feats.to(device), labels.to(device), epoch)
    ref.update_running_stats(feats, labels, epoch)
    assert_same_state(fds, ref)


# ----------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("setting", [AGE, STS], ids=["age", "sts_b"])
@pytest.mark.parametrize("faithful", [False, True], ids=["fixed", "faithful"])
def test_several_epochs_follow_the_reference(device, setting, faithful):
    dim = 6
    g = torch.Generator().manual_seed(0)
    fds = FDS(dim, faithful=faithful, **setting).to(device)
    ref = RefFDS(dim, faithful=faithful, **setting)
    for epoch in range(5):
        run_epoch(fds, ref, epoch, g, setting, dim, device)


@pytest.mark.parametrize("kernel,ks,sigma,momentum", [("triang", 3, 1.0, None), ("laplace", 7, 1.5, 0.5)])
def test_other_kernels_and_cumulative_momentum(kernel, ks, sigma, momentum):
    dim, g = 4, torch.Generator().manual_seed(1)
    kw = dict(AGE, kernel=kernel, ks=ks, sigma=sigma, momentum=momentum)
    fds, ref = FDS(dim, start_update=1, start_smooth=2, **kw), RefFDS(dim, faithful=False, start_update=1, **kw)
    for epoch in range(1, 5):
        run_epoch(fds, ref, epoch, g, AGE, dim, "cpu")


def test_faithful_and_fixed_differ_from_the_second_update_on():
    dim, g1, g2 = 5, torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    a, b = FDS(dim, faithful=True, **AGE), FDS(dim, faithful=False, **AGE)
    for fds, g in ((a, g1), (b, g2)):
        for epoch in range(3):
            labels = make_labels(AGE, 200, g)
            fds.update_last_epoch_stats(epoch)
            fds.update_running_stats(make_features(labels, dim, g), labels, epoch)
    torch.testing.assert_close(a.smoothed_mean_last_epoch, b.smoothed_mean_last_epoch)
    # Faithful: own-bucket statistics already include the last update (the alias).
    assert torch.equal(a.running_mean_last_epoch, a.running_mean)
    assert not torch.allclose(b.running_mean_last_epoch, b.running_mean)


# ----------------------------------------------------------------------------- checkpoints

def save_and_load(fds, **kwargs):
    buffer = io.BytesIO()
    torch.save(fds.state_dict(), buffer)
    buffer.seek(0)
    fresh = FDS(fds.feature_dim, **kwargs).to(fds.running_mean.device)
    fresh.load_state_dict(torch.load(buffer))
    return fresh


def test_state_dict_reload_in_the_middle_changes_nothing_in_fixed_mode(device):
    dim = 5
    kwargs = dict(AGE, faithful=False)
    g = torch.Generator().manual_seed(3)
    fds = FDS(dim, **kwargs).to(device)
    for epoch in range(2):
        labels = make_labels(AGE, 200, g)
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(make_features(labels, dim, g).to(device), labels.to(device), epoch)
    resumed = save_and_load(fds, **kwargs)
    for name, value in fds.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    for epoch in range(2, 5):
        labels = make_labels(AGE, 200, g)
        feats = make_features(labels, dim, g).to(device)
        batch = feats[:40]
        assert torch.equal(fds.smooth(batch, labels[:40].to(device), epoch),
                           resumed.smooth(batch, labels[:40].to(device), epoch))
        for module in (fds, resumed):
            module.update_last_epoch_stats(epoch)
            module.update_running_stats(feats, labels.to(device), epoch)
    for name, value in fds.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_faithful_reload_breaks_the_alias_like_the_authors_code():
    dim, g = 4, torch.Generator().manual_seed(4)
    kwargs = dict(AGE, faithful=True)
    fds, ref = FDS(dim, **kwargs), RefFDS(dim, **kwargs)
    for epoch in range(3):
        labels = make_labels(AGE, 150, g)
        feats = make_features(labels, dim, g)
        for module in (fds, ref):
            module.update_last_epoch_stats(epoch)
            module.update_running_stats(feats, labels, epoch)
    resumed, ref_resumed = save_and_load(fds, **kwargs), ref.reload()
    # Running statistics updated again without a new last-epoch copy (e.g. a repeated epoch):
    # the un-reloaded module follows through the alias, the reloaded one does not.
    labels = make_labels(AGE, 150, g)
    feats = make_features(labels, dim, g)
    for module in (fds, resumed, ref, ref_resumed):
        module.update_running_stats(feats, labels, 2)
    assert_same_state(fds, ref)
    assert_same_state(resumed, ref_resumed)
    assert torch.equal(fds.running_mean_last_epoch, fds.running_mean)
    assert not torch.equal(resumed.running_mean_last_epoch, resumed.running_mean)
    # The next last-epoch update restores the alias.
    for module in (resumed, ref_resumed):
        module.update_last_epoch_stats(3)
        module.update_running_stats(feats, labels, 3)
    assert_same_state(resumed, ref_resumed)
    assert torch.equal(resumed.running_mean_last_epoch, resumed.running_mean)
    # Any load ends the alias, also into the very module that holds it.
    resumed.load_state_dict(resumed.state_dict())
    resumed.update_running_stats(feats, labels, 3)
    assert not torch.equal(resumed.running_mean_last_epoch, resumed.running_mean)


def test_state_dict_holds_every_statistic_and_not_the_kernel():
    fds = FDS(3, **AGE)
    assert set(fds.state_dict()) == {
        "stored_epoch", "running_mean", "running_var", "running_mean_last_epoch", "running_var_last_epoch",
        "smoothed_mean_last_epoch", "smoothed_var_last_epoch", "num_samples_tracked"}
    assert fds.kernel_window.shape == (5,)


# ----------------------------------------------------------------------------- smooth details

def trained_fds(setting=AGE, dim=6, faithful=False, seed=5, **kwargs):
    g = torch.Generator().manual_seed(seed)
    fds = FDS(dim, faithful=faithful, **setting, **kwargs)
    for epoch in range(3):
        labels = make_labels(setting, 300, g)
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(make_features(labels, dim, g), labels, epoch)
    return fds, g


def test_smooth_is_out_of_place_and_differentiable():
    fds, g = trained_fds()
    labels = make_labels(AGE, 20, g)
    feats = make_features(labels, 6, g).requires_grad_(True)
    before = feats.detach().clone()
    out = fds.smooth(feats, labels, epoch=3)
    assert out is not feats and torch.equal(feats.detach(), before)
    assert not torch.allclose(out, feats)
    out.sum().backward()
    # d out / d z is the per-dimension scale of the sample's bucket, positive and clipped.
    scale = feats.grad
    assert torch.all(scale >= 0.1 ** 0.5 - 1e-6) and torch.all(scale <= 10 ** 0.5 + 1e-6)


def test_smooth_before_start_smooth_is_the_identity():
    fds, g = trained_fds(start_smooth=4)
    feats = torch.randn(5, 6)
    assert fds.smooth(feats, torch.full((5,), 9.0), epoch=3) is feats


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_smooth_keeps_the_feature_dtype_and_computes_in_float32_or_more(device, dtype):
    fds, g = trained_fds()
    fds = fds.to(device)
    labels = make_labels(AGE, 16, g).to(device)
    feats = make_features(labels.cpu(), 6, g).to(device)
    out = fds.smooth(feats.to(dtype), labels, epoch=3)
    assert out.dtype == dtype
    expected = fds.smooth(feats.to(dtype).float(), labels, epoch=3)
    torch.testing.assert_close(out.float(), expected.to(dtype).float())


def test_low_precision_statistics_are_accumulated_in_float32_or_more():
    g = torch.Generator().manual_seed(6)
    labels = make_labels(AGE, 400, g)
    feats = make_features(labels, 6, g).to(torch.bfloat16)
    a, b = FDS(6, **AGE), FDS(6, **AGE)
    a.update_running_stats(feats, labels, 0)
    b.update_running_stats(feats.float(), labels, 0)
    assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)


def test_zero_variance_dimensions_and_buckets_are_left_unchanged():
    fds = FDS(3, **AGE)
    with torch.no_grad():
        fds.running_mean_last_epoch.fill_(1.0)
        fds.running_var_last_epoch.fill_(2.0)
        fds.running_var_last_epoch[0, 1] = 0.0       # one dimension of bucket 0
        fds.running_var_last_epoch[1] = 1e-12        # all of bucket 1: sum below 1e-10
        fds.smoothed_mean_last_epoch.fill_(3.0)
        fds.smoothed_var_last_epoch.fill_(8.0)
    feats = torch.tensor([[5.0, 5.0, 5.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]])
    out = fds.smooth(feats, torch.tensor([2.0, 3.0, 4.0]), epoch=1)
    # (5 - 1) * sqrt(clamp(8 / 2)) + 3 = 11 where calibrated.
    assert out.tolist() == [[11.0, 5.0, 11.0], [5.0, 5.0, 5.0], [11.0, 11.0, 11.0]]


def test_cached_calibration_follows_every_change_of_the_statistics():
    fds, g = trained_fds()
    labels = make_labels(AGE, 30, g)
    feats = make_features(labels, 6, g)

    def fresh_result():
        twin = FDS(6, **AGE)
        twin.load_state_dict(fds.state_dict())
        return twin.smooth(feats, labels, epoch=3)

    first = fds.smooth(feats, labels, epoch=3)
    assert torch.equal(first, fresh_result())
    with torch.no_grad():
        fds.smoothed_mean_last_epoch.add_(1.0)  # an in-place edit
    assert torch.equal(fds.smooth(feats, labels, epoch=3), fresh_result())
    assert not torch.equal(fds.smooth(feats, labels, epoch=3), first)
    fds.update_last_epoch_stats(3)  # a new last-epoch copy
    assert torch.equal(fds.smooth(feats, labels, epoch=4), fresh_result())
    other = FDS(6, **AGE)
    fds.load_state_dict(other.state_dict())  # a load
    assert torch.equal(fds.smooth(feats, labels, epoch=4), feats)


def test_labels_outside_the_bucket_range_use_the_edge_buckets():
    fds, g = trained_fds()
    feats = torch.randn(4, 6, generator=g)
    out = fds.smooth(feats, torch.tensor([0.0, 1.0, 11.0, 40.0]), epoch=3)
    edge = fds.smooth(feats, torch.tensor([2.0, 2.0, 11.0, 11.0]), epoch=3)
    assert torch.equal(out, edge)


def test_one_sample_and_all_equal_labels():
    fds = FDS(4, **AGE)
    fds.update_running_stats(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([5.0]), 0)
    assert fds.running_mean[3].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert fds.running_var[3].tolist() == [0.0, 0.0, 0.0, 0.0]  # biased variance of one sample
    assert fds.running_var[4].tolist() == [1.0] * 4              # untouched buckets keep their values
    feats = torch.randn(10, 4)
    fds.update_running_stats(feats, torch.full((10, 1), 9.0), 1)
    torch.testing.assert_close(fds.running_mean[7], 0.1 * feats.mean(0))


def test_bucket_statistics_equal_a_loop():
    g = torch.Generator().manual_seed(7)
    labels = make_labels(STS, 120, g)
    feats = make_features(labels, 5, g)
    fds = FDS(5, **STS)
    counts, sums, sq = fds.bucket_statistics(feats, labels[:, None])
    ref = RefFDS(5, faithful=False, **STS)
    buckets = [ref.bucket(y) for y in labels.tolist()]
    for b in range(50):
        rows = [i for i, bi in enumerate(buckets) if bi == b]
        assert counts[b].item() == len(rows)
        close(sums[b], feats[rows].double().sum(0), 1e-6)
        close(sq[b], (feats[rows].double() ** 2).sum(0), 1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(N, 4\).*\(3, 5\)"):
        FDS(4, **AGE).smooth(torch.zeros(3, 5), torch.zeros(3), epoch=2)
    with pytest.raises(ValueError, match=r"\(3,\) or \(3, 1\).*\(2,\)"):
        FDS(4, **AGE).update_running_stats(torch.zeros(3, 4), torch.zeros(2), 0)
    with pytest.raises(ValueError, match=r"odd.*4"):
        FDS(4, ks=4)
    with pytest.raises(ValueError, match=r"'box'.*gaussian"):
        FDS(4, kernel="box")
    with pytest.raises(ValueError, match="bucket_start"):
        FDS(4, bucket_num=3, bucket_start=3)
    with pytest.raises(ValueError, match="reflect"):
        FDS(4, bucket_num=4, bucket_start=2, ks=5)
    with pytest.raises(ValueError, match=r"'imdb'.*\['age', 'sts_b'\]"):
        FDS(4, binning="imdb")
    with pytest.raises(ValueError, match="clip"):
        FDS(4, clip_min=2.0, clip_max=1.0)


# ----------------------------------------------------------------------------- the variance clip

@pytest.mark.parametrize("setting", [AGE, STS], ids=["age", "sts_b"])
def test_variance_ratio_is_clipped_at_both_ends(setting):
    """Ratios var_smooth / var of 0.01 and 100 fall outside both settings' ranges (age (0.1, 10),
    STS-B (0.5, 2)) and are clipped to them; 1.21 lies inside both and is kept. With mu = 1 and
    mu_smooth = 3, a feature of 5 becomes (5 - 1) * sqrt(ratio) + 3."""
    fds = FDS(3, **setting)
    with torch.no_grad():
        fds.running_mean_last_epoch.fill_(1.0)
        fds.smoothed_mean_last_epoch.fill_(3.0)
        fds.running_var_last_epoch.fill_(4.0)
        fds.smoothed_var_last_epoch.copy_(torch.tensor([0.04, 400.0, 4.84]).expand_as(fds.smoothed_var_last_epoch))
    label = torch.tensor([0.15 if setting["binning"] == "sts_b" else setting["bucket_start"] + 1.0])  # bucket 1
    out = fds.smooth(torch.full((1, 3), 5.0), label, epoch=1)
    low, high = setting["clip_min"], setting["clip_max"]
    expected = [4 * low ** 0.5 + 3, 4 * high ** 0.5 + 3, 4 * 1.1 + 3]
    torch.testing.assert_close(out[0], torch.tensor(expected), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- the head's routing

@pytest.mark.parametrize("faithful", [True, False], ids=["faithful", "fixed"])
def test_head_routes_smoothed_features_to_the_regressor_and_the_configured_ones_to_ranksim(faithful):
    """SPEC 4 and 2.3 step 7: the regressor always sees the calibrated features; the features the
    head returns (those RankSim and the statistics pass use) are the calibrated ones in faithful
    mode and the encoder's own in fixed mode. In eval mode nothing is calibrated."""
    from ranksim.models.head import RegressionHead

    fds, g = trained_fds(faithful=faithful)
    head = RegressionHead(6, fds).train()
    labels = make_labels(AGE, 12, g)
    z = make_features(labels, 6, g)
    smoothed = fds.smooth(z, labels, epoch=3)
    assert not torch.allclose(smoothed, z)
    pred, returned = head(z, labels, 3)
    torch.testing.assert_close(pred, smoothed @ head.linear.weight.T + head.linear.bias)
    assert torch.equal(returned, smoothed if faithful else z)
    head.eval()
    pred, returned = head(z, labels, 3)
    assert torch.equal(returned, z)
    torch.testing.assert_close(pred, z @ head.linear.weight.T + head.linear.bias)
