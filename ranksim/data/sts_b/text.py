"""The STS-B text pipeline: sentences to token ids (tokenizer, vocabulary, encoding).

- Tokenizer (``data.tokenizer``): ``punkt`` is the authors' ``nltk.word_tokenize``, which
  first splits each field into sentences with NLTK's English punkt model, a download
  (``python -m nltk.downloader punkt_tab``). ``no_punkt`` runs ``nltk.tokenize.NLTKWordTokenizer``
  on the whole field and needs no data; it differs only where a field holds two sentences: the
  full stop *inside* it stays attached to its word ("there." in "Hello there. How are you?").
  ``auto`` (the default) takes ``punkt`` when its data is installed, else ``no_punkt``; the
  choice is resolved once, stored in the run's config and checked when the run is evaluated,
  because another tokenizer gives another vocabulary.
- Each sentence is truncated to ``max_seq_len`` (40) tokens, as the authors do, before counting.
- Vocabulary: index 0 is ``'<pad>'`` and index 1 is ``'<unk>'`` (as in the authors' allennlp
  vocabulary), then the ``max_vocab`` (30,000) most frequent tokens over all three splits, case
  kept, most frequent first. Ties keep the authors' counting order (SPEC 6): every sentence 1 of
  train, then every sentence 2 of train, then the same for val and for test; the sort is stable.
  A released checkpoint stores one embedding row per index, so this order is what makes its rows
  meet the right words. So ``len(vocab) <= max_vocab + 2``. The real splits have
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
TOKENIZERS = ("auto", "punkt", "no_punkt")
PUNKT_HINT = "python -m nltk.downloader punkt_tab"


def punkt_installed() -> bool:
    """Whether NLTK's English punkt model (what ``nltk.word_tokenize`` needs) can be loaded."""
    from nltk.tokenize import punkt_model_available
    return punkt_model_available("english")


def resolve_tokenizer(name: str = "auto") -> str:
    """``punkt`` or ``no_punkt`` for a ``data.tokenizer`` value; a ``UserError`` when ``punkt`` is
    asked for (a run built with it, say) and its data is not installed."""
    if name not in TOKENIZERS:
        raise UserError(f"unknown STS-B tokenizer {name!r}; valid values: {', '.join(TOKENIZERS)}")
    if name == "no_punkt":
        return name
    if punkt_installed():
        return "punkt"
    if name == "punkt":
        raise UserError(f"data.tokenizer is punkt (the authors' nltk.word_tokenize; this run's vocabulary was "
                        f"built with it) but NLTK's punkt data is not installed: run {PUNKT_HINT}")
    return "no_punkt"


@functools.lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer()


def tokenize(sentence: str, max_seq_len: int = 40, tokenizer: str = "no_punkt") -> list[str]:
    """NLTK word tokens of ``sentence``, at most ``max_seq_len`` of them; ``tokenizer`` is
    ``punkt`` (the authors' ``nltk.word_tokenize``) or ``no_punkt``."""
    if tokenizer == "punkt":
        from nltk.tokenize import word_tokenize
        return word_tokenize(sentence)[:max_seq_len]
    return _word_tokenizer().tokenize(sentence)[:max_seq_len]


@dataclass
class TokenisedSplit:
    text: SplitText
    tokens1: list[list[str]]
    tokens2: list[list[str]]


@functools.lru_cache(maxsize=8)
def _tokenise_file(path: str, mtime_ns: int, size: int, max_seq_len: int, tokenizer: str) -> TokenisedSplit:
    # Keyed on the file's mtime and size: repeated loads in one process (tests, evaluate after
    # train) skip the few seconds of tokenising, and an edited file is read again.
    text = read_sts_tsv(path)
    tokens = []
    for column in (text.sentence1, text.sentence2):
        side = [tokenize(s, max_seq_len, tokenizer) for s in column]
        for i, toks in enumerate(side):
            if not toks:
                raise UserError(f"{path}, line {text.line_numbers[i]}: a sentence has no token; fix or "
                                f"delete the row, or prepare the file again")
        tokens.append(side)
    return TokenisedSplit(text, tokens[0], tokens[1])


def tokenise_split(path: str | os.PathLike, max_seq_len: int = 40, tokenizer: str = "no_punkt") -> TokenisedSplit:
    """Read ``path`` and tokenise both sentences of every row (cached per file version)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _tokenise_file(str(path), stat.st_mtime_ns, stat.st_size, int(max_seq_len), tokenizer)


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


def _counting_order(splits: list[TokenisedSplit]):
    """The authors' order: all sentence 1s of a split, then all its sentence 2s, split by split."""
    for split in splits:
        yield from split.tokens1
        yield from split.tokens2


def encode(token_lists: list[list[str]], index: dict[str, int], max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> ``(ids (N, max_seq_len) int64 padded with 0, lengths (N,) int64)``."""
    ids = np.zeros((len(token_lists), max_seq_len), dtype=np.int64)
    lengths = np.zeros(len(token_lists), dtype=np.int64)
    for i, tokens in enumerate(token_lists):
        ids[i, :len(tokens)] = [index.get(t, UNK_INDEX) for t in tokens]
        lengths[i] = len(tokens)
    return ids, lengths


def load_splits_tokenised(root: str | os.PathLike, max_seq_len: int = 40,
                          tokenizer: str = "no_punkt") -> dict[str, TokenisedSplit]:
    """The three splits, tokenised with ``tokenizer`` (``punkt`` or ``no_punkt``, see
    :func:`resolve_tokenizer`)."""
    return {split: tokenise_split(path, max_seq_len, tokenizer) for split, path in split_paths(root).items()}


def vocab_for_splits(tokenised: dict[str, TokenisedSplit], max_vocab: int = 30000) -> list[str]:
    return build_vocab(_counting_order([tokenised[s] for s in SPLIT_FILES]), max_vocab)
