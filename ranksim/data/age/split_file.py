"""Age split files (``age,path,split``, paths relative to the data root; SPEC 6): reading and writing."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ranksim.data.files import atomic_write
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def read_age_split(csv_path: str | os.PathLike, age_range: tuple[int, int] | None = None) -> pd.DataFrame:
    """Read an age split file strictly.

    The file is UTF-8 CSV with a header holding at least ``age``, ``path`` and ``split`` (other
    columns are ignored). Blank lines are skipped. Any other malformed row (a wrong number of
    fields, an age that is not an integer literal or lies outside ``age_range`` (inclusive; not
    checked when ``None``), an empty path, a split other than train / val / test) raises
    :class:`UserError` naming the file and the line number.

    Returns:
        DataFrame with columns ``age`` (int64), ``path`` (str, relative to the data root) and
        ``split`` (str), in file order.
    """
    path = Path(csv_path)
    ages: list[int] = []
    paths: list[str] = []
    splits: list[str] = []
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        # The split file is named after its dataset (agedb.csv, imdb_wiki.csv), which names the command.
        dataset = path.stem if path.stem in ("agedb", "imdb_wiki") else "agedb|imdb_wiki"
        raise UserError(f"split file {path} does not exist; get it with "
                        f"'python -m ranksim.data.prepare {dataset} --root {path.parent}' (see data/README.md)") from None
    except OSError as err:
        raise UserError(f"cannot read split file {path}: {err.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader, [])]
            if not header:
                raise UserError(f"{path} is empty; expected a header 'age,path,split' and one row per image")
            missing = [c for c in ("age", "path", "split") if c not in header]
            if missing:
                raise UserError(f"{path}, line 1: the header {','.join(header)!r} lacks {', '.join(missing)}; "
                                f"an age split file has the columns age,path,split")
            i_age, i_path, i_split = (header.index(c) for c in ("age", "path", "split"))
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if len(row) != len(header):
                    raise UserError(f"{path}, line {line}: {len(row)} fields where the header has "
                                    f"{len(header)} ({','.join(header)}); fix or delete the row")
                age_text = row[i_age].strip()
                try:
                    age = int(age_text, 10)
                except ValueError:
                    raise UserError(f"{path}, line {line}: age {age_text!r} is not an integer; "
                                    f"fix the row or get the split file again") from None
                if age_range is not None and not age_range[0] <= age <= age_range[1]:
                    raise UserError(f"{path}, line {line}: age {age} is outside {age_range[0]}..{age_range[1]}, "
                                    f"the ages this dataset allows; fix or delete the row")
                rel = row[i_path].strip()
                if not rel:
                    raise UserError(f"{path}, line {line}: the path is empty; fix or delete the row")
                split = row[i_split].strip()
                if split not in SPLITS:
                    raise UserError(f"{path}, line {line}: split {split!r} is not one of "
                                    f"{', '.join(SPLITS)}; fix the row or get the split file again")
                ages.append(age)
                paths.append(rel)
                splits.append(split)
        except csv.Error as err:
            raise UserError(f"{path}, line {reader.line_num}: not valid CSV ({err})") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}, line {reader.line_num + 1}: not UTF-8 text; is it really a split file?") from None
    if not ages:
        raise UserError(f"{path} has a header but no rows; get the split file again")
    return pd.DataFrame({"age": np.asarray(ages, dtype=np.int64), "path": paths, "split": splits})


def write_age_split(df: pd.DataFrame, csv_path: str | os.PathLike) -> Path:
    """Write ``age,path,split`` to ``csv_path`` atomically (a temporary file, then a rename)."""
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: df[["age", "path", "split"]].to_csv(fh, index=False, lineterminator="\n",
                                                                      encoding="utf-8"))
    logger.info("wrote %s (%d rows)", path, len(df))
    return path
