"""Worker for tests/test_distributed.py, launched as ``torchrun --nproc_per_node=2 tests/ddp_checks.py CHECK OUT``.

Each process writes what it computed to ``OUT/rank<R>.pt``; the test compares the ranks with each
other and with the single-process computation on the concatenated data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ranksim.distributed import all_reduce_sum, cleanup, get_rank, shard_indices  # noqa: E402
from ranksim.methods.fds import FDS  # noqa: E402
from ranksim.methods.regularizer import gathered_ranking_regularizer  # noqa: E402


def data(seed: int = 0):
    """The same global data on every process: 300 samples, 16-d features, labels 0..39 (age)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(300, 16, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 40, (300,), generator=g).double()
    return features, labels


def check_fds(out: Path) -> None:
    """Three epochs of FDS statistics from this process's shard, all-reduced (as engine.update_fds)."""
    fds = FDS(16, bucket_num=40, bucket_start=0, start_update=0)
    features, labels = data()
    shard = list(shard_indices(len(labels)))
    for epoch in range(3):
        totals = fds.bucket_statistics(features[shard] * (epoch + 1), labels[shard])
        totals = tuple(all_reduce_sum(t) for t in totals)
        fds.update_last_epoch_stats(epoch)
        fds.update_from_totals(*totals, epoch)
    torch.save(fds.state_dict(), out / f"rank{get_rank()}.pt")


def check_faithful_fds_buffers(out: Path, data_root: str) -> None:
    """One epoch and a faithful (train-mode) FDS pass of the tiny quick-start run; saves every
    module buffer (BatchNorm running statistics included) as it is when validation starts."""
    from ranksim.config import load_config
    from ranksim.engine.loop import Trainer
    from tiny import TINY

    repo = Path(__file__).resolve().parent.parent
    cfg = load_config(repo / "configs/quickstart/fds.yaml", [*TINY, f"data.root={data_root}", "method.faithful=true"])
    trainer = Trainer(cfg, None, torch.device("cpu"))
    trainer.train_epoch(0)
    trainer.update_fds(0)
    torch.save({k: v.clone() for k, v in trainer.module.named_buffers()}, out / f"rank{get_rank()}.pt")


def check_ranksim(out: Path) -> None:
    """Gathered RankSim on this process's half of a 64-sample batch: value and local gradient."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(64, 8, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 30, (64, 1), generator=g).double()  # ties: de-duplication matters
    rank = get_rank()
    local = slice(rank * 32, (rank + 1) * 32)
    mine = features[local].clone().requires_grad_(True)
    generator = torch.Generator().manual_seed(7)
    loss = gathered_ranking_regularizer(mine, targets[local], 2.0, generator=generator)
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": mine.grad, "slice": (local.start, local.stop)},
               out / f"rank{rank}.pt")


def bmc_conr_batch(seed: int = 2):
    """The global batch of the BMC and ConR checks: 24 inputs (8-d), labels 0..9 with ties, weights,
    a linear model's start, and ConR's two views of each input (features 6-d, predictions)."""
    g = torch.Generator().manual_seed(seed)
    batch = {"x": torch.randn(24, 8, generator=g, dtype=torch.float64),
             "y": torch.randint(0, 10, (24, 1), generator=g).double(),
             "w": 0.5 + torch.rand(24, 1, generator=g, dtype=torch.float64),
             "weight": 0.3 * torch.randn(1, 8, generator=g, dtype=torch.float64),
             "views": torch.randn(2, 24, 6, generator=g, dtype=torch.float64),
             "view_preds": torch.randint(0, 10, (2, 24, 1), generator=g).double()}
    return batch


def check_bmc_conr(out: Path) -> None:
    """Gathered BMC and ConR on this process's half of a 24-sample batch, as ranksim.engine.loop runs
    them: the loss times N through backward under DDP, sigma's gradient all-reduced and divided by
    N twice. Saves the values, the model's and sigma's gradients and the local features' gradient."""
    from torch.nn.parallel import DistributedDataParallel

    from ranksim.methods.balanced_mse import BalancedMSELoss
    from ranksim.methods.conr import gathered_conr_loss
    from ranksim.distributed import get_world_size

    b = bmc_conr_batch()
    rank, world = get_rank(), get_world_size()
    local = slice(rank * 12, (rank + 1) * 12)
    model = torch.nn.Linear(8, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(b["weight"])
    ddp = DistributedDataParallel(model)
    bmc = BalancedMSELoss("bmc", 3.0).double()
    assert bmc.gathers_batch
    loss = bmc(ddp(b["x"][local]), b["y"][local], b["w"][local])
    (world * loss).backward()
    all_reduce_sum(bmc.noise_sigma.grad).div_(world * world)
    # ConR: this process's views in the engine's layout, view 1 of its samples, then view 2.
    features = torch.cat([b["views"][0, local], b["views"][1, local]]).clone().requires_grad_(True)
    conr = gathered_conr_loss(features, b["y"][local].repeat(2, 1),
                              torch.cat([b["view_preds"][0, local], b["view_preds"][1, local]]),
                              b["w"][local].repeat(2, 1), threshold=1.0, temperature=0.5, push=0.01, faithful=True)
    conr.backward()
    torch.save({"bmc": loss.detach(), "weight_grad": model.weight.grad, "sigma_grad": bmc.noise_sigma.grad,
                "conr": conr.detach(), "features_grad": features.grad, "slice": (local.start, local.stop)},
               out / f"rank{rank}.pt")


if __name__ == "__main__":
    check, out, extra = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    dist.init_process_group("gloo")
    {"fds": check_fds, "ranksim": check_ranksim, "faithful_fds_buffers": check_faithful_fds_buffers,
     "bmc_conr": check_bmc_conr}[check](out, *extra)
    cleanup(finished=True)
