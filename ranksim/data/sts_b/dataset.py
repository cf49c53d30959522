"""STS-B-DIR: split files, text pipeline, GloVe embeddings and the two preparation commands.

Files (SPEC 6). ``<root>/{train_new,dev_new,test_new}.tsv`` hold the GLUE STS-B columns with a
header row, tab separated, no quoting (sentences contain quote characters): ``sentence1``,
``sentence2`` and ``score`` are columns 7, 8 and 9 (0-based). Scores lie in ``[0, 5]``. The
splits are called ``'train'``, ``'val'`` (``dev_new.tsv``) and ``'test'``.

Text pipeline:

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

Embeddings: GloVe 840B 300-d. A vocabulary word found in GloVe gets its vector (first occurrence
if GloVe lists a word twice). ``'<unk>'`` and words missing from GloVe get N(0, 1) vectors from
``numpy.random.default_rng(seed)``. The padding row is 0. ``python -m ranksim.data.prepare glove``
reads the 2 GB zip once and caches the ``(V, 300)`` float32 matrix as ``<glove_dir>/sts_b_glove.npy``
beside ``sts_b_glove.vocab.txt``, the vocabulary it was built for (one token per line). Loading
checks that vocabulary against the current one, so a changed split, ``max_seq_len`` or
``max_vocab`` cannot silently pair rows with the wrong words.

Batches (:func:`collate_sts_b`): ``((s1 (B, L1) int64, len1 (B,) int64, s2 (B, L2) int64,
len2 (B,) int64), targets (B, 1) float32, weights (B, 1) float32)``. Each side is padded with 0
to its own longest sentence in the batch. Targets are raw scores in ``[0, 5]``: the trainer divides
by 5 for the loss and multiplies predictions by 5 for the metrics (SPEC 6).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset
from tqdm import tqdm

from ranksim.binning import label_bins
from ranksim.data.download import sha256_of
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train_new.tsv", "val": "dev_new.tsv", "test": "test_new.tsv"}
PUBLISHED_ROWS = {"train": 5249, "val": 1000, "test": 1000}
SENTENCE1_COL, SENTENCE2_COL, SCORE_COL = 7, 8, 9
HEADER_NAMES = ("sentence1", "sentence2", "score")
SCORE_RANGE = (0.0, 5.0)

PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1


@dataclass(frozen=True)
class SplitSource:
    """Where one published version of the split files lives.

    ``base_urls`` are tried in order: a pinned commit first (reproducible), then ``HEAD`` (the
    default branch) in case the commit ever becomes unreachable. ``files`` maps a file name to
    ``(bytes, sha256)`` when the content is known; the download is then checked against it, which
    also makes the ``HEAD`` fallback safe.
    """

    description: str
    base_urls: tuple[str, ...]
    files: dict[str, tuple[int, str]] | None


# The RankSim paper's split (the default, and the one in ../shared/data/sts-b-dir). Sizes and
# hashes were computed on those files, whose text matches the repository's stored copies.
RANKSIM_SOURCE = SplitSource(
    description="RankSim repository (BorealisAI/ranksim-imbalanced-regression), the RankSim paper's split",
    base_urls=(
        "https://raw.githubusercontent.com/BorealisAI/ranksim-imbalanced-regression/"
        "b08052da550d61837b1218106f688a732d06bcca/sts-b-dir/glue_data/STS-B/",
        "https://raw.githubusercontent.com/BorealisAI/ranksim-imbalanced-regression/HEAD/sts-b-dir/glue_data/STS-B/",
    ),
    files={
        "train_new.tsv": (920605, "cc71336eb2061891c3f165fa9f812c780f1e86eca0f81e62b4da49ecb9dfb3d1"),
        "dev_new.tsv": (170200, "e5b56cd14e68a5d02ec2a05bfe11d1a45d74582170e61e679c1288f05aa82535"),
        "test_new.tsv": (169190, "8fd7e51459a3deb30adedde0d6a777fea60d2f8a4c65ac86c76d25ca560f3bc8"),
    },
)
# The DIR paper's split: a different unseeded draw (they share only 168 of the 1,000 test pairs),
# so results on it are not comparable with the RankSim paper's. Its hashes are not recorded here;
# the row counts are still checked after the download.
DIR_SOURCE = SplitSource(
    description="DIR repository (YyzHarry/imbalanced-regression), the DIR paper's split",
    base_urls=(
        "https://raw.githubusercontent.com/YyzHarry/imbalanced-regression/"
        "c37d6f46d35e5a0b37277d8d925ad112ed8ef487/sts-b-dir/glue_data/STS-B/",
        "https://raw.githubusercontent.com/YyzHarry/imbalanced-regression/HEAD/sts-b-dir/glue_data/STS-B/",
    ),
    files=None,
)
SOURCES = {"ranksim": RANKSIM_SOURCE, "dir": DIR_SOURCE}

# GLUE STS-B (train.tsv, dev.tsv), the input of --rebuild; the URL the authors' create_sts.py uses.
GLUE_STS_B_URL = "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip"

GLOVE_URL = "https://nlp.stanford.edu/data/glove.840B.300d.zip"
GLOVE_ZIP_SIZE = 2_176_768_927
GLOVE_ZIP = "glove.840B.300d.zip"
GLOVE_TXT = "glove.840B.300d.txt"
GLOVE_DIM = 300
GLOVE_LINES = 2_196_017  # only for the progress bar's total
CACHE_MATRIX = "sts_b_glove.npy"
CACHE_VOCAB = "sts_b_glove.vocab.txt"

SPLITS_HINT = "python -m ranksim.data.prepare sts_b --root {root}"
GLOVE_HINT = ("python -m ranksim.data.prepare glove --root {glove} --sts-b-root {root} "
              "--max-seq-len {max_seq_len} --max-vocab {max_vocab}")


# --------------------------------------------------------------------------------------------
# Reading the TSV files
# --------------------------------------------------------------------------------------------

@dataclass
class SplitText:
    """The rows of one split file: ``N`` pairs with their 1-based line numbers in ``path``."""

    path: Path
    header: list[str]
    rows: list[list[str]]      # all columns, as read
    line_numbers: list[int]
    scores: np.ndarray         # (N,) float32, in [0, 5]

    @property
    def sentence1(self) -> list[str]:
        return [row[SENTENCE1_COL] for row in self.rows]

    @property
    def sentence2(self) -> list[str]:
        return [row[SENTENCE2_COL] for row in self.rows]


def _parse_score(text: str, path: Path, line: int) -> float:
    try:
        score = float(text)
    except ValueError:
        raise UserError(f"{path}, line {line}: score {text!r} (column {SCORE_COL}) is not a number; fix "
                        f"or delete the row, or prepare the file again") from None
    # float() accepts 'nan' and 'inf'; the range test rejects both (nan fails every comparison).
    if not SCORE_RANGE[0] <= score <= SCORE_RANGE[1]:
        raise UserError(f"{path}, line {line}: score {text!r} is outside [0, 5]; fix or delete the row, "
                        f"or prepare the file again")
    return score


def read_sts_tsv(path: str | os.PathLike) -> SplitText:
    """Read and check one GLUE-format STS-B file; every bad row is a ``UserError`` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path} is empty; expected a header row and GLUE STS-B columns")
            if tuple(header[SENTENCE1_COL:SCORE_COL + 1]) != HEADER_NAMES:
                raise UserError(f"{path}, line 1: header {header!r} does not have sentence1, sentence2, "
                                f"score in columns 7, 8, 9; is this a GLUE STS-B file?")
            rows, lines, scores = [], [], []
            for row in reader:
                line = reader.line_num
                if len(row) != len(header):
                    raise UserError(f"{path}, line {line}: {len(row)} tab-separated columns, expected "
                                    f"{len(header)} as in the header (a missing column or a stray tab)")
                scores.append(_parse_score(row[SCORE_COL], path, line))
                rows.append(row)
                lines.append(line)
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err}); prepare the file again") from None
    except csv.Error as err:
        raise UserError(f"{path}: cannot parse as TSV ({err})") from None
    return SplitText(path, header, rows, lines, np.asarray(scores, dtype=np.float32))


