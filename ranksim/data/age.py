"""The age-estimation reader shared by AgeDB-DIR, IMDB-WIKI-DIR and the synthetic quick start.

One reader, parameterised by the split file (``age,path,split``, paths relative to the data
root; SPEC 6). Items are ``(image (3, S, S) float32, target (1,) float32, weight (1,) float32)``;
the DataLoader stacks them to ``(B, 3, S, S)``, ``(B, 1)``, ``(B, 1)``.

ConR (SPEC 9.2) needs two more random augmentations of each training image: a copy made by
:meth:`AgeDataset.with_views` returns ``((image, views (2, 3, S, S)), target, weight)``, batched
to ``[(B, 3, S, S), (B, 2, 3, S, S)]``. The image is read once and transformed three times; the
ordinary image draws its augmentation first, so the batch is the same as without views.

Images come from the one-time uint8 cache when it exists (``python -m ranksim.data.prepare
cache``), otherwise from the JPEGs. Both paths apply the same transform (SPEC 6): the cache stores
exactly the first step, the resize.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ranksim.data.image_cache import (ImageCache, cached_eval_transform, cached_train_transform,
                                      default_cache_path, load_image, plain_eval_transform,
                                      plain_train_transform)
from ranksim.errors import UserError

logger = logging.getLogger(__name__)


class AgeDataset(Dataset):
    """One split of an age dataset.

    Args:
        root: data root; ``rows.path`` is relative to it.
        rows: the split file's rows of this split (columns ``age``, ``path``).
        train: training augmentation (random crop with padding, horizontal flip) or not.
        weights: per-sample loss weights ``(N,)`` (LDS / re-weighting); ones when ``None``.
        cache: an opened :class:`ImageCache` of the whole split file, or ``None`` for JPEGs.
        skip_bad_images: replace an unreadable image by another sample of the split and count it,
            instead of stopping with an error that names the file.
    """

    def __init__(self, root: str | Path, rows: pd.DataFrame, train: bool, image_size: int = 224,
                 crop_padding: int = 16, weights: np.ndarray | None = None,
                 cache: ImageCache | None = None, skip_bad_images: bool = False):
        self.root = Path(root)
        self.paths = rows["path"].tolist()
        self.labels = rows["age"].to_numpy(dtype=np.float32)
        if weights is not None and len(weights) != len(self.labels):
            raise ValueError(f"weights has {len(weights)} entries for {len(self.labels)} samples")
        self.weights = np.ones_like(self.labels) if weights is None else np.asarray(weights, np.float32)
        self.train = train
        self.image_size = image_size
        self.crop_padding = crop_padding
        self.cache = cache
        self.cache_index = None if cache is None else np.array([cache.index_of(p) for p in self.paths])
        self.skip_bad_images = skip_bad_images
        self.skipped = 0
        self.transform = (plain_train_transform(image_size, crop_padding) if train
                          else plain_eval_transform(image_size))
        self.views = 0               # extra augmented views per item (ConR); see with_views

    def with_views(self, views: int = 2) -> "AgeDataset":
        """A copy of this (training) split whose items carry ``views`` extra augmentations."""
        if not self.train:
            raise ValueError("extra views are random training augmentations; this split has train=False")
        other = copy.copy(self)
        other.views = views
        return other

    def __len__(self) -> int:
        return len(self.paths)

    def _raw(self, index: int):
        if self.cache is not None:
            return self.cache.get(int(self.cache_index[index]))
        return load_image(self.root / self.paths[index])

    def _transform(self, raw) -> torch.Tensor:
        if self.cache is not None:
            return cached_train_transform(raw, self.crop_padding) if self.train else cached_eval_transform(raw)
        return self.transform(raw)

    def image(self, index: int) -> torch.Tensor:
        return self._transform(self._raw(index))

    def __getitem__(self, index: int):
        try:
            raw = self._raw(index)
            image = self._transform(raw)
            if self.views:
                image = (image, torch.stack([self._transform(raw) for _ in range(self.views)]))
        except UserError:
            if not self.skip_bad_images:
                raise
            self.skipped += 1
            logger.warning("skipped unreadable image %s (%d skipped in this worker)", self.paths[index], self.skipped)
            return self[(index + 1) % len(self)]
        target = torch.tensor([self.labels[index]], dtype=torch.float32)
        weight = torch.tensor([self.weights[index]], dtype=torch.float32)
        return image, target, weight


def open_cache(root: Path, split_df: pd.DataFrame, image_size: int) -> ImageCache | None:
    """The image cache of ``root`` if it was built for this split file and size, else ``None``."""
    path = default_cache_path(root)
    if not path.exists():
        return None
    cache = ImageCache.open(path, split_df)
    if cache.size != image_size:
        logger.info("image cache %s holds %d px images, the config asks for %d: reading JPEGs",
                    path, cache.size, image_size)
        return None
    logger.info("reading images from the cache %s", path)
    return cache
