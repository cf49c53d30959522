"""Rebuilding an age split by the DIR procedure (SPEC 6): balanced val and test sets per age.

:func:`make_balanced_split` follows the DIR procedure: for each integer age 0..120 in increasing
order, shuffle that age's rows and give ``min(n // 3, max_per_age)`` to val, as many again to test,
the rest to train. **Seeding:** one ``random.Random(seed)`` drives the whole procedure, used in the
same order as the DIR authors' script (``random.seed(666)`` once, then ``random.shuffle`` per age),
so that from the same metadata in the same order the rebuilt split is the authors' split. A per-age
RNG would make each age independent of the others, but could never reproduce the published files;
we chose reproduction. The metadata order is fixed: the ``.mat`` order, IMDB before WIKI, for
IMDB-WIKI (:mod:`~ranksim.data.age.imdb_wiki`); sorted file names for AgeDB
(:mod:`~ranksim.data.age.agedb`; the authors used ``os.listdir`` order, which no one can reproduce,
so a rebuilt AgeDB-DIR split has the published counts per split but not the same images; use the
published file to compare with papers).
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

SEED = 666                       # the DIR authors' seed for the balanced val/test draw
BALANCED_AGES = range(0, 121)    # ages that get balanced val/test rows; older ones stay in train


def make_balanced_split(meta: pd.DataFrame, max_per_age: int, seed: int = SEED) -> pd.DataFrame:
    """Assign train / val / test by the DIR procedure (SPEC 6): balanced val and test sets.

    For each integer age 0..120 in increasing order, the rows of that age (in ``meta`` order) are
    shuffled by one ``random.Random(seed)`` shared by all ages; the first ``k = min(n // 3,
    max_per_age)`` go to val, the next ``k`` to test, the rest (and every age outside 0..120) to
    train. Python's shuffle depends only on the RNG state and the list length, so shuffling row
    numbers picks the same rows as the authors' shuffle of the path array: same metadata in the
    same order and the same seed give the authors' split, on any platform and Python 3 version.

    Args:
        meta: columns ``age`` (integers) and ``path``; paths must be unique.
        max_per_age: 150 for IMDB-WIKI-DIR, 30 for AgeDB-DIR.
        seed: 666 for the benchmarks; another seed gives another (unofficial) split.

    Returns:
        ``meta``'s rows and order with ``age`` as int64 and a ``split`` column.
    """
    if meta["path"].duplicated().any():
        dup = meta.loc[meta["path"].duplicated(), "path"].iloc[0]
        raise ValueError(f"metadata paths must be unique; {dup!r} appears more than once")
    ages = meta["age"].to_numpy(dtype=np.int64)
    split = np.full(len(meta), "train", dtype=object)
    rng = random.Random(seed)
    for age in BALANCED_AGES:
        rows = np.flatnonzero(ages == age).tolist()
        rng.shuffle(rows)
        k = min(len(rows) // 3, max_per_age)
        split[rows[:k]] = "val"
        split[rows[k:2 * k]] = "test"
    out = meta[["path"]].copy()
    out.insert(0, "age", ages)
    out["split"] = split.astype(str)
    return out.reset_index(drop=True)
