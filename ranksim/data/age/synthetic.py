"""A synthetic deep-imbalanced-regression dataset, generated on first use, in AgeDB-DIR's format.

The quick start and the smoke tests must run on any machine without a download, yet exercise the
real pipeline: this module writes ``synthetic.csv`` (``age,path,split``) and JPEG images under the
data root, exactly as AgeDB-DIR is laid out, so the real age reader is what reads it.

* **Labels** are integers 0..59 with a long-tailed density (a Gaussian bump at 15 over a small
  floor), so that with the benchmark's shot thresholds (>100 many, <20 few training samples) all
  three regions are populated, as in AgeDB-DIR.
* **Images** show the label as the length of a horizontal bar (anti-aliased at its end, so the
  label is visible below one pixel), at a random height and offset, in a random colour, over
  Gaussian pixel noise. A small CNN learns it in a few epochs; the noise keeps it from being
  trivial.
* **Split**: for each label, ``min(n // 3, max_per_label)`` samples go to val and as many to test
  (the DIR procedure of SPEC 6, :func:`~ranksim.data.age.rebuild_split.make_balanced_split`, with a
  smaller cap); the rest is train.

Generation is deterministic in the :class:`~ranksim.config.SyntheticConfig`; a ``synthetic.json``
beside the CSV records it, and a root whose record differs is regenerated. Files are written into
a temporary folder that is renamed into place, so an interrupted generation leaves nothing that
looks complete.

The record is also what proves a folder is ours: only a root that holds ``synthetic.json`` (or is
empty, or absent) is ever replaced. Any other folder, a real dataset given as ``data.root`` by
mistake say, is refused and left untouched. Under DDP one process generates and the others wait
(:func:`ranksim.data.build.build_age_data`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ranksim.data.age.image_cache import build_cache
from ranksim.data.age.rebuild_split import make_balanced_split
from ranksim.data.age.split_file import write_age_split
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

NUM_LABELS = 60
CSV_NAME = "synthetic.csv"
RECORD_NAME = "synthetic.json"


def label_density() -> np.ndarray:
    ages = np.arange(NUM_LABELS)
    density = np.exp(-((ages - 15.0) ** 2) / (2 * 10.0**2)) + 0.01
    return density / density.sum()


def render(label: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image whose bar length encodes ``label``."""
    image = rng.normal(110.0, 25.0, size=(size, size, 3))
    bar_height = max(2, size // 8)
    top = rng.integers(1, size - bar_height - 1)
    left = rng.integers(0, max(1, size // 10))
    length = 1.0 + (size - left - 2) * label / (NUM_LABELS - 1)
    colour = rng.uniform(170, 255, size=3)
    full = int(length)
    rows = slice(top, top + bar_height)
    image[rows, left:left + full] = colour
    if left + full < size:  # the fractional last pixel carries the sub-pixel part of the label
        frac = length - full
        image[rows, left + full] = frac * colour + (1 - frac) * image[rows, left + full]
    image += rng.normal(0.0, 12.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate(root: Path, num_samples: int = 4000, image_size: int = 32, max_per_label: int = 6,
             seed: int = 0) -> Path:
    """Write the dataset into ``root`` and return the CSV path."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(NUM_LABELS, size=num_samples, p=label_density())
    paths = [f"images/{i:06d}_{label}.jpg" for i, label in enumerate(labels)]
    table = make_balanced_split(pd.DataFrame({"age": labels, "path": paths}), max_per_label, seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root.parent))
    (tmp / "images").mkdir()
    for label, rel in zip(labels, paths):
        Image.fromarray(render(float(label), image_size, rng)).save(tmp / rel, quality=95)
    write_age_split(table, tmp / CSV_NAME)
    # The uint8 cache makes the tiny images ~10x cheaper to load, and exercises the cache path.
    build_cache(tmp, table, workers=1, image_size=image_size, progress=False)
    record = dict(num_samples=num_samples, image_size=image_size, max_per_label=max_per_label, seed=seed)
    (tmp / RECORD_NAME).write_text(json.dumps(record, indent=1))
    try:
        check_replaceable(root)  # again, just before: the folder may have been filled meanwhile
    except UserError:
        shutil.rmtree(tmp)
        raise
    if root.is_dir() and (root / RECORD_NAME).is_file():
        shutil.rmtree(root)
    elif root.is_dir():
        root.rmdir()  # empty (check_replaceable): nothing to lose
    tmp.rename(root)
    return root / CSV_NAME


def check_replaceable(root: Path) -> None:
    """Refuse a ``root`` that holds anything not written by :func:`generate`.

    A folder is ours when it holds ``synthetic.json``; an absent or empty folder may be filled. A
    real dataset, an image cache or ``data/`` itself must never be deleted to make room for the
    synthetic set.
    """
    if root.exists() and not root.is_dir():
        raise UserError(f"data.root {root} is a file, not a folder; for the synthetic data set data.root to a "
                        "new folder (the default is data/synthetic)")
    if root.is_dir() and not (root / RECORD_NAME).is_file() and any(root.iterdir()):
        raise UserError(f"data.root {root} holds files that are not the synthetic data set (no {RECORD_NAME}), "
                        "so it was left untouched; set data.root to a new or empty folder for "
                        "data.dataset=synthetic (default data/synthetic), or data.dataset to the data set it holds")


def ensure_synthetic(root: str | Path, cfg) -> Path:
    """Return the CSV of the synthetic dataset under ``root``, generating it if needed.

    ``cfg`` is a :class:`~ranksim.config.SyntheticConfig`.
    """
    root = Path(root)
    check_replaceable(root)
    record = dataclasses.asdict(cfg)
    record_path = root / RECORD_NAME
    if record_path.is_file() and (root / CSV_NAME).is_file():
        if json.loads(record_path.read_text()) == record:
            return root / CSV_NAME
        logger.info("synthetic data in %s was made with other settings; regenerating", root)
    logger.info("generating the synthetic DIR dataset (%d images) in %s", cfg.num_samples, root)
    return generate(root, **record)
