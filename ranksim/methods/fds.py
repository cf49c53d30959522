"""Feature Distribution Smoothing (FDS) (SPEC 4).

Paper: Yang, Zha, Chen, Wang, Katabi, "Delving into Deep Imbalanced Regression", ICML 2021
(arXiv 2102.09554); combined with RankSim in Gong et al., ICML 2022 (arXiv 2205.15236).

:class:`FDS` keeps, per label bucket ``b``, running statistics (mean ``mu_b`` and variance
``var_b``, each ``(D,)``) of the encoder features, smooths them along the bucket axis with a
symmetric kernel, and during training calibrates each feature ``z`` of bucket ``b``:

    z' = (z - mu_b) * sqrt(clamp(var_smooth_b / var_b, clip_min, clip_max)) + mu_smooth_b

Shapes: features ``(N, D)`` with ``D = feature_dim``; labels ``(N,)`` or ``(N, 1)``; the
statistics buffers are ``(K, D)`` with ``K = bucket_num - bucket_start`` buckets.

Use in a training loop (``e`` is the 0-based epoch)::

    z = encoder(x)
    if model.training:
        z_s = fds.smooth(z, y, e)             # out of place; identity while e < start_smooth
    ...
    # after the training epoch, for e >= start_update:
    feats, labels = <encode the training set without gradients>
    fds.update_last_epoch_stats(e)            # acts when e == stored_epoch + 1
    fds.update_running_stats(feats, labels, e)

which is the authors' order: at the end of epoch ``e`` the "last epoch" statistics take the
running statistics of epoch ``e - 1`` (then the running statistics absorb epoch ``e``), and
epoch ``e + 1`` is calibrated with them. As in their code, smoothing is the identity during epoch
``start_smooth`` when ``start_smooth == start_update + 1`` (the last-epoch buffers still hold
their initial zeros and ones).

Faithful and fixed behaviour (``faithful``, SPEC 4). The authors' FDS has three quirks:

1. Last-epoch statistics alias the running statistics. Their ``_update_last_epoch_stats`` assigns
   ``running_mean_last_epoch = running_mean`` and computes the smoothed statistics at that
   moment; ``update_running_stats`` then writes into ``running_mean`` in place, so the
   un-smoothed own-bucket statistics used by the calibration move on to include the epoch just
   encoded while the smoothed ones do not. Loading a checkpoint into a fresh module breaks the
   alias (two separate tensors) until the next ``update_last_epoch_stats``. Reproduced here when
   ``faithful=True``: while "aliased", :meth:`update_running_stats` also copies the new running
   statistics into the last-epoch buffers; ``load_state_dict`` ends the alias (any load: the
   authors' code would keep it only when loading into the very module that holds it, which a
   resumed run never does). The alias flag is therefore deliberately *not* a buffer. With
   ``faithful=False`` the statistics are copied.
2. Smoothing writes into the encoder's feature tensor, so RankSim and the statistics pass see the
   smoothed features. :meth:`smooth` here is always out of place; the *model* realises the
   quirk by returning the smoothed features when ``fds.faithful`` is true.
3. The end-of-epoch feature pass runs in train mode (BatchNorm batch statistics and buffer
   updates, dropout, training augmentation). The *training loop* realises this quirk; with
   ``faithful=False`` it runs the pass in eval mode on un-augmented images.

Other decisions:

- Buckets use the plain clamp of :func:`ranksim.methods.binning.fds_buckets`; the authors' age code
  clamps only when the edge label itself is present in the batch.
- Buckets with no sample in an update keep their running values (the authors' loop skips them);
  with ``binning='sts_b'`` they are then filled from their neighbours, in ascending order as in the
  authors' loop (first copies second, last copies the one before, others the mean of the two
  neighbours, where the left one may already have been filled).
- Per-bucket sums are accumulated in float64 (float32 on MPS) whatever the feature dtype, so that
  mean and unbiased variance from ``(count, sum, sum of squares)`` do not cancel badly; the
  buffers are float32. :meth:`bucket_statistics` exposes the sums so that a multi-GPU version can
  all-reduce them before :meth:`update_from_totals`, which keeps the stale-epoch guard.
- Calibration leaves a dimension unchanged where ``var_b <= 0`` (the authors' age code tests
  ``== 0``, their STS-B code ``<= 0``; variances are never negative here), and a whole bucket
  unchanged when ``sum(var_b) < 1e-10``.
- :meth:`smooth` applies the calibration as ``z * scale_b + offset_b`` with per-bucket tables
  (``offset = mu_smooth - mu * scale``) computed once per change of the last-epoch buffers; it
  differs from ``(z - mu) * scale + mu_smooth`` only by float rounding.
- The FDS kernel is computed in float64 and stored in float32 (the authors compute the gaussian
  one in float32); it is a non-persistent buffer, since it follows from the constructor arguments.
- ``momentum=None`` gives the authors' cumulative average ``1 - n / num_samples_tracked``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from ranksim.methods.binning import check_binning, fds_buckets
from ranksim.methods.lds import kernel_window

log = logging.getLogger(__name__)

# Rows are cast to float64 and squared in one reused buffer of this many elements (4 MiB): it
# stays in cache, and no float64 copy of the whole feature matrix is ever made (on CPU a fresh
# 100 MB temporary costs more in page faults than the sums themselves). Float32 partial sums
# would be a little faster but lose about 1e-5 of a variance to cancellation when the mean of a
# bucket is several standard deviations away from zero.
_CHUNK_ELEMENTS = 1 << 19


def _wide_dtype(device: torch.device) -> torch.dtype:
    # float64 for sums and the fill matrix, except on MPS, which has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _end_alias_on_load(module: "FDS", incompatible_keys) -> None:
    # A state_dict load gives the last-epoch buffers their own values, as a resumed run of the
    # authors' code gets two separate tensors: the faithful alias is over until the next update.
    module._last_epoch_aliased = False


class FDS(nn.Module):
    """Feature Distribution Smoothing; see the module docstring for the method and the quirks.

    Yang, Zha, Chen, Wang, Katabi, "Delving into Deep Imbalanced Regression", ICML 2021
    (arXiv 2102.09554). :meth:`smooth` takes features ``(N, D)`` and labels ``(N,)`` or ``(N, 1)``
    and returns calibrated ``(N, D)`` features; :meth:`update_running_stats` takes the features
    ``(N, D)`` and labels of the whole training set after each epoch. The paper's settings are
    the defaults (gaussian, ``ks = 5``, ``sigma = 2``, momentum 0.9) with, on STS-B-DIR,
    ``bucket_num=50, bucket_start=0, clip_min=0.5, clip_max=2, binning='sts_b'``.

    Args:
        feature_dim: ``D``, the size of the features.
        bucket_num, bucket_start: buckets are the label bins ``bucket_start .. bucket_num - 1``
            (age: 100 and 3 for AgeDB-DIR, 0 for IMDB-WIKI-DIR; STS-B: 50 and 0).
        start_update: first epoch whose features update the running statistics.
        start_smooth: first epoch in which :meth:`smooth` calibrates.
        kernel, ks, sigma: smoothing window along the bucket axis (sum-normalised).
        momentum: ``running = (1 - m) * current + m * running``; ``None`` for a cumulative mean.
        clip_min, clip_max: clip range of the variance ratio (age 0.1, 10; STS-B 0.5, 2).
        binning: ``'age'`` or ``'sts_b'`` (STS-B also fills empty buckets from neighbours).
        faithful: reproduce the authors' aliasing of last-epoch and running statistics.
    """

    def __init__(self, feature_dim: int, bucket_num: int = 100, bucket_start: int = 3,
                 start_update: int = 0, start_smooth: int = 1, kernel: str = "gaussian", ks: int = 5,
                 sigma: float = 2, momentum: float | None = 0.9, clip_min: float = 0.1,
                 clip_max: float = 10.0, binning: str = "age", faithful: bool = False):
        super().__init__()
        check_binning(binning)
        if int(feature_dim) != feature_dim or feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer, got {feature_dim!r}")
        if not 0 <= bucket_start < bucket_num:
            raise ValueError(f"need 0 <= bucket_start < bucket_num, got bucket_start={bucket_start}, "
                             f"bucket_num={bucket_num}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        if not 0.0 < clip_min <= clip_max:
            raise ValueError(f"need 0 < clip_min <= clip_max, got clip_min={clip_min}, clip_max={clip_max}")
        window = kernel_window(kernel, ks, sigma, normalise="sum")
        num_buckets = bucket_num - bucket_start
        half = (ks - 1) // 2
        if half >= num_buckets:
            raise ValueError(f"reflect padding of (ks - 1) / 2 = {half} needs more than {half} buckets, "
                             f"got {num_buckets} (bucket_num={bucket_num}, bucket_start={bucket_start})")
        if binning == "sts_b" and num_buckets < 2:
            raise ValueError(f"STS-B neighbour filling needs at least 2 buckets, got {num_buckets}")

        self.feature_dim = int(feature_dim)
        self.bucket_num = int(bucket_num)
        self.bucket_start = int(bucket_start)
        self.num_buckets = num_buckets
        self.start_update = int(start_update)
        self.start_smooth = int(start_smooth)
        self.kernel, self.ks, self.sigma = kernel, int(ks), sigma
        self.half_ks = half
        self.momentum = momentum
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        self.binning = binning
        self.faithful = bool(faithful)

        shape = (num_buckets, self.feature_dim)
        # The epoch whose running statistics the last-epoch buffers hold (the authors' `epoch`).
        self.register_buffer("stored_epoch", torch.tensor(self.start_update, dtype=torch.long))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("running_mean_last_epoch", torch.zeros(shape))
        self.register_buffer("running_var_last_epoch", torch.ones(shape))
        self.register_buffer("smoothed_mean_last_epoch", torch.zeros(shape))
        self.register_buffer("smoothed_var_last_epoch", torch.ones(shape))
        # float32 as the authors (and MPS) have it: exact up to 2**24 samples in one bucket over
        # all epochs, far beyond IMDB-WIKI-DIR's largest age (about 7,000 samples x 90 epochs).
        self.register_buffer("num_samples_tracked", torch.zeros(num_buckets))
        self.register_buffer("kernel_window", torch.tensor(window, dtype=torch.float32), persistent=False)
        self._last_epoch_aliased = False
        self._calibration_cache = None
        self.register_load_state_dict_post_hook(_end_alias_on_load)

    def extra_repr(self) -> str:
        return (f"feature_dim={self.feature_dim}, buckets={self.bucket_start}..{self.bucket_num - 1}, "
                f"binning={self.binning!r}, kernel={self.kernel!r}, ks={self.ks}, sigma={self.sigma}, "
                f"momentum={self.momentum}, clip=({self.clip_min}, {self.clip_max}), "
                f"start_update={self.start_update}, start_smooth={self.start_smooth}, "
                f"faithful={self.faithful}")

    # ------------------------------------------------------------------ helpers

    def _check(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Validate shapes; return the ``(N,)`` bucket of each sample on the buffers' device."""
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must have shape (N, {self.feature_dim}), got {tuple(features.shape)}")
        n = features.shape[0]
        if not (labels.dim() == 1 or (labels.dim() == 2 and labels.shape[1] == 1)) or labels.shape[0] != n:
            raise ValueError(f"labels must have shape ({n},) or ({n}, 1) to match features of shape "
                             f"{tuple(features.shape)}, got {tuple(labels.shape)}")
        buckets = fds_buckets(labels.reshape(n), self.bucket_num, self.bucket_start, self.binning)
        return buckets.to(self.running_mean.device)

    def bucket_index(self, labels: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bucket of each label in ``[0, K - 1]`` (plain clamp, see the module docstring)."""
        return fds_buckets(labels.reshape(-1), self.bucket_num, self.bucket_start, self.binning)

    def _smooth_along_buckets(self, stats: torch.Tensor) -> torch.Tensor:
        """Convolve ``(K, D)`` statistics with the kernel along K, with reflect padding."""
        x = stats.T.unsqueeze(1)  # (D, 1, K): conv1d runs along the last axis
        if self.half_ks:
            x = F.pad(x, (self.half_ks, self.half_ks), mode="reflect")
        out = F.conv1d(x, self.kernel_window.to(x.dtype).view(1, 1, -1))
        return out.squeeze(1).T.contiguous()

    def _neighbour_fill_matrix(self, empty: torch.Tensor) -> torch.Tensor:
        """``(K, K)`` matrix ``M`` (float64, float32 on MPS) with ``filled = M @ stats`` (STS-B rule).

        The authors' sequential loop is the linear recurrence ``x_k = a_k x_{k-1} + b_k``, with
        ``a_k = 0.5`` and ``b_k = stats_{k+1} / 2`` for an empty inner bucket, ``a = 1, b = 0`` for
        an empty last bucket, ``a = 0, b = stats_1`` for an empty first bucket and
        ``a = 0, b = stats_k`` for a bucket with samples. Unrolled, ``x = W @ b`` with
        ``W[k, j] = prod_{j < i <= k} a_i``, which is 0 once some ``a_i`` is 0 and otherwise
        ``0.5 ** (number of halves)``: two cumulative sums, no loop over buckets.
        """
        k = self.num_buckets
        idx = torch.arange(k, device=empty.device)
        inner = empty & (idx > 0) & (idx < k - 1)
        last = empty & (idx == k - 1)
        wide = _wide_dtype(empty.device)
        a = torch.where(inner, 0.5, torch.where(last, 1.0, 0.0)).to(wide)
        zeros_so_far = torch.cumsum(a == 0, 0)
        halves_so_far = torch.cumsum(a == 0.5, 0)
        same_run = (idx[:, None] >= idx[None, :]) & (zeros_so_far[:, None] == zeros_so_far[None, :])
        w = torch.where(same_run, torch.pow(0.5, (halves_so_far[:, None] - halves_so_far[None, :]).to(wide)),
                        torch.zeros((), dtype=wide, device=empty.device))
        source = torch.diag((~empty).to(wide))
        source[0, 1] += float(empty[0])  # empty first bucket copies the second
        nxt = idx[1:k - 1]
        source[nxt, nxt + 1] += 0.5 * inner[1:k - 1].to(wide)
        return w @ source

    # ------------------------------------------------------------------ statistics

    @torch.no_grad()
    def bucket_statistics(self, features: torch.Tensor, labels: torch.Tensor):
        """Per-bucket ``(counts (K,), sums (K, D), sq_sums (K, D))``, float64 (float32 on MPS).

        ``features`` ``(N, D)`` (moved to the buffers' device chunk by chunk), ``labels`` ``(N,)``
        or ``(N, 1)``. Summed with ``index_add_`` over row chunks: no loop over labels or buckets.
        """
        buckets = self._check(features, labels)
        device = self.running_mean.device
        acc = _wide_dtype(device)
        k, d, n = self.num_buckets, self.feature_dim, features.shape[0]
        counts = torch.bincount(buckets, minlength=k).to(acc)
        sums = torch.zeros(k, d, dtype=acc, device=device)
        sq_sums = torch.zeros(k, d, dtype=acc, device=device)
        rows = max(1, min(n, _CHUNK_ELEMENTS // d))
        buffer = torch.empty(rows, d, dtype=acc, device=device)
        for start in range(0, n, rows):
            chunk = features[start:start + rows]
            work = buffer[:chunk.shape[0]]
            work.copy_(chunk)
            idx = buckets[start:start + rows]
            sums.index_add_(0, idx, work)
            sq_sums.index_add_(0, idx, work.square_())
        return counts, sums, sq_sums

    @torch.no_grad()
    def update_from_totals(self, counts: torch.Tensor, sums: torch.Tensor, sq_sums: torch.Tensor,
                           epoch: int) -> bool:
        """Fold per-bucket totals of epoch ``epoch`` into the running statistics; the one public way
        to update them from totals (a training loop that all-reduces :meth:`bucket_statistics`
        over processes calls this with the sums).

        Applies the stale-epoch guard of :meth:`update_running_stats`: totals of an epoch older
        than ``stored_epoch`` are ignored, as in the authors' code. This matters when the module
        starts from another run's buffers: RRT stage 2 loads stage 1's FDS at its best epoch ``b``
        and must leave the statistics alone until its own epoch ``b``. Returns whether it updated.
        """
        if epoch < int(self.stored_epoch):
            log.debug("FDS: ignored epoch %d statistics (older than stored epoch %d)", epoch, int(self.stored_epoch))
            return False
        self._fold_totals(counts, sums, sq_sums, epoch)
        return True

    @torch.no_grad()
    def _fold_totals(self, counts: torch.Tensor, sums: torch.Tensor, sq_sums: torch.Tensor, epoch: int) -> None:
        """Fold per-bucket sums into the running statistics of epoch ``epoch`` (no guard)."""
        counts = counts.to(sums.dtype)  # all-reduced counts may arrive as integers
        present = counts > 0
        n = counts[:, None]
        mean = sums / n.clamp(min=1)
        # Unbiased variance, biased (0) for a single sample, as torch.var(unbiased=n > 1).
        var = (sq_sums - sums * mean).clamp_(min=0) / (n - 1).clamp(min=1)

        self.num_samples_tracked += counts.to(self.num_samples_tracked.dtype)
        if epoch == self.start_update:
            factor = torch.zeros_like(n)
        elif self.momentum is None:
            tracked = self.num_samples_tracked.to(n.dtype)[:, None]
            factor = 1 - n / tracked.clamp(min=1)
        else:
            factor = torch.full_like(n, self.momentum)
        keep = ~present[:, None]
        for running, current in ((self.running_mean, mean), (self.running_var, var)):
            blended = (1 - factor) * current + factor * running.to(current.dtype)
            running.copy_(torch.where(keep, running, blended.to(running.dtype)))

        if self.binning == "sts_b" and not bool(present.all()):
            fill = self._neighbour_fill_matrix(~present)
            for running in (self.running_mean, self.running_var):
                filled = (fill @ running.to(fill.dtype)).to(running.dtype)
                running.copy_(torch.where(keep, filled, running))

        if self._last_epoch_aliased:
            self.running_mean_last_epoch.copy_(self.running_mean)
            self.running_var_last_epoch.copy_(self.running_var)

    @torch.no_grad()
    def update_running_stats(self, features: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
        """Update the running statistics with the features of the whole training set.

        Args:
            features: ``(N, D)`` features of the training set (any float dtype; moved to the
                buffers' device).
            labels: ``(N,)`` or ``(N, 1)`` labels.
            epoch: the epoch they were computed in. Ignored if older than ``stored_epoch``. At
                ``epoch == start_update`` the current statistics replace the running ones.
        """
        if epoch < int(self.stored_epoch):
            return
        counts, sums, sq_sums = self.bucket_statistics(features, labels)
        self._fold_totals(counts, sums, sq_sums, epoch)
        log.debug("FDS: updated running statistics with epoch %d features", epoch)

    @torch.no_grad()
    def update_last_epoch_stats(self, epoch: int) -> bool:
        """If ``epoch == stored_epoch + 1``, take the running statistics as last-epoch statistics
        and smooth them along the buckets; returns whether it did."""
        if epoch != int(self.stored_epoch) + 1:
            return False
        self.stored_epoch.add_(1)
        self.running_mean_last_epoch.copy_(self.running_mean)
        self.running_var_last_epoch.copy_(self.running_var)
        self.smoothed_mean_last_epoch.copy_(self._smooth_along_buckets(self.running_mean))
        self.smoothed_var_last_epoch.copy_(self._smooth_along_buckets(self.running_var))
        self._last_epoch_aliased = self.faithful
        log.debug("FDS: updated smoothed last-epoch statistics at epoch %d", epoch)
        return True

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the freshly constructed state."""
        self.stored_epoch.fill_(self.start_update)
        for name in ("running_mean", "running_mean_last_epoch", "smoothed_mean_last_epoch",
                     "num_samples_tracked"):
            getattr(self, name).zero_()
        for name in ("running_var", "running_var_last_epoch", "smoothed_var_last_epoch"):
            getattr(self, name).fill_(1)
        self._last_epoch_aliased = False

    # ------------------------------------------------------------------ calibration

    def _calibration(self, dtype: torch.dtype):
        """Per-bucket ``(scale, offset)``, each ``(K, D)``, so that ``z' = z * scale + offset``.

        ``scale = sqrt(clamp(var_smooth / var, clip))`` and ``offset = mu_smooth - mu * scale``
        where the calibration applies, and ``(1, 0)`` (the identity) where it leaves a dimension or
        a whole bucket unchanged. Cached until one of the four last-epoch buffers changes (any
        in-place write bumps its version; a move to another device replaces it).
        """
        buffers = (self.running_mean_last_epoch, self.running_var_last_epoch,
                   self.smoothed_mean_last_epoch, self.smoothed_var_last_epoch)
        key = (dtype,) + tuple((t.data_ptr(), t._version) for t in buffers)
        if self._calibration_cache is not None and self._calibration_cache[0] == key:
            return self._calibration_cache[1]
        with torch.no_grad():
            m1, v1, m2, v2 = (t.to(dtype) for t in buffers)
            valid = (v1 > 0) & (v1.sum(dim=1, keepdim=True) >= 1e-10)
            one = torch.ones_like(v1)
            ratio = v2 / torch.where(valid, v1, one)
            scale = torch.where(valid, ratio.clamp_(self.clip_min, self.clip_max).sqrt_(), one)
            offset = torch.where(valid, m2 - m1 * scale, torch.zeros_like(m1))
        self._calibration_cache = (key, (scale, offset))
        return scale, offset

    def smooth(self, features: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        """Calibrated features (SPEC 4); call it in training mode only.

        Args:
            features: ``(N, D)`` encoder features, any float dtype; gradients flow through.
            labels: ``(N,)`` or ``(N, 1)``.
            epoch: current epoch; before ``start_smooth`` the features are returned unchanged.

        Returns:
            A new ``(N, D)`` tensor in ``features``' dtype (computed in at least float32); the
            input is never written to.
        """
        if epoch < self.start_smooth:
            return features
        buckets = self._check(features, labels).to(features.device)
        dtype = torch.promote_types(features.dtype, torch.float32)
        scale, offset = self._calibration(dtype)
        out = torch.addcmul(offset.index_select(0, buckets), features.to(dtype), scale.index_select(0, buckets))
        return out.to(features.dtype)
