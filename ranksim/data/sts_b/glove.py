"""GloVe for STS-B: downloading the vectors, parsing them, and the embedding cache.

Embeddings: GloVe 840B 300-d. A vocabulary word found in GloVe gets its vector (the last line
if GloVe lists a word twice: the authors overwrite the row at each line, SPEC 6). ``'<unk>'`` and words missing from GloVe get N(0, 1) vectors from
``numpy.random.default_rng(seed)``. The padding row is 0. ``python -m ranksim.data.prepare glove``
reads the 2 GB zip once and caches the ``(V, 300)`` float32 matrix as ``<glove_dir>/sts_b_glove.npy``
beside ``sts_b_glove.vocab.txt``, the vocabulary it was built for (one token per line), and
``sts_b_glove.found.npy``, which rows hold a GloVe vector (the converter checks an authors'
checkpoint against those rows). Loading checks that vocabulary against the current one, so a
changed split, tokenizer, ``max_seq_len`` or ``max_vocab`` cannot silently pair rows with the
wrong words.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ranksim.data.files import atomic_write
from ranksim.data.sts_b.text import PAD_INDEX
from ranksim.errors import UserError

GLOVE_URL = "https://nlp.stanford.edu/data/glove.840B.300d.zip"
GLOVE_ZIP_SIZE = 2_176_768_927
GLOVE_ZIP = "glove.840B.300d.zip"
GLOVE_TXT = "glove.840B.300d.txt"
GLOVE_DIM = 300
GLOVE_LINES = 2_196_017  # only for the progress bar's total
CACHE_MATRIX = "sts_b_glove.npy"
CACHE_VOCAB = "sts_b_glove.vocab.txt"
CACHE_FOUND = "sts_b_glove.found.npy"

GLOVE_HINT = ("python -m ranksim.data.prepare glove --root {glove} --sts-b-root {root} "
              "--max-seq-len {max_seq_len} --max-vocab {max_vocab}")


def glove_source(glove_dir: str | os.PathLike, url: str = GLOVE_URL) -> Path:
    """The GloVe vectors in ``glove_dir``: the ``.txt`` when it is there, else the zip, downloaded
    (resumably) when missing. The size of the official zip is checked."""
    from ranksim.data.download import download  # only the preparation command downloads

    glove_dir = Path(glove_dir)
    source = glove_dir / GLOVE_TXT
    if not source.is_file():
        source = glove_dir / GLOVE_ZIP
        expected = GLOVE_ZIP_SIZE if url == GLOVE_URL else None
        download(url, source, expected)
    return source


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
                       seed: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Embedding matrix ``(len(vocab), dim)`` float32 for ``vocab`` from a GloVe text file or zip.

    Rows of words found in GloVe hold their vectors; the others (including ``'<unk>'``) hold
    ``numpy.random.default_rng(seed).standard_normal((len(vocab), dim), dtype=float32)``; row 0
    (padding) is 0. A word on several lines gets the last one's vector. Returns the matrix and
    which rows hold a GloVe vector, ``(len(vocab),)`` bool (padding excluded).

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
            if i is None:
                continue
            try:
                matrix[i] = np.array(line[len(word) + 1:].split(" "), dtype=np.float32)
            except ValueError:
                raise UserError(f"{glove_path}, line {line_no}: the vector of {word!r} is not {dim} "
                                f"numbers") from None
            found[i] = True
    matrix[PAD_INDEX] = 0.0
    found[PAD_INDEX] = False
    return matrix, found


def write_embedding_cache(glove_dir: str | os.PathLike, vocab: list[str], matrix: np.ndarray,
                          found: np.ndarray | None = None) -> Path:
    """Write the matrix, the vocabulary it belongs to and (when given) which rows are GloVe's;
    each file atomically. Returns the matrix path."""
    glove_dir = Path(glove_dir)
    if matrix.shape[0] != len(vocab):
        raise ValueError(f"matrix has {matrix.shape[0]} rows for a vocabulary of {len(vocab)}")
    if any(not word or word != "".join(word.split()) for word in vocab):
        raise ValueError("vocabulary words must be non-empty and free of whitespace to be stored one per line")
    glove_dir.mkdir(parents=True, exist_ok=True)
    # The vocabulary goes first: a crash between the two writes leaves an old matrix beside a new
    # vocabulary, which the shape or vocabulary check at load time reports, never a silent mismatch.
    atomic_write(glove_dir / CACHE_VOCAB, lambda fh: fh.write(("\n".join(vocab) + "\n").encode("utf-8")))
    if found is not None:
        atomic_write(glove_dir / CACHE_FOUND, lambda fh: np.save(fh, np.asarray(found, dtype=bool), allow_pickle=False))
    else:
        (glove_dir / CACHE_FOUND).unlink(missing_ok=True)
    atomic_write(glove_dir / CACHE_MATRIX, lambda fh: np.save(fh, matrix.astype(np.float32), allow_pickle=False))
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


def read_glove_rows(glove_dir: str | os.PathLike, vocab: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(matrix, found)`` of the cache in ``glove_dir`` when it was built for ``vocab`` and records
    which rows hold GloVe vectors; ``None`` otherwise (no cache, another vocabulary, or a cache
    written before the rows were recorded)."""
    glove_dir = Path(glove_dir)
    found_path = glove_dir / CACHE_FOUND
    if not found_path.is_file():
        return None
    try:
        matrix = read_embedding_cache(glove_dir, vocab, "")
    except UserError:
        return None
    found = np.load(found_path, allow_pickle=False)
    if found.dtype != bool or found.shape != (len(vocab),):
        return None
    return matrix, found
