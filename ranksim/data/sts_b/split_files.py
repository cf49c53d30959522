"""The STS-B-DIR split files: their format, and reading and checking them.

Files (SPEC 6). ``<root>/{train_new,dev_new,test_new}.tsv`` hold the GLUE STS-B columns with a
header row, tab separated, no quoting (sentences contain quote characters): ``sentence1``,
``sentence2`` and ``score`` are columns 7, 8 and 9 (0-based). Scores lie in ``[0, 5]``. The
splits are called ``'train'``, ``'val'`` (``dev_new.tsv``) and ``'test'``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ranksim.errors import UserError

SPLIT_FILES = {"train": "train_new.tsv", "val": "dev_new.tsv", "test": "test_new.tsv"}
SENTENCE1_COL, SENTENCE2_COL, SCORE_COL = 7, 8, 9
HEADER_NAMES = ("sentence1", "sentence2", "score")
SCORE_RANGE = (0.0, 5.0)

SPLITS_HINT = "python -m ranksim.data.prepare sts_b --root {root}"


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
