"""The STS-B-DIR reader: the three encoded splits as datasets, and how they are batched.

:func:`load_sts_b` reads the split files (:mod:`~ranksim.data.sts_b.split_files`), tokenises and
indexes them (:mod:`~ranksim.data.sts_b.text`) and loads the cached GloVe matrix
(:mod:`~ranksim.data.sts_b.glove`) when asked.

Batches (:func:`collate_sts_b`): ``((s1 (B, L1) int64, len1 (B,) int64, s2 (B, L2) int64,
len2 (B,) int64), targets (B, 1) float32, weights (B, 1) float32)``. Each side is padded with 0
to its own longest sentence in the batch. Targets are raw scores in ``[0, 5]``: the trainer divides
by 5 for the loss and multiplies predictions by 5 for the metrics (SPEC 6).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from ranksim.data.sts_b.glove import GLOVE_HINT, read_embedding_cache
from ranksim.data.sts_b.text import (PAD_INDEX, PUNKT_HINT, encode, load_splits_tokenised, resolve_tokenizer,
                                     vocab_for_splits)

logger = logging.getLogger(__name__)


@dataclass
class _EncodedSplit:
    ids1: np.ndarray       # (N, max_seq_len) int64
    len1: np.ndarray       # (N,) int64
    ids2: np.ndarray
    len2: np.ndarray
    labels: np.ndarray     # (N,) float32


class StsBDataset(Dataset):
    """Item ``i``: ``((s1 (len1_i,) int64, s2 (len2_i,) int64), target (1,) float32, weight (1,) float32)``."""

    def __init__(self, split: _EncodedSplit, weights: np.ndarray | None = None):
        n = len(split.labels)
        if weights is None:
            weights = np.ones(n, dtype=np.float32)
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {weights.shape}")
        self.split = split
        self.weights = weights

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int):
        s = self.split
        s1 = torch.from_numpy(s.ids1[i, :s.len1[i]].copy())
        s2 = torch.from_numpy(s.ids2[i, :s.len2[i]].copy())
        target = torch.tensor([s.labels[i]], dtype=torch.float32)
        weight = torch.tensor([self.weights[i]], dtype=torch.float32)
        return (s1, s2), target, weight


def collate_sts_b(batch):
    """List of dataset items -> ``((s1, len1, s2, len2), targets (B, 1), weights (B, 1))``, padded with 0."""
    pairs, targets, weights = zip(*batch)
    s1 = [p[0] for p in pairs]
    s2 = [p[1] for p in pairs]
    len1 = torch.tensor([len(s) for s in s1], dtype=torch.long)
    len2 = torch.tensor([len(s) for s in s2], dtype=torch.long)
    return ((pad_sequence(s1, batch_first=True, padding_value=PAD_INDEX), len1,
             pad_sequence(s2, batch_first=True, padding_value=PAD_INDEX), len2),
            torch.stack(targets), torch.stack(weights))


class StsBData:
    """The three encoded splits, the vocabulary, the tokenizer that built it (``punkt`` or
    ``no_punkt``) and (optionally) the GloVe matrix; see :func:`load_sts_b`."""

    def __init__(self, root: Path, vocab: list[str], splits: dict[str, _EncodedSplit],
                 embeddings: np.ndarray | None, max_seq_len: int, tokenizer: str = "no_punkt"):
        self.root = root
        self.vocab = vocab
        self.tokenizer = tokenizer
        self.embeddings = embeddings
        self.max_seq_len = max_seq_len
        self._splits = splits

    def _split(self, split: str) -> _EncodedSplit:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; valid splits are {list(self._splits)}")
        return self._splits[split]

    def labels(self, split: str) -> np.ndarray:
        """Raw scores ``(N,)`` float32 in ``[0, 5]``."""
        return self._split(split).labels.copy()

    def dataset(self, split: str, weights: np.ndarray | None = None) -> StsBDataset:
        """The split as a ``Dataset``; ``weights`` ``(N,)`` are per-sample loss weights (default 1)."""
        return StsBDataset(self._split(split), weights)


def load_sts_b(root: str | os.PathLike, glove_dir: str | os.PathLike | None = None, max_seq_len: int = 40,
               max_vocab: int = 30000, tokenizer: str = "auto") -> StsBData:
    """Read, tokenise and index the three splits; load the cached GloVe matrix when ``glove_dir`` is given.

    Without ``glove_dir``, ``embeddings`` is ``None`` (the model then learns its own). A missing
    folder, file or cache is a ``UserError`` that names the preparation command.
    """
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be positive, got {max_seq_len}")
    root = Path(root)
    tokenizer = resolve_tokenizer(tokenizer)
    tokenised = load_splits_tokenised(root, max_seq_len, tokenizer)
    vocab = vocab_for_splits(tokenised, max_vocab)
    index = {word: i for i, word in enumerate(vocab)}
    splits = {}
    for split, tok in tokenised.items():
        ids1, len1 = encode(tok.tokens1, index, max_seq_len)
        ids2, len2 = encode(tok.tokens2, index, max_seq_len)
        splits[split] = _EncodedSplit(ids1, len1, ids2, len2, tok.text.scores.copy())
    embeddings = None
    if glove_dir is not None:
        hint = GLOVE_HINT.format(glove=glove_dir, root=root, max_seq_len=max_seq_len,
                                 max_vocab=max_vocab) + f" --tokenizer {tokenizer}"
        embeddings = read_embedding_cache(glove_dir, vocab, hint)
    logger.info("STS-B-DIR %s: %s pairs, vocabulary %d (tokenizer %s), embeddings %s", root,
                " / ".join(f"{len(s.labels)} {name}" for name, s in splits.items()), len(vocab),
                tokenizer if tokenizer == "punkt" else f"{tokenizer}: no sentence split, so a row of two sentences "
                f"gets other tokens than the authors'; for theirs run {PUNKT_HINT}",
                "GloVe (cached)" if embeddings is not None else "learned from scratch")
    return StsBData(root, vocab, splits, embeddings, max_seq_len, tokenizer)