def split_paths(root: str | os.PathLike) -> dict[str, Path]:
    """The three split files under ``root``; a ``UserError`` naming the prepare command if any is missing."""
    root = Path(root)
    hint = SPLITS_HINT.format(root=root)
    if not root.is_dir():
        raise UserError(f"STS-B-DIR folder {root} does not exist. Run: {hint}")
    paths = {split: root / name for split, name in SPLIT_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise UserError(f"{root} lacks {', '.join(missing)}. Run: {hint}")
    return paths


# --------------------------------------------------------------------------------------------
# Tokens and vocabulary
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# GloVe
# --------------------------------------------------------------------------------------------

def _open_glove_text(path: Path):
    """A text stream over a GloVe ``.txt`` file, or over the one ``.txt`` inside a GloVe ``.zip``."""
    if path.suffix != ".zip":
        return open(path, encoding="utf-8", errors="replace")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UserError(f"{path} is not a valid zip (an incomplete download?). Delete it and run the "
                        f"command again") from None
    members = [m for m in archive.namelist() if m.endswith(".txt")]
    if len(members) != 1:
        archive.close()
        raise UserError(f"{path} should hold exactly one .txt file of vectors, found {members}")
    # GloVe 840B has a few byte sequences that are not UTF-8; those words cannot be in our
    # vocabulary anyway, so they are replaced rather than fatal.
    return io.TextIOWrapper(archive.open(members[0]), encoding="utf-8", errors="replace")


def build_glove_matrix(glove_path: str | os.PathLike, vocab: list[str], dim: int = GLOVE_DIM,
                       seed: int = 0, progress: bool = True) -> tuple[np.ndarray, int]:
    """Embedding matrix ``(len(vocab), dim)`` float32 for ``vocab`` from a GloVe text file or zip.

    Rows of words found in GloVe hold their vectors; the others (including ``'<unk>'``) hold
    ``numpy.random.default_rng(seed).standard_normal((len(vocab), dim), dtype=float32)``; row 0
    (padding) is 0. Returns the matrix and how many vocabulary words were found.

    A GloVe line is ``word v1 ... v_dim`` separated by single spaces; in 840B a few words contain
    spaces themselves, so the word is everything before the last ``dim`` fields.
    """
    glove_path = Path(glove_path)
    if not glove_path.is_file():
        raise UserError(f"GloVe file {glove_path} does not exist")
    index = {word: i for i, word in enumerate(vocab)}
    matrix = np.random.default_rng(seed).standard_normal((len(vocab), dim), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    with _open_glove_text(glove_path) as fh:
        for line_no, line in enumerate(tqdm(fh, total=GLOVE_LINES if glove_path.name.startswith("glove.840B")
                                            else None, unit=" lines", desc="GloVe", disable=not progress,
                                            mininterval=2.0), start=1):
            line = line.rstrip("\r\n").rstrip(" ")
            spaces = line.count(" ")
            if spaces < dim:
                if not line:
                    continue
                raise UserError(f"{glove_path}, line {line_no}: {spaces} values, expected {dim}; is this a "
                                f"{dim}-d GloVe file?")
            word = line[:line.index(" ")] if spaces == dim else line.rsplit(" ", dim)[0]
            i = index.get(word)
            if i is None or found[i]:
                continue
            try:
                matrix[i] = np.array(line[len(word) + 1:].split(" "), dtype=np.float32)
            except ValueError:
                raise UserError(f"{glove_path}, line {line_no}: the vector of {word!r} is not {dim} "
                                f"numbers") from None
            found[i] = True
    matrix[PAD_INDEX] = 0.0
    found[PAD_INDEX] = False
    return matrix, int(found.sum())


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


def write_embedding_cache(glove_dir: str | os.PathLike, vocab: list[str], matrix: np.ndarray) -> Path:
    """Write the matrix and the vocabulary it belongs to; each file atomically. Returns the matrix path."""
    glove_dir = Path(glove_dir)
    if matrix.shape[0] != len(vocab):
        raise ValueError(f"matrix has {matrix.shape[0]} rows for a vocabulary of {len(vocab)}")
    if any(not word or word != "".join(word.split()) for word in vocab):
        raise ValueError("vocabulary words must be non-empty and free of whitespace to be stored one per line")
    glove_dir.mkdir(parents=True, exist_ok=True)
    # The vocabulary goes first: a crash between the two writes leaves an old matrix beside a new
    # vocabulary, which the shape or vocabulary check at load time reports, never a silent mismatch.
    _atomic_write(glove_dir / CACHE_VOCAB, lambda fh: fh.write(("\n".join(vocab) + "\n").encode("utf-8")))
    _atomic_write(glove_dir / CACHE_MATRIX, lambda fh: np.save(fh, matrix.astype(np.float32), allow_pickle=False))
    return glove_dir / CACHE_MATRIX


def read_embedding_cache(glove_dir: str | os.PathLike, vocab: list[str], rebuild_hint: str) -> np.ndarray:
    """The cached ``(V, dim)`` matrix for ``vocab``; a ``UserError`` with ``rebuild_hint`` if it is
    missing or was built for another vocabulary."""
    glove_dir = Path(glove_dir)
    matrix_path, vocab_path = glove_dir / CACHE_MATRIX, glove_dir / CACHE_VOCAB
    if not matrix_path.is_file() or not vocab_path.is_file():
        raise UserError(f"no cached GloVe matrix in {glove_dir} ({CACHE_MATRIX} and {CACHE_VOCAB}). "
                        f"Run: {rebuild_hint}")
    cached = vocab_path.read_text(encoding="utf-8").split("\n")[:-1]
    if cached != vocab:
        first = next((i for i, (a, b) in enumerate(zip(cached, vocab)) if a != b), min(len(cached), len(vocab)))
        raise UserError(
            f"the cached GloVe matrix in {glove_dir} was built for a different vocabulary ({len(cached)} "
            f"words, now {len(vocab)}; they first differ at index {first}): the split files, max_seq_len "
            f"or max_vocab changed. Rebuild it: {rebuild_hint}")
    matrix = np.load(matrix_path, allow_pickle=False)
    if matrix.ndim != 2 or matrix.shape[0] != len(vocab) or matrix.dtype != np.float32:
        raise UserError(f"{matrix_path} holds a {matrix.dtype} array of shape {matrix.shape}, expected "
                        f"({len(vocab)}, {GLOVE_DIM}) float32. Rebuild it: {rebuild_hint}")
    return matrix


# --------------------------------------------------------------------------------------------
# Dataset API
# --------------------------------------------------------------------------------------------

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
    """The three encoded splits, the vocabulary and (optionally) the GloVe matrix; see :func:`load_sts_b`."""

    def __init__(self, root: Path, vocab: list[str], splits: dict[str, _EncodedSplit],
                 embeddings: np.ndarray | None, max_seq_len: int):
        self.root = root
        self.vocab = vocab
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


def load_splits_tokenised(root: str | os.PathLike, max_seq_len: int = 40) -> dict[str, TokenisedSplit]:
    return {split: tokenise_split(path, max_seq_len) for split, path in split_paths(root).items()}


def vocab_for_splits(tokenised: dict[str, TokenisedSplit], max_vocab: int = 30000) -> list[str]:
    return build_vocab(_reading_order([tokenised[s] for s in SPLIT_FILES]), max_vocab)


def load_sts_b(root: str | os.PathLike, glove_dir: str | os.PathLike | None = None, max_seq_len: int = 40,
               max_vocab: int = 30000) -> StsBData:
    """Read, tokenise and index the three splits; load the cached GloVe matrix when ``glove_dir`` is given.

    Without ``glove_dir``, ``embeddings`` is ``None`` (the model then learns its own). A missing
    folder, file or cache is a ``UserError`` that names the preparation command.
    """
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be positive, got {max_seq_len}")
    root = Path(root)
    tokenised = load_splits_tokenised(root, max_seq_len)
    vocab = vocab_for_splits(tokenised, max_vocab)
    index = {word: i for i, word in enumerate(vocab)}
    splits = {}
    for split, tok in tokenised.items():
        ids1, len1 = encode(tok.tokens1, index, max_seq_len)
        ids2, len2 = encode(tok.tokens2, index, max_seq_len)
        splits[split] = _EncodedSplit(ids1, len1, ids2, len2, tok.text.scores.copy())
    embeddings = None
    if glove_dir is not None:
        hint = GLOVE_HINT.format(glove=glove_dir, root=root, max_seq_len=max_seq_len, max_vocab=max_vocab)
        embeddings = read_embedding_cache(glove_dir, vocab, hint)
    logger.info("STS-B-DIR %s: %s pairs, vocabulary %d, embeddings %s", root,
                " / ".join(f"{len(s.labels)} {name}" for name, s in splits.items()), len(vocab),
                "GloVe (cached)" if embeddings is not None else "learned from scratch")
    return StsBData(root, vocab, splits, embeddings, max_seq_len)


# --------------------------------------------------------------------------------------------
# Rebuilding the split from GLUE STS-B (SPEC 6)
# --------------------------------------------------------------------------------------------

def rebuild_splits(glue_dir: str | os.PathLike, out_root: str | os.PathLike, seed: int = 0,
                   num_bins: int = 20, per_bin: int = 100) -> dict[str, int]:
    """Rebuild ``{train,dev,test}_new.tsv`` from GLUE STS-B ``train.tsv`` + ``dev.tsv``; return row counts.

    The DIR procedure with a fixed seed: pool both files, put each pair in one of ``num_bins``
    equal score bins over ``[0, 5]`` (5.0 in the last; the bins of :func:`ranksim.binning.label_bins`
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
        _atomic_write(out_root / SPLIT_FILES[split], lambda fh, data=data: fh.write(data))
    return {split: len(indices) for split, indices in chosen.items()}


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------

def _download(url: str, dest: Path, expected_size: int | None = None) -> Path:
    # One indirection so that tests can replace the network; imported late so that reading the
    # data never needs the downloader.
    from ranksim.data.download import download
    return download(url, dest, expected_size)


def _matches(path: Path, expected: tuple[int, str] | None) -> bool:
    return expected is None or (path.stat().st_size == expected[0] and sha256_of(path) == expected[1])


def download_splits(root: str | os.PathLike, source: str = "ranksim", base_url: str | None = None,
                    force: bool = False) -> None:
    """Fetch the three split files of ``source`` into ``root``, checking sizes and hashes when known.

    A file already there and matching is kept (without known hashes, any file there is kept). One
    that differs (a rebuilt split?) is an error unless ``force``, which replaces it. ``base_url`` (ending in ``/``) replaces the source's URLs,
    for a mirror or a test server; the hashes still apply.
    """
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    spec = SOURCES[source]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bases = (base_url if base_url.endswith("/") else base_url + "/",) if base_url else spec.base_urls
    logger.info("STS-B-DIR split from the %s", spec.description)
    for name in SPLIT_FILES.values():
        dest = root / name
        expected = spec.files[name] if spec.files else None
        if dest.is_file():
            if _matches(dest, expected):
                logger.info("%s is already there and matches the published file", dest)
                continue
            if not force:
                raise UserError(f"{dest} exists but differs from the published {source} file (a rebuilt split, "
                                f"or another source?). Pass --force to replace it, or use another --root")
            dest.unlink()
        errors = []
        for base in bases:
            try:
                _download(base + name, dest, expected[0] if expected else None)
                break
            except UserError as err:
                errors.append(str(err))
                logger.warning("%s", err)
        else:
            raise UserError(f"could not download {name}: {' | '.join(errors)}")
        if not _matches(dest, expected):
            dest.unlink()
            raise UserError(f"{base + name} gave a file whose SHA-256 differs from the published one; it "
                            f"was deleted. Try again later, or use --rebuild --glue-dir")


# --------------------------------------------------------------------------------------------
# Command-line entry points (dispatched by ranksim.data.prepare)
# --------------------------------------------------------------------------------------------

def _count_table(root: Path) -> tuple[str, dict[str, int]]:
    counts = {split: len(read_sts_tsv(path).rows) for split, path in split_paths(root).items()}
    lines = [f"{'split':<6} {'file':<14} {'rows':>6} {'published':>10}"]
    for split, name in SPLIT_FILES.items():
        mark = "" if counts[split] == PUBLISHED_ROWS[split] else "  (differs)"
        lines.append(f"{split:<6} {name:<14} {counts[split]:>6,} {PUBLISHED_ROWS[split]:>10,}{mark}")
    return "\n".join(lines), counts


def prepare_sts_b_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ranksim.data.prepare sts_b",
        description="Download the STS-B-DIR split files (train_new.tsv, dev_new.tsv, test_new.tsv), or "
                    "rebuild them from GLUE STS-B, then check every row and print the row counts.")
    parser.add_argument("--root", default="data/sts-b-dir", help="folder for the three split files "
                        "(default: %(default)s)")
    parser.add_argument("--source", choices=sorted(SOURCES), default="ranksim",
                        help="which published split to download: 'ranksim' (the RankSim paper's, default) or "
                             "'dir' (the DIR paper's; a different draw, results are not comparable)")
    parser.add_argument("--base-url", default=None,
                        help="download from this folder URL instead (a mirror; http(s):// or file://)")
    parser.add_argument("--force", action="store_true",
                        help="replace split files that exist but differ from what this command would write")
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild the split from GLUE STS-B with a fixed seed instead of downloading it")
    parser.add_argument("--glue-dir", default=None,
                        help=f"with --rebuild: folder holding GLUE STS-B train.tsv and dev.tsv (unzip {GLUE_STS_B_URL})")
    parser.add_argument("--seed", type=int, default=0, help="with --rebuild: seed of the draw (default: %(default)s)")
    args = parser.parse_args(argv)
    root = Path(args.root)

    if args.rebuild:
        if not args.glue_dir:
            raise UserError(f"--rebuild needs --glue-dir, a folder with GLUE STS-B train.tsv and dev.tsv "
                            f"(unzip {GLUE_STS_B_URL})")
        existing = [root / n for n in SPLIT_FILES.values() if (root / n).exists()]
        if existing and not args.force:
            raise UserError(f"{root} already holds {', '.join(p.name for p in existing)}; pass --force to "
                            f"overwrite them with a rebuilt split, or choose another --root")
        counts = rebuild_splits(args.glue_dir, root, seed=args.seed)
        logger.info("rebuilt the split with seed %d: %s", args.seed, counts)
    else:
        if args.glue_dir:
            raise UserError("--glue-dir is used only with --rebuild")
        download_splits(root, args.source, base_url=args.base_url, force=args.force)

    table, _ = _count_table(root)
    print(table)
    return 0


def prepare_glove_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ranksim.data.prepare glove",
        description="Download GloVe 840B 300-d (2 GB zip, resumable) and cache the embedding matrix of the "
                    "STS-B-DIR vocabulary, so that training loads it in seconds. Needs the split files.")
    parser.add_argument("--root", default="data/glove", help="folder for the GloVe zip and the cached matrix "
                        "(default: %(default)s)")
    parser.add_argument("--sts-b-root", default="data/sts-b-dir",
                        help="folder with the STS-B-DIR split files (default: %(default)s)")
    parser.add_argument("--url", default=GLOVE_URL, help="where to download the GloVe zip (default: %(default)s)")
    parser.add_argument("--max-seq-len", type=int, default=40,
                        help="tokens kept per sentence; must match the training config (default: %(default)s)")
    parser.add_argument("--max-vocab", type=int, default=30000,
                        help="vocabulary size; must match the training config (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the N(0, 1) vectors of words missing from GloVe (default: %(default)s)")
    args = parser.parse_args(argv)
    root = Path(args.root)

    # The vocabulary first: a missing split should fail before a 2 GB download, not after.
    vocab = vocab_for_splits(load_splits_tokenised(args.sts_b_root, args.max_seq_len), args.max_vocab)
    source = root / GLOVE_TXT
    if not source.is_file():
        source = root / GLOVE_ZIP
        expected = GLOVE_ZIP_SIZE if args.url == GLOVE_URL else None
        _download(args.url, source, expected)
    logger.info("reading %s for %d vocabulary words (a few minutes for the full GloVe)", source, len(vocab))
    matrix, found = build_glove_matrix(source, vocab, seed=args.seed)
    path = write_embedding_cache(root, vocab, matrix)
    words = len(vocab) - 1
    print(f"vocabulary   {words:>7,} words + padding\n"
          f"in GloVe     {found:>7,} ({100.0 * found / max(words, 1):.1f}%)\n"
          f"random       {words - found:>7,} (N(0, 1), seed {args.seed})\n"
          f"cache        {path} and {path.with_name(CACHE_VOCAB).name}")
    return 0
