"""What the training loop builds from the config: device and seeds, data loaders, the training
loss, the optimiser and the learning-rate schedulers (SPEC 8).

The learning-rate policy lives in two schedulers built together: the milestone decay, stepped by
:meth:`ranksim.engine.loop.Trainer.fit` at the end of each epoch, and the optional plateau decay
(``schedule.plateau_lr_factor``), stepped after each validation by
:meth:`ranksim.engine.loop.Trainer.validation_step`.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ranksim.config import Config
from ranksim.data.build import DataBundle
from ranksim.distributed import get_world_size, shard_indices
from ranksim.errors import UserError
from ranksim.methods.balanced_mse import BalancedMSELoss
from ranksim.methods.losses import get_loss


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but CUDA is not available; use device=cpu or device=auto")
    return device


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(cfg: Config, dataset, data: DataBundle, sampler=None, batch_size: int | None = None,
                persistent: bool = False) -> DataLoader:
    """A loader over ``dataset`` in order, or in ``sampler``'s order; ``batch_size`` is per process.

    ``persistent`` keeps the worker pool between passes (``data.persistent_workers`` permitting):
    only for the training loader, which is iterated every epoch. Loaders made for one pass
    (evaluation, the FDS statistics pass) must not leave a pool behind. Each loader has its own
    generator, so making or iterating one never draws from the global RNG.
    """
    d = cfg.data
    workers = d.num_workers
    extra = dict(persistent_workers=persistent and d.persistent_workers,
                 prefetch_factor=d.prefetch_factor) if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size or local_batch_size(cfg), sampler=sampler,
                      num_workers=workers, collate_fn=data.collate,
                      pin_memory=d.pin_memory and torch.cuda.is_available(), drop_last=False,
                      generator=torch.Generator().manual_seed(cfg.seed), **extra)


def local_batch_size(cfg: Config) -> int:
    """The config's global batch size divided across the processes."""
    world = get_world_size()
    if cfg.optim.batch_size % world:
        raise UserError(f"optim.batch_size={cfg.optim.batch_size} does not divide across {world} processes; "
                        f"use a multiple of {world}")
    return cfg.optim.batch_size // world


def sharded_loader(cfg: Config, dataset, data: DataBundle) -> DataLoader:
    """This process's unpadded strided share of ``dataset`` (see :func:`ranksim.distributed.shard_indices`)."""
    if get_world_size() > 1:
        dataset = Subset(dataset, list(shard_indices(len(dataset))))
    return make_loader(cfg, dataset, data)


def build_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


def build_schedulers(cfg: Config, optimizer: torch.optim.Optimizer):
    """The LR policy: ``(milestone decay, plateau decay or None)``.

    The milestone scheduler is stepped once per epoch; the plateau one after each validation,
    with the validation value, multiplying the LR by ``plateau_lr_factor`` whenever the value is
    not strictly below every earlier one (the same test as a new best).

    Groups marked ``fixed_lr`` (Balanced MSE's noise scale) keep their learning rate: the
    authors' schedule decays only the network's.
    """
    s = cfg.schedule
    milestones = MilestoneLR(optimizer, s.milestones, s.lr_gamma)
    plateau = None
    if s.plateau_lr_factor != 1.0:
        # A floor at a fixed group's own lr keeps the plateau decay off it.
        floors = [g["lr"] if g.get("fixed_lr") else 0.0 for g in optimizer.param_groups]
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=s.plateau_lr_factor, patience=0, threshold=0.0,
            threshold_mode="abs", cooldown=0, min_lr=floors, eps=0.0)
    return milestones, plateau


class MilestoneLR(torch.optim.lr_scheduler.MultiStepLR):
    """``MultiStepLR`` that leaves the parameter groups marked ``fixed_lr`` alone."""

    def get_lr(self):
        return [group["lr"] if group.get("fixed_lr") else lr
                for group, lr in zip(self.optimizer.param_groups, super().get_lr())]


# Losses with parameters or data of their own: name -> builder(method_config, train_labels,
# binning, target_scale) returning an nn.Module called as (pred, target, weights).
def _build_bmse(m, train_labels, binning: str, target_scale: float):
    lds = dict(lds=m.lds.enabled, lds_kernel=m.lds.kernel, lds_ks=m.lds.ks, lds_sigma=m.lds.sigma)
    return BalancedMSELoss(m.bmse.variant, m.bmse.init_noise_sigma, train_labels, binning=binning,
                           target_scale=target_scale, gmm_components=m.bmse.gmm_components, lds=lds)


STATEFUL_LOSSES: dict[str, Callable] = {"bmse": _build_bmse}


def build_loss(method, train_labels, binning: str = "age", target_scale: float = 1.0) -> Callable[..., torch.Tensor]:
    """The training loss of a ``MethodConfig``: a :data:`STATEFUL_LOSSES` module or :func:`~ranksim.methods.losses.get_loss`."""
    if method.loss in STATEFUL_LOSSES:
        return STATEFUL_LOSSES[method.loss](method, train_labels, binning, target_scale)
    m = method
    params = {"huber": {"beta": m.huber_beta},
              "focal_l1": {"activate": m.focal_activate, "beta": m.focal_beta, "gamma": m.focal_gamma},
              "focal_mse": {"activate": m.focal_activate, "beta": m.focal_beta, "gamma": m.focal_gamma}}
    return get_loss(m.loss, **params.get(m.loss, {}))
