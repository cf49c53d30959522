"""Rebuilding the STS-B-DIR split files from GLUE STS-B with a fixed seed (SPEC 6)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ranksim.methods.binning import label_bins
from ranksim.data.files import atomic_write
from ranksim.data.sts_b.split_files import SPLIT_FILES, read_sts_tsv
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

# GLUE STS-B (train.tsv, dev.tsv), the input of --rebuild; the URL the authors' create_sts.py uses.
GLUE_STS_B_URL = "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip"


def rebuild_splits(glue_dir: str | os.PathLike, out_root: str | os.PathLike, seed: int = 0,
                   num_bins: int = 20, per_bin: int = 100) -> dict[str, int]:
    """Rebuild ``{train,dev,test}_new.tsv`` from GLUE STS-B ``train.tsv`` + ``dev.tsv``; return row counts.

    The DIR procedure with a fixed seed: pool both files, put each pair in one of ``num_bins``
    equal score bins over ``[0, 5]`` (5.0 in the last; the bins of :func:`ranksim.methods.binning.label_bins`
    on float32 scores, as the authors' ``np.histogram`` does), and from each bin of ``n`` pairs
    draw ``k`` for dev and ``k`` more for test without replacement; the rest is train.
    ``k = per_bin // 2`` when ``n >= per_bin``, as the authors do. For a smaller bin, where their
    draw fails, ``k = n // 3`` is our choice: it keeps a third of the bin for training, like the
    age datasets' ``n // 3``. With GLUE STS-B every one of the 20 bins has 100 or more pairs,
    giving 5,249 / 1,000 / 1,000.

    Files are written bin by bin, each bin's rows in their pooled order, with column 0 renumbered
    from 0 (as the authors do); all other columns are copied unchanged.
    """
    glue_dir, out_root = Path(glue_dir), Path(out_root)
    sources = [glue_dir / "train.tsv", glue_dir / "dev.tsv"]
    for path in sources:
        if not path.is_file():
            raise UserError(f"{path} does not exist: --glue-dir must hold GLUE STS-B train.tsv and dev.tsv "
                            f"(from {GLUE_STS_B_URL})")
    texts = [read_sts_tsv(p) for p in sources]
    if texts[0].header != texts[1].header:
        raise UserError(f"{sources[0]} and {sources[1]} have different headers; are both GLUE STS-B files?")
    rows = texts[0].rows + texts[1].rows
    scores = np.concatenate([t.scores for t in texts])
    bins = label_bins(scores, "sts_b", num_bins=num_bins)
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for b in range(num_bins):
        members = np.flatnonzero(bins == b)
        k = per_bin // 2 if len(members) >= per_bin else len(members) // 3
        drawn = rng.permutation(members)
        chosen["val"] += sorted(drawn[:k].tolist())
        chosen["test"] += sorted(drawn[k:2 * k].tolist())
        chosen["train"] += sorted(drawn[2 * k:].tolist())
        if k < per_bin // 2:
            logger.warning("bin %d (scores %.2f-%.2f) has only %d pairs: %d for dev and %d for test", b,
                           5 * b / num_bins, 5 * (b + 1) / num_bins, len(members), k, k)
    out_root.mkdir(parents=True, exist_ok=True)
    for split, indices in chosen.items():
        lines = ["\t".join(texts[0].header)]
        for new_index, i in enumerate(indices):
            lines.append("\t".join([str(new_index)] + rows[i][1:]))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        atomic_write(out_root / SPLIT_FILES[split], lambda fh, data=data: fh.write(data))
    return {split: len(indices) for split, indices in chosen.items()}
