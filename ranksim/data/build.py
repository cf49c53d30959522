"""Build a dataset by name: the one place that knows which reader, binning and scale go together.

:func:`build_data` returns a :class:`DataBundle` with the four views the training loop needs
(augmented train, un-augmented train for the FDS statistics pass, val, test), the training labels
(for re-weighting, FDS and the shot regions) and how to batch them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from ranksim.config import Config
from ranksim.errors import UserError
from ranksim.methods.lds import prepare_weights

logger = logging.getLogger(__name__)

DATASETS = ("synthetic", "agedb", "imdb_wiki", "sts_b")
PREPARE_HINT = {
    "agedb": "python -m ranksim.data.prepare agedb --root {root} (see data/README.md)",
    "imdb_wiki": "python -m ranksim.data.prepare imdb_wiki --root {root} (see data/README.md)",
    "sts_b": "python -m ranksim.data.prepare sts_b --root {root} (see data/README.md)",
}


@dataclass
class DataBundle:
    train: Dataset
    train_plain: Dataset          # the training set without augmentation, for the FDS statistics pass
    val: Dataset
    test: Dataset
    train_labels: np.ndarray      # (N,) float32, raw label units
    binning: str                  # 'age' or 'sts_b' (ranksim.methods.binning)
    target_scale: float = 1.0     # the model predicts label / target_scale (STS-B trains on score / 5)
    collate: Callable | None = None
    vocab_size: int = 0           # STS-B only
    embeddings: np.ndarray | None = None  # STS-B only: GloVe matrix (V, 300) or None
    train_views: Dataset | None = None  # ConR: the training set with two extra augmented views per item


def training_weights(cfg: Config, train_labels: np.ndarray, binning: str) -> np.ndarray:
    m = cfg.method
    return prepare_weights(train_labels, reweight=m.reweight, lds=m.lds.enabled, lds_kernel=m.lds.kernel,
                           lds_ks=m.lds.ks, lds_sigma=m.lds.sigma, binning=binning, faithful=m.faithful)


def split_file_path(cfg: Config) -> Path:
    root = Path(cfg.data.root)
    return Path(cfg.data.split_file) if cfg.data.split_file else root / f"{cfg.data.dataset}.csv"


def generate_synthetic_once(root: Path, synthetic_cfg) -> None:
    """Generate the synthetic data on the main process only; the others wait for it.

    Every process generating at once would race on the same folder. The main process's refusal
    (a root that is not ours) is passed on, so that every process stops with the same message.
    """
    from ranksim.data.age.synthetic import ensure_synthetic
    from ranksim.distributed import barrier, broadcast_object, is_main_process

    error = None
    if is_main_process():
        try:
            ensure_synthetic(root, synthetic_cfg)
        except UserError as err:
            error = str(err)
    barrier()
    error = broadcast_object(error)
    if error:
        raise UserError(error)


def build_age_data(cfg: Config) -> DataBundle:
    from ranksim.data.age.benchmarks import BENCHMARKS
    from ranksim.data.age.dataset import AgeDataset, open_cache
    from ranksim.data.age.split_file import read_age_split
    from ranksim.data.age.synthetic import NUM_LABELS

    d = cfg.data
    root = Path(d.root)
    if d.dataset == "synthetic":
        generate_synthetic_once(root, d.synthetic)
    split_file = split_file_path(cfg)
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist; prepare it with "
                        + PREPARE_HINT[d.dataset].format(root=root) + " or set data.root=PATH")
    if not split_file.is_file():
        raise UserError(f"split file {split_file} not found; prepare the data with "
                        + PREPARE_HINT.get(d.dataset, "").format(root=root) + " or set data.split_file=PATH")
    # An age outside the dataset's range is a malformed row (a negative one breaks the label histograms).
    age_range = (0, NUM_LABELS - 1) if d.dataset == "synthetic" else BENCHMARKS[d.dataset].age_range
    table = read_age_split(split_file, age_range)
    parts = {name: table[table["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
    if d.max_train_samples:
        parts["train"] = parts["train"].iloc[:d.max_train_samples]
    for name, rows in parts.items():
        if len(rows) == 0:
            raise UserError(f"{split_file} has no '{name}' rows; a split file needs train, val and test")
    train_labels = parts["train"]["age"].to_numpy(np.float32)
    weights = training_weights(cfg, train_labels, "age")
    cache = open_cache(root, table, d.image_size) if d.use_cache else None
    common = dict(image_size=d.image_size, crop_padding=d.crop_padding, cache=cache,
                  skip_bad_images=d.skip_bad_images)
    train = AgeDataset(root, parts["train"], train=True, weights=weights, **common)
    # ConR's two extra views (SPEC 9.2); not in RRT stage 2, whose frozen encoder ConR cannot change.
    conr = cfg.method.conr.enabled and not cfg.method.rrt.enabled
    return DataBundle(
        train=train, train_views=train.with_views(2) if conr else None,
        train_plain=AgeDataset(root, parts["train"], train=False, **common),
        val=AgeDataset(root, parts["val"], train=False, **common),
        test=AgeDataset(root, parts["test"], train=False, **common),
        train_labels=train_labels, binning="age")


def build_sts_b_data(cfg: Config) -> DataBundle:
    from ranksim.data.sts_b.dataset import collate_sts_b, load_sts_b

    d = cfg.data
    data = load_sts_b(d.root, glove_dir=d.glove_dir or None, max_seq_len=d.max_seq_len, max_vocab=d.max_vocab,
                      tokenizer=d.tokenizer)
    # The run's config.yaml and checkpoints record the tokenizer that built the vocabulary, so
    # that evaluating the run elsewhere uses the same one (or refuses).
    d.tokenizer = data.tokenizer
    train_labels = data.labels("train")
    weights = training_weights(cfg, train_labels, "sts_b")
    train = data.dataset("train", weights=weights)
    return DataBundle(train=train, train_plain=train, val=data.dataset("val"), test=data.dataset("test"),
                      train_labels=train_labels, binning="sts_b", target_scale=5.0,
                      collate=collate_sts_b, vocab_size=len(data.vocab), embeddings=data.embeddings)


def build_data(cfg: Config) -> DataBundle:
    if cfg.data.dataset == "sts_b":
        bundle = build_sts_b_data(cfg)
    else:
        bundle = build_age_data(cfg)
    logger.info("data %s: %d train / %d val / %d test", cfg.data.dataset, len(bundle.train),
                len(bundle.val), len(bundle.test))
    return bundle
