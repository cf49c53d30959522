"""Per-sample seeding of data augmentation, so that a resumed run repeats an uninterrupted one.

DataLoader workers are seeded once, when their pool starts. With ``persistent_workers`` the pool
lives for the whole run, so re-seeding the global RNG at each epoch never reaches the workers:
an uninterrupted run and one resumed from ``last.pt`` (whose pool starts at a later epoch) draw
different crops and flips. Here the randomness of each item is instead a function of
``(key, index)``, where the key is fixed per epoch and pass (:func:`pass_key`):

- :class:`KeyedSampler` wraps an index sampler and yields ``(key, index)`` pairs. Sampling runs
  in the main process, so the key set by :meth:`KeyedSampler.set_epoch` reaches every worker
  with the indices, persistent or not.
- :class:`SeededItems` wraps a dataset; item ``(key, index)`` is ``dataset[index]`` drawn with
  torch's CPU generator seeded from :func:`sample_seed` ``(key, index)``. The generator's state
  is restored afterwards, so in the main process (``num_workers: 0``) dropout and everything
  else that draws from it is unaffected.

An item's augmentation therefore depends only on the seed, the epoch, the pass and the sample,
not on the number of workers, on which worker loads it, or on whether the run was resumed.
Augmentation must draw from torch's global CPU generator (torchvision's transforms and
:func:`ranksim.data.age.transforms.cached_train_transform` do); Python's ``random`` and numpy's
global generator are not seeded per sample.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: neighbouring inputs give unrelated 64-bit outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def pass_key(seed: int, epoch: int, stream: int) -> int:
    """The key of one pass over the data: ``stream`` tells passes of the same epoch apart
    (0 training, 1 the faithful FDS statistics pass)."""
    return _mix64(_mix64(_mix64(seed & _MASK64) ^ (epoch & _MASK64)) ^ stream)


def sample_seed(key: int, index: int) -> int:
    """The 63-bit seed of sample ``index`` in the pass ``key``."""
    return _mix64(key ^ _mix64(index)) >> 1


class KeyedSampler(Sampler):
    """Yields ``(key, index)`` for each index of ``sampler``; :meth:`set_epoch` sets the key (and
    the wrapped sampler's epoch, when it has one)."""

    def __init__(self, sampler, seed: int, stream: int = 0):
        self.sampler, self.seed, self.stream = sampler, seed, stream
        self.key = pass_key(seed, 0, stream)

    def set_epoch(self, epoch: int) -> None:
        self.key = pass_key(self.seed, epoch, self.stream)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        key = self.key
        for index in self.sampler:
            yield key, int(index)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededItems(Dataset):
    """``dataset`` indexed by ``(key, index)``: each item drawn with the CPU generator seeded from
    ``sample_seed(key, index)`` (see the module docstring)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        key, index = item
        generator = torch.default_generator  # the CPU one only: CUDA generators are left alone
        state = generator.get_state()
        generator.manual_seed(sample_seed(key, index))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


class ShuffledShard(Sampler):
    """This process's strided share of a fresh seeded permutation of ``range(length)`` per epoch.

    Every process draws the same permutation from the key of ``(seed, epoch, stream)``
    (:func:`pass_key`) and takes every ``world``-th entry from ``rank`` on. The order depends only
    on the seed and the epoch, so a resumed run repeats it, and no two (seed, epoch) pairs share
    an order. (``DistributedSampler`` shuffles with ``seed + epoch``, so seed 0's epoch 1 would be
    seed 1's epoch 0, and the seeds of a table row would be less independent than they look.)

    Without ``pad`` the shards together hold each sample exactly once, as a statistics pass needs
    (a repeated sample would bias it). With ``pad`` (training under DDP) the permutation is
    extended by its own first entries to a multiple of ``world``, so that every process takes the
    same number of steps, as ``DistributedSampler`` does.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world: int = 1, stream: int = 1, pad: bool = False):
        self.length, self.seed, self.rank, self.world, self.stream = length, seed, rank, world, stream
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> torch.Tensor:
        """The epoch's permutation of ``range(length)`` before sharding, ``(length,)`` int64."""
        generator = torch.Generator().manual_seed(pass_key(self.seed, self.epoch, self.stream) >> 1)
        return torch.randperm(self.length, generator=generator)

    def _total(self) -> int:
        return -(-self.length // self.world) * self.world if self.pad else self.length

    def __iter__(self) -> Iterator[int]:
        order = self.permutation()
        if self.pad and self._total() > self.length:
            order = order.repeat(-(-self._total() // self.length))[:self._total()]
        return iter(order[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self._total(), self.world))
