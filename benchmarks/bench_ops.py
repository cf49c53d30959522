"""Speed of the vectorised RankSim and FDS against the per-row / per-label loops they replace.

    python benchmarks/bench_ops.py [--repeats 15] [--threads N]

Prints, for feature size 2048:

- RankSim forward+backward for batches of 64, 256 and 1024 samples, with all labels distinct and
  AgeDB-like (integer ages, about 90 distinct in 256): our time, the time of the authors'
  formulation (de-duplication by a loop over labels, one blackbox ranking per row, ranks by
  argsort of argsort), their ratio, and our time over the "unavoidable" part alone (normalise the
  kept features, ``x_hat @ x_hat.T`` forward and backward, through autograd as the brief defines
  it), and also over our own cosine-similarity part (which saves one of autograd's three
  matmuls), so that the cost of the ranking itself stays visible;
- FDS ``smooth`` (batch 256) and ``update_running_stats`` (12,208 samples, 100 buckets) against
  the authors' per-label loop;
- ConR forward+backward on the two views of a batch of 64 and of 256 (2 x 64 and 2 x 256 rows,
  AgeDB-like ages): the vectorised :func:`ranksim.methods.conr.conr_loss` against a loop over the anchors
  (``--only conr`` runs this part alone).

Each measurement is the minimum over ``--repeats`` rounds, and the candidates of a row are timed
in turn within each round, so load from other processes hits them alike. Targets (2-core CPU):
RankSim >= 5x the loop on the AgeDB-like batch of 256 and <= 1.3x the unavoidable part at 256
and 1024 distinct labels; FDS smooth and update >= 5x the loop.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranksim.methods.conr import conr_loss  # noqa: E402
from ranksim.methods.fds import FDS  # noqa: E402
from ranksim.methods.regularizer import CosineSimilarity, batchwise_ranking_regularizer  # noqa: E402

DIM = 2048
LAMBDA = 2.0


# ----------------------------------------------------------------------------- the loop forms

def loop_rank(seq: torch.Tensor) -> torch.Tensor:
    """(rank + 1) / n of a (1, n) row, descending, by argsort of argsort (the authors' form)."""
    return (torch.argsort(torch.argsort(seq).flip(1)) + 1).float() / seq.size(1)


class LoopRanker(torch.autograd.Function):
    @staticmethod
    def forward(ctx, seq, lam):
        rank = loop_rank(seq)
        ctx.lam = lam
        ctx.save_for_backward(seq, rank)
        return rank

    @staticmethod
    def backward(ctx, grad):
        seq, rank = ctx.saved_tensors
        rank_prime = loop_rank(seq + ctx.lam * grad)
        return -(rank - rank_prime) / (ctx.lam + 1e-8), None


def loop_ranksim(features, targets, lam):
    """SPEC 2.3 as the authors write it: a loop over labels, then a loop over rows."""
    unique = torch.unique(targets)
    if len(unique) < len(targets):
        picks = [random.choice((targets == t).nonzero()[:, 0]).item() for t in unique]
        features, targets = features[picks], targets[picks]
    x = F.normalize(features.view(features.size(0), -1))
    xxt = x @ x.T
    loss = 0
    for i in range(len(targets)):
        label_ranks = loop_rank(-torch.abs(targets[i] - targets).transpose(0, 1))
        feature_ranks = LoopRanker.apply(xxt[i].unsqueeze(0), lam)
        loss = loss + F.mse_loss(feature_ranks, label_ranks)
    return loss


def loop_calibrate(matrix, m1, v1, m2, v2, clip_min=0.1, clip_max=10.0):
    if torch.sum(v1) < 1e-10:
        return matrix
    if (v1 == 0.).any():
        valid = v1 != 0.
        factor = torch.clamp(v2[valid] / v1[valid], clip_min, clip_max)
        matrix[:, valid] = (matrix[:, valid] - m1[valid]) * torch.sqrt(factor) + m2[valid]
        return matrix
    return (matrix - m1) * torch.sqrt(torch.clamp(v2 / v1, clip_min, clip_max)) + m2


def loop_smooth(fds: FDS, features, labels):
    """The authors' per-label calibration loop (with the plain clamp), on a copy of the features."""
    features = features.clone()
    buckets = labels.long().clamp(fds.bucket_start, fds.bucket_num - 1) - fds.bucket_start
    for b in torch.unique(buckets):
        rows = buckets == b
        features[rows] = loop_calibrate(
            features[rows], fds.running_mean_last_epoch[b], fds.running_var_last_epoch[b],
            fds.smoothed_mean_last_epoch[b], fds.smoothed_var_last_epoch[b])
    return features


def loop_update(running_mean, running_var, features, labels, bucket_start, bucket_num, momentum=0.9):
    """The authors' per-label update of the running statistics."""
    buckets = labels.long().clamp(bucket_start, bucket_num - 1) - bucket_start
    for b in torch.unique(buckets):
        feats = features[buckets == b]
        mean = feats.mean(0)
        var = feats.var(0, unbiased=feats.size(0) != 1)
        running_mean[b] = (1 - momentum) * mean + momentum * running_mean[b]
        running_var[b] = (1 - momentum) * var + momentum * running_var[b]


# ----------------------------------------------------------------------------- timing

def best_of(repeats: int, fns: dict) -> dict:
    """Minimum wall time (ms) of each callable, the callables interleaved within each round."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], (time.perf_counter() - start) * 1e3)
    return times


def agedb_like_ages(n: int, rng: np.random.Generator) -> torch.Tensor:
    # Half around AgeDB's mean and spread (45 +- 16), half uniform over its 1..101 range: about
    # 90 distinct ages in 256 (real AgeDB-DIR training batches of 256 hold about 63).
    normal = np.clip(np.round(rng.normal(45, 16, n)), 1, 101)
    uniform = rng.integers(1, 102, n)
    return torch.from_numpy(np.where(rng.random(n) < 0.5, normal, uniform)).float()


def bench_ranksim(repeats: int) -> list:
    rng = np.random.default_rng(0)
    rows = []
    for batch in (64, 256, 1024):
        for kind in ("distinct", "agedb-like"):
            features = torch.randn(batch, DIM, generator=torch.Generator().manual_seed(batch))
            if kind == "distinct":
                targets = torch.from_numpy(rng.permutation(batch) * 0.5 + rng.random(batch) * 0.1).float()
            else:
                targets = agedb_like_ages(batch, rng)
            m = int(torch.unique(targets).numel())
            gen = torch.Generator().manual_seed(0)
            x = features.clone().requires_grad_(True)
            kept = features[:m].clone().requires_grad_(True)
            grad_s = torch.randn(m, m)

            def ours():
                x.grad = None
                batchwise_ranking_regularizer(x, targets[:, None], LAMBDA, generator=gen).backward()

            def loop():
                x.grad = None
                loop_ranksim(x, targets[:, None], LAMBDA).backward()

            def unavoidable():
                kept.grad = None
                x_hat = F.normalize(kept, dim=1)
                (x_hat @ x_hat.T).backward(grad_s)

            def cosine():
                kept.grad = None
                CosineSimilarity.apply(kept).backward(grad_s)

            # The loop takes about a second at 1024: fewer rounds for it there, not for the rest.
            t = best_of(repeats, {"ours": ours, "unavoidable": unavoidable, "cosine": cosine})
            t.update(best_of(repeats if batch < 1024 else 3, {"loop": loop}))
            rows.append((batch, kind, m, t["ours"], t["loop"], t["unavoidable"], t["cosine"]))
            print(f"  ranksim B={batch:5d} {kind:10s} m={m:5d}: ours {t['ours']:9.2f} ms  "
                  f"loop {t['loop']:9.2f} ms  unavoidable {t['unavoidable']:8.2f} ms  "
                  f"our cosine part {t['cosine']:8.2f} ms", flush=True)
    return rows


def trained_fds(rng: np.random.Generator) -> FDS:
    fds = FDS(DIM, bucket_num=100, bucket_start=3)
    for epoch in range(2):
        labels = agedb_like_ages(12208, rng)
        feats = torch.randn(12208, DIM) * 0.5 + labels[:, None] / 100
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(feats, labels, epoch)
    return fds


def bench_fds(repeats: int) -> list:
    rng = np.random.default_rng(1)
    fds = trained_fds(rng)
    rows = []

    labels = agedb_like_ages(256, rng)
    feats = torch.randn(256, DIM)
    assert torch.allclose(fds.smooth(feats, labels, 2), loop_smooth(fds, feats, labels), atol=1e-5)
    t = best_of(repeats, {"ours": lambda: fds.smooth(feats, labels, 2),
                          "loop": lambda: loop_smooth(fds, feats, labels)})
    rows.append(("FDS smooth", "batch 256", t["ours"], t["loop"]))
    print(f"  fds smooth  B=256:   ours {t['ours']:9.2f} ms  loop {t['loop']:9.2f} ms", flush=True)

    labels = agedb_like_ages(12208, rng)
    feats = torch.randn(12208, DIM) + labels[:, None] / 50
    k = fds.bucket_num - fds.bucket_start
    mean, var = torch.zeros(k, DIM), torch.ones(k, DIM)
    t = best_of(repeats, {
        "ours": lambda: fds.update_running_stats(feats, labels, 5),
        "loop": lambda: loop_update(mean, var, feats, labels, fds.bucket_start, fds.bucket_num)})
    rows.append(("FDS update_running_stats", "12,208 x 2048, 100 buckets", t["ours"], t["loop"]))
    print(f"  fds update  N=12208: ours {t['ours']:9.2f} ms  loop {t['loop']:9.2f} ms", flush=True)
    return rows


def loop_conr(features, targets, preds, weights, w=1.0, t=0.07, e=0.01):
    """ConR one anchor at a time (fixed denominator), as the formula of SPEC 9.2 reads."""
    q = F.normalize(features, dim=1)
    total = features.new_zeros(())
    for i in range(q.shape[0]):
        sim = q @ q[i] / t
        dist = (targets - targets[i]).abs()
        pos = dist <= w
        pos[i] = False
        neg = (dist > w) & ((preds - preds[i]).abs() <= w)
        if not pos.any() or not neg.any():
            continue
        denom = sim[pos].exp().sum() + (weights[i] * torch.exp(e * dist[neg]) * sim[neg].exp()).sum()
        total = total + weights[i] * (denom.log() - sim[pos]).mean()
    return total / q.shape[0]


def bench_conr(repeats: int) -> list:
    rng = np.random.default_rng(2)
    rows = []
    for batch in (64, 256):
        n = 2 * batch
        targets = agedb_like_ages(batch, rng).repeat(2)
        preds = targets + torch.from_numpy(rng.normal(0, 6, n)).float()
        weights = torch.ones(n)
        feats = torch.randn(n, DIM, requires_grad=True)
        ours = conr_loss(feats, targets, preds, weights)
        assert torch.allclose(ours, loop_conr(feats, targets, preds, weights), rtol=1e-4)

        def run(fn):
            feats.grad = None
            fn(feats, targets, preds, weights).backward()
        t = best_of(repeats, {"ours": lambda: run(conr_loss), "loop": lambda: run(loop_conr)})
        rows.append((f"2 x {batch}", t["ours"], t["loop"]))
        print(f"  conr  2x{batch}: ours {t['ours']:9.2f} ms  loop {t['loop']:9.2f} ms", flush=True)
    return rows


def print_conr(rows: list) -> None:
    print("\nConR forward+backward (ms), D = 2048")
    print(f"| {'rows':8} | {'ours':>8} | {'loop':>9} | {'loop/ours':>9} |")
    print(f"|{'-' * 10}|{'-' * 10}|{'-' * 11}|{'-' * 11}|")
    for size, ours, loop in rows:
        print(f"| {size:8} | {ours:8.2f} | {loop:9.2f} | {loop / ours:8.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timing rounds; the minimum is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--only", choices=("all", "conr"), default="all", help="run every benchmark or ConR's alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, feature size {DIM}, "
          f"min of {args.repeats} rounds\n")
    if args.only == "conr":
        print_conr(bench_conr(args.repeats))
        return
    ranksim_rows = bench_ranksim(args.repeats)
    fds_rows = bench_fds(args.repeats)

    print("\nRankSim forward+backward (ms). unavoid. = F.normalize + x_hat @ x_hat.T forward and backward"
          "\nthrough autograd (3 matmuls); own cos. = our CosineSimilarity alone (2 matmuls).")
    header = (f"| {'batch':>5} | {'labels':10} | {'kept m':>6} | {'ours':>8} | {'loop':>9} | {'loop/ours':>9} "
              f"| {'unavoid.':>8} | {'ours/unavoid.':>13} | {'own cos.':>8} | {'ours/own cos.':>13} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for batch, kind, m, ours, loop, unav, cos in ranksim_rows:
        print(f"| {batch:>5} | {kind:10} | {m:>6} | {ours:8.2f} | {loop:9.2f} | {loop / ours:8.1f}x "
              f"| {unav:8.2f} | {ours / unav:12.2f}x | {cos:8.2f} | {ours / cos:12.2f}x |")

    print("\nFDS (ms)")
    print(f"| {'operation':24} | {'size':26} | {'ours':>8} | {'loop':>9} | {'loop/ours':>9} |")
    print(f"|{'-' * 26}|{'-' * 28}|{'-' * 10}|{'-' * 11}|{'-' * 11}|")
    for name, size, ours, loop in fds_rows:
        print(f"| {name:24} | {size:26} | {ours:8.2f} | {loop:9.2f} | {loop / ours:8.1f}x |")

    print_conr(bench_conr(args.repeats))

    print("\nTargets")
    by_key = {(b, k): (ours, loop, unav) for b, k, _, ours, loop, unav, _ in ranksim_rows}
    agedb, d256, d1024 = by_key[(256, "agedb-like")], by_key[(256, "distinct")], by_key[(1024, "distinct")]
    checks = [
        ("RankSim >= 5x loop, AgeDB-like B=256", agedb[1] / agedb[0], 5.0, ">="),
        ("RankSim <= 1.3x unavoidable, distinct B=256", d256[0] / d256[2], 1.3, "<="),
        ("RankSim <= 1.3x unavoidable, distinct B=1024", d1024[0] / d1024[2], 1.3, "<="),
        ("FDS smooth >= 5x loop", fds_rows[0][3] / fds_rows[0][2], 5.0, ">="),
        ("FDS update_running_stats >= 5x loop", fds_rows[1][3] / fds_rows[1][2], 5.0, ">="),
    ]
    for name, value, target, op in checks:
        met = value >= target if op == ">=" else value <= target
        print(f"  {'met   ' if met else 'MISSED'} {name}: {value:.2f}x (target {op} {target}x)")


if __name__ == "__main__":
    main()
