"""The STS-B text pipeline: sentences to token ids (tokenizer, vocabulary, encoding).

- Tokens come from ``nltk.tokenize.NLTKWordTokenizer`` on the whole sentence. It needs no
  downloaded data. The authors' ``nltk.word_tokenize`` first splits sentences with punkt, which we
  do not require, so a full stop *inside* a sentence stays attached to its word here ("there." in
  "Hello there. How are you?"); STS-B pairs are nearly all single sentences.
- Each sentence is truncated to ``max_seq_len`` (40) tokens, as the authors do, before counting.
- Vocabulary: index 0 is ``'<pad>'`` and index 1 is ``'<unk>'`` (as in the authors' allennlp
  vocabulary), then the ``max_vocab`` (30,000) most frequent tokens over all three splits, case
  kept, most frequent first. Ties keep the order of first occurrence when reading train, val, test,
  row by row, sentence1 before sentence2. So ``len(vocab) <= max_vocab + 2``. The real splits have
  about 17,000 distinct tokens, so the cap does not bite; when it does, the dropped tokens map
  to ``'<unk>'``. The special names cannot clash with a token: the tokenizer splits ``<`` off.
- A sentence with no token is a malformed row (the model cannot encode an empty sequence).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ranksim.data.sts_b.split_files import SPLIT_FILES, SplitText, read_sts_tsv, split_paths
from ranksim.errors import UserError

PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer()


def tokenize(sentence: str, max_seq_len: int = 40) -> list[str]:
    """NLTK word tokens of ``sentence``, at most ``max_seq_len`` of them."""
    return _tokenizer().tokenize(sentence)[:max_seq_len]


@dataclass
class TokenisedSplit:
    text: SplitText
    tokens1: list[list[str]]
    tokens2: list[list[str]]


@functools.lru_cache(maxsize=8)
def _tokenise_file(path: str, mtime_ns: int, size: int, max_seq_len: int) -> TokenisedSplit:
    # Keyed on the file's mtime and size: repeated loads in one process (tests, evaluate after
    # train) skip the few seconds of tokenising, and an edited file is read again.
    text = read_sts_tsv(path)
    tokens = []
    for column in (text.sentence1, text.sentence2):
        side = [tokenize(s, max_seq_len) for s in column]
        for i, toks in enumerate(side):
            if not toks:
                raise UserError(f"{path}, line {text.line_numbers[i]}: a sentence has no token; fix or "
                                f"delete the row, or prepare the file again")
        tokens.append(side)
    return TokenisedSplit(text, tokens[0], tokens[1])


def tokenise_split(path: str | os.PathLike, max_seq_len: int = 40) -> TokenisedSplit:
    """Read ``path`` and tokenise both sentences of every row (cached per file version)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _tokenise_file(str(path), stat.st_mtime_ns, stat.st_size, int(max_seq_len))


def build_vocab(sentences, max_vocab: int = 30000) -> list[str]:
    """``[PAD, UNK]`` + the ``max_vocab`` most frequent tokens; ties in order of first occurrence.

    ``sentences`` is an iterable of token lists in reading order.
    """
    if max_vocab < 1:
        raise ValueError(f"max_vocab must be positive, got {max_vocab}")
    counts: Counter[str] = Counter()
    for tokens in sentences:
        counts.update(tokens)
    # most_common sorts stably, so equal counts keep the Counter's insertion (first-seen) order.
    return [PAD, UNK] + [word for word, _ in counts.most_common(max_vocab)]


def _reading_order(splits: list[TokenisedSplit]):
    for split in splits:
        for tokens1, tokens2 in zip(split.tokens1, split.tokens2):
            yield tokens1
            yield tokens2


def encode(token_lists: list[list[str]], index: dict[str, int], max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> ``(ids (N, max_seq_len) int64 padded with 0, lengths (N,) int64)``."""
    ids = np.zeros((len(token_lists), max_seq_len), dtype=np.int64)
    lengths = np.zeros(len(token_lists), dtype=np.int64)
    for i, tokens in enumerate(token_lists):
        ids[i, :len(tokens)] = [index.get(t, UNK_INDEX) for t in tokens]
        lengths[i] = len(tokens)
    return ids, lengths


def load_splits_tokenised(root: str | os.PathLike, max_seq_len: int = 40) -> dict[str, TokenisedSplit]:
    return {split: tokenise_split(path, max_seq_len) for split, path in split_paths(root).items()}


def vocab_for_splits(tokenised: dict[str, TokenisedSplit], max_vocab: int = 30000) -> list[str]:
    return build_vocab(_reading_order([tokenised[s] for s in SPLIT_FILES]), max_vocab)
