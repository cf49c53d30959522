"""Preparation of the two age benchmarks, IMDB-WIKI-DIR and AgeDB-DIR (SPEC 6).

Commands (through the dispatcher ``python -m ranksim.data.prepare``):

- ``imdb_wiki --root DIR``: download ``imdb_crop.tar`` and ``wiki_crop.tar`` from the IMDB-WIKI
  site (resumable), extract them, and download the DIR authors' split file ``imdb_wiki.csv``;
  ``--rebuild-split`` rebuilds it from ``imdb.mat`` / ``wiki.mat`` instead.
- ``agedb --root DIR --zip AgeDB.zip --password PW`` (or ``--folder DIR``): unpack the AgeDB zip
  that its authors give on request, and download ``agedb.csv`` (or ``--rebuild-split`` it from the
  file names ``id_name_age_gender.jpg``).

Both end with :func:`verify_age_split` (also alone with ``--verify-only``): every path exists, every
age is an integer in range, and the rows per split are printed beside the published totals.

Layout of a prepared root (paths in the split file are relative to it)::

    data/imdb-wiki-dir/imdb_crop/00/nm..._1968.jpg   data/agedb-dir/AgeDB/0_MariaCallas_35_f.jpg
    data/imdb-wiki-dir/wiki_crop/00/..._2009.jpg     data/agedb-dir/agedb.csv
    data/imdb-wiki-dir/imdb_wiki.csv

Split rebuilding (:func:`make_balanced_split`) follows the DIR procedure: for each integer age
0..120 in increasing order, shuffle that age's rows and give ``min(n // 3, max_per_age)`` to val,
as many again to test, the rest to train. **Seeding:** one ``random.Random(seed)`` drives the whole
procedure, used in the same order as the DIR authors' script (``random.seed(666)`` once, then
``random.shuffle`` per age), so that from the same metadata in the same order the rebuilt split
is the authors' split. A per-age RNG would make each age independent of the others, but could never
reproduce the published files; we chose reproduction. The metadata order is fixed: the ``.mat``
order, IMDB before WIKI, for IMDB-WIKI; sorted file names for AgeDB (the authors used
``os.listdir`` order, which no one can reproduce, so a rebuilt AgeDB-DIR split has the published
counts per split but not the same images; use the published file to compare with papers).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import shutil
import tarfile
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ranksim.data.download import download
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SEED = 666                       # the DIR authors' seed for the balanced val/test draw
BALANCED_AGES = range(0, 121)    # ages that get balanced val/test rows; older ones stay in train
MIN_FACE_SCORE = 1.0             # IMDB-WIKI face detector score a face must reach (DIR's min_score)
IMDB_WIKI_AGE_RANGE = (0, 200)   # ages IMDB-WIKI-DIR keeps (SPEC 6)

IMDB_WIKI_URL_BASE = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/"
DIR_REPO_RAW = "https://raw.githubusercontent.com/YyzHarry/imbalanced-regression/main/"
AGEDB_SITE = "https://ibug.doc.ic.ac.uk/resources/agedb/"
AGEDB_PASSWORD_ENV = "AGEDB_ZIP_PASSWORD"
AGEDB_IMAGE_DIR = "AgeDB"
MARKER = ".ranksim_complete"     # written into an extracted folder once extraction has finished


@dataclass(frozen=True)
class AgeBenchmark:
    """What differs between the two age benchmarks."""

    name: str                      # command and split-file stem
    title: str
    split_url: str                 # the DIR authors' published split file
    split_size: int | None         # its size in bytes when known (checked after download)
    published: dict = field(default_factory=dict)  # rows per split of the published split
    published_source: str = ""
    age_range: tuple = (0, 120)    # valid ages in the split file, inclusive
    max_per_age: int = 30          # cap of val (and of test) rows per age
    default_root: str = ""         # the root the benchmark configs read (configs/*/base.yaml)

    @property
    def split_file(self) -> str:
        return f"{self.name}.csv"


IMDB_WIKI = AgeBenchmark(
    name="imdb_wiki", title="IMDB-WIKI-DIR",
    split_url=DIR_REPO_RAW + "imdb-wiki-dir/data/imdb_wiki.csv", split_size=None,
    published={"train": 191_509, "val": 11_022, "test": 11_022}, published_source="DIR paper",
    age_range=IMDB_WIKI_AGE_RANGE, max_per_age=150, default_root="data/imdb-wiki-dir")
AGEDB = AgeBenchmark(
    name="agedb", title="AgeDB-DIR",
    # 687,669 bytes: the published file as checked against the copy in ../shared/data.
    split_url=DIR_REPO_RAW + "agedb-dir/data/agedb.csv", split_size=687_669,
    published={"train": 12_208, "val": 2_140, "test": 2_140}, published_source="published agedb.csv",
    # Published ages are 1..101; 0..120 also admits a rebuilt split of any AgeDB release.
    age_range=(0, 120), max_per_age=30, default_root="data/agedb-dir")
BENCHMARKS = {b.name: b for b in (IMDB_WIKI, AGEDB)}


# --------------------------------------------------------------------------------------------
# Split files


def read_age_split(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read an age split file strictly.

    The file is UTF-8 CSV with a header holding at least ``age``, ``path`` and ``split`` (other
    columns are ignored). Blank lines are skipped. Any other malformed row (a wrong number of
    fields, an age that is not an integer literal, an empty path, a split other than train / val /
    test) raises :class:`UserError` naming the file and the line number.

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
        raise UserError(f"split file {path} does not exist; get it with "
                        f"'python -m ranksim.data.prepare DATASET --root DIR' (see data/README.md)") from None
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
    tmp = path.with_name(path.name + ".tmp")
    df[["age", "path", "split"]].to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8")
    os.replace(tmp, path)
    logger.info("wrote %s (%d rows)", path, len(df))
    return path


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


# --------------------------------------------------------------------------------------------
# Metadata


def imdb_wiki_age(dob: np.ndarray, photo_taken: np.ndarray) -> np.ndarray:
    """Age at the photo, as the IMDB-WIKI authors and DIR compute it (SPEC 6).

    ``dob`` is a MATLAB serial date (day 1 is 1 January of year 0); ``dob - 366`` is the Python
    proleptic-Gregorian ordinal (clamped to at least 1, as DIR does). The photo is assumed taken on
    1 July: ``age = photo_taken - birth_year``, minus 1 more if born in July or later. Vectorised
    with ``datetime64`` (same calendar as ``datetime.fromordinal``). Non-finite inputs give NaN.

    Returns:
        float64 array of integer-valued ages (NaN where undefined).
    """
    dob = np.asarray(dob, dtype=np.float64).ravel()
    taken = np.asarray(photo_taken, dtype=np.float64).ravel()
    valid = np.isfinite(dob) & np.isfinite(taken)
    # int() in DIR truncates toward zero; astype does too.
    ordinal = np.maximum(np.where(valid, dob, 367.0).astype(np.int64) - 366, 1)
    days = (ordinal - 719_163).astype("datetime64[D]")  # 719,163 = date(1970, 1, 1).toordinal()
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    age = np.where(valid, taken, 0.0) - year - (month >= 7)
    return np.where(valid, age, np.nan)


def _mat_string(cell) -> str:
    # loadmat gives each cell of a 1xN cell array of strings as a (1,) str array ((0,) if empty).
    while isinstance(cell, np.ndarray):
        if cell.size == 0:
            return ""
        cell = cell.ravel()[0]
    return str(cell)


def read_imdb_wiki_mat(mat_path: str | os.PathLike, db: str) -> pd.DataFrame:
    """Faces kept by SPEC 6 from ``imdb.mat`` or ``wiki.mat``, in the ``.mat`` order.

    Keeps a face when ``face_score >= 1`` (NaN fails; DIR's ``<`` test would keep a NaN score, which
    the real files do not hold), there is no second face (``second_face_score`` NaN or <= 0), and
    ``0 <= age <= 200``.

    Returns:
        DataFrame with ``age`` (int64) and ``path`` (``{db}_crop/<full_path>``).
    """
    import scipy.io  # only the rebuild needs scipy's MATLAB reader

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise UserError(f"{mat_path} not found; it comes inside {db}_crop.tar: run the imdb_wiki "
                        f"command without --rebuild-split first, or extract the tar into {mat_path.parent.parent}")
    try:
        mat = scipy.io.loadmat(mat_path, variable_names=[db])
    except Exception as err:  # scipy raises assorted ValueError/TypeError/OSError on bad files
        raise UserError(f"cannot read {mat_path} as a MATLAB file ({err}); delete {mat_path.parent} "
                        f"and its tar, and run the command again to fetch it afresh") from None
    try:
        record = mat[db][0, 0]
        columns = {name: record[name] for name in ("full_path", "dob", "photo_taken", "face_score",
                                                   "second_face_score")}
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(f"{mat_path} does not hold the IMDB-WIKI struct {db!r} with fields full_path, dob, "
                        f"photo_taken, face_score, second_face_score ({err!r})") from None
    n = columns["full_path"].size
    sizes = {name: value.size for name, value in columns.items()}
    if len(set(sizes.values())) != 1:
        raise UserError(f"{mat_path}: the fields of {db!r} have different lengths {sizes}; the file is damaged")
    age = imdb_wiki_age(columns["dob"], columns["photo_taken"])
    face = columns["face_score"].astype(np.float64).ravel()
    second = columns["second_face_score"].astype(np.float64).ravel()
    lo, hi = IMDB_WIKI_AGE_RANGE
    with np.errstate(invalid="ignore"):
        keep = (face >= MIN_FACE_SCORE) & ~(second > 0) & (age >= lo) & (age <= hi)
    full_path = columns["full_path"].ravel()
    paths = [f"{db}_crop/{_mat_string(full_path[i])}" for i in np.flatnonzero(keep)]
    logger.info("%s: kept %d of %d faces (face score >= %g, one face, age %d..%d)",
                mat_path.name, len(paths), n, MIN_FACE_SCORE, lo, hi)
    return pd.DataFrame({"age": age[keep].astype(np.int64), "path": paths})


def parse_agedb_name(name: str) -> int | None:
    """Age from an AgeDB file name ``id_name_age_gender.jpg`` (the name may hold underscores)."""
    parts = name.rsplit(".", 1)[0].split("_")
    if len(parts) < 4 or not parts[0].isdigit() or not parts[-2].isdigit() or parts[-1].lower() not in ("m", "f"):
        return None
    return int(parts[-2])


def agedb_metadata(root: str | os.PathLike) -> pd.DataFrame:
    """``age`` and ``path`` (``AgeDB/<file>``) of every ``.jpg`` in ``<root>/AgeDB``, by sorted name."""
    image_dir = Path(root) / AGEDB_IMAGE_DIR
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(".jpg") and not n.startswith("."))
    if not names:
        raise UserError(f"no .jpg files in {image_dir}; unpack AgeDB first (--zip or --folder)")
    ages = [parse_agedb_name(n) for n in names]
    bad = [n for n, a in zip(names, ages, strict=True) if a is None]
    if bad:
        raise UserError(f"{len(bad)} file(s) in {image_dir} are not named id_name_age_gender.jpg "
                        f"(e.g. {', '.join(bad[:3])}); rename or remove them")
    return pd.DataFrame({"age": np.asarray(ages, dtype=np.int64), "path": [f"{AGEDB_IMAGE_DIR}/{n}" for n in names]})


# --------------------------------------------------------------------------------------------
# Verification


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_age_split`. Problems are listed by file name."""

    counts: dict
    published: dict
    published_source: str
    age_min: int
    age_max: int
    age_range: tuple
    missing: list = field(default_factory=list)      # listed but not on disk
    empty: list = field(default_factory=list)        # on disk with 0 bytes
    bad_ages: list = field(default_factory=list)     # (path, age) outside age_range
    duplicates: list = field(default_factory=list)   # paths listed more than once
    files_checked: bool = True

    @property
    def ok(self) -> bool:
        return not (self.missing or self.empty or self.bad_ages or self.duplicates)

    @property
    def counts_match(self) -> bool:
        return all(self.counts.get(s, 0) == self.published.get(s) for s in SPLITS)


def _scan(root: Path, paths: list[str]) -> tuple[list[str], list[str]]:
    # One directory listing per folder instead of one stat per path: 200k stats cost minutes on a
    # network file system, a few hundred listings do not.
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel in paths:
        folder, _, name = rel.rpartition("/")
        by_dir[folder].append(name)
    missing, empty = [], []
    for folder, names in tqdm(by_dir.items(), desc="checking images", unit="dir", leave=False,
                              disable=len(by_dir) < 20):
        try:
            entries = {e.name: e for e in os.scandir(root / folder)}
        except (FileNotFoundError, NotADirectoryError):
            entries = {}
        for name in names:
            rel = f"{folder}/{name}" if folder else name
            entry = entries.get(name)
            if entry is None or not entry.is_file():
                missing.append(rel)
            elif entry.stat().st_size == 0:
                empty.append(rel)
    return missing, empty


def verify_age_split(root: str | os.PathLike, split: pd.DataFrame | str | os.PathLike,
                     benchmark: AgeBenchmark, check_files: bool = True) -> VerifyReport:
    """Check a split file against the data root and the published totals.

    Checks: every path exists under ``root`` as a non-empty file (when ``check_files``), no path
    is listed twice, every age lies in ``benchmark.age_range``; and counts rows per split for
    comparison with ``benchmark.published`` (a difference is reported, not an error).
    """
    df = read_age_split(split) if not isinstance(split, pd.DataFrame) else split
    root = Path(root)
    counts = {s: int((df["split"] == s).sum()) for s in SPLITS}
    lo, hi = benchmark.age_range
    out_of_range = df[(df["age"] < lo) | (df["age"] > hi)]
    report = VerifyReport(counts=counts, published=dict(benchmark.published),
                          published_source=benchmark.published_source,
                          age_min=int(df["age"].min()), age_max=int(df["age"].max()), age_range=(lo, hi),
                          bad_ages=list(zip(out_of_range["path"], out_of_range["age"].astype(int), strict=True)),
                          duplicates=sorted(set(df.loc[df["path"].duplicated(), "path"])),
                          files_checked=check_files)
    if check_files:
        report.missing, report.empty = _scan(root, df["path"].tolist())
    return report


def _listing(items: list, limit: int = 10) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def print_verify_report(report: VerifyReport, benchmark: AgeBenchmark, split_path: Path, root: Path) -> None:
    """Print the counts table (stdout) and log each problem, naming the files."""
    lines = [f"{benchmark.title}: {split_path}",
             f"{'split':<6} {'rows':>9} {'published':>10} {'diff':>7}"]
    for s in SPLITS:
        ours, theirs = report.counts[s], report.published.get(s)
        lines.append(f"{s:<6} {ours:>9,} {theirs:>10,} {ours - theirs:>+7,}")
    lines.append(f"ages {report.age_min}..{report.age_max} (allowed {report.age_range[0]}..{report.age_range[1]})")
    if report.files_checked:
        n = sum(report.counts.values())
        lines.append(f"images under {root}: {n - len(report.missing):,} of {n:,} found, "
                     f"{len(report.empty):,} empty")
    print("\n".join(lines))
    if not report.counts_match:
        logger.warning("the rows per split differ from the %s (%s); results will not be comparable "
                       "with the papers' tables", report.published_source,
                       " / ".join(f"{report.published[s]:,}" for s in SPLITS))
    if report.missing:
        logger.error("%d image(s) listed in %s are missing under %s: %s", len(report.missing),
                     split_path.name, root, _listing(report.missing))
        if len(report.missing) == sum(report.counts.values()):
            logger.error("no image at all was found: is %s the folder that holds the images' folders "
                         "(the split file's paths are relative to it)?", root)
    if report.empty:
        logger.error("%d image(s) are empty files: %s", len(report.empty), _listing(report.empty))
    if report.bad_ages:
        logger.error("%d row(s) have an age outside %d..%d: %s", len(report.bad_ages), *report.age_range,
                     _listing([f"{p} ({a})" for p, a in report.bad_ages]))
    if report.duplicates:
        logger.error("%d path(s) are listed more than once: %s", len(report.duplicates), _listing(report.duplicates))
    if report.ok:
        logger.info("%s verified", split_path)


def _verify_cli(root: Path, split_path: Path, benchmark: AgeBenchmark, check_files: bool = True) -> int:
    report = verify_age_split(root, split_path, benchmark, check_files=check_files)
    print_verify_report(report, benchmark, split_path, root)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------------------------
# Archives


def extract_tar(tar_path: Path, dest: Path) -> None:
    """Extract ``tar_path`` into ``dest`` with a progress bar; only plain files and folders inside
    ``dest`` are accepted (the tar ``data`` filter)."""
    try:
        with tarfile.open(tar_path) as tar, tqdm(total=tar_path.stat().st_size, unit="B", unit_scale=True,
                                                 unit_divisor=1024, desc=f"extracting {tar_path.name}") as bar:
            # The "data" filter refuses absolute paths, ".." and links leaving dest (Python >= 3.11.4).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            for member in tar:
                if not safe and (member.name.startswith("/") or ".." in member.name.split("/")):
                    raise tarfile.TarError(f"unsafe member {member.name!r}")
                tar.extract(member, dest, **safe)
                bar.update(member.size + 512)  # 512: the member's header block
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise UserError(f"{tar_path} is truncated or damaged ({err}); delete it and run the command again "
                        f"to download it afresh") from None


def _fetch_imdb_wiki_images(root: Path, db: str, url_base: str, keep_archive: bool) -> None:
    folder = root / f"{db}_crop"
    tar_path = root / f"{db}_crop.tar"
    if (folder / MARKER).is_file():
        logger.info("%s already extracted", folder)
        return
    if (folder / f"{db}.mat").is_file() and not tar_path.exists():
        # Extracted by hand: accept it; verification reports any image that is missing.
        logger.info("%s found (extracted by hand?); using it as it is", folder)
        return
    download(url_base.rstrip("/") + f"/{db}_crop.tar", tar_path, desc=tar_path.name)
    extract_tar(tar_path, root)
    if not (folder / f"{db}.mat").is_file():
        raise UserError(f"{tar_path} did not contain {db}_crop/{db}.mat; is it the IMDB-WIKI faces-only tar?")
    (folder / MARKER).write_text("extracted\n")
    if not keep_archive:
        tar_path.unlink()
        logger.info("deleted %s (pass --keep-archives to keep it)", tar_path)


def _agedb_password_error(zip_path: Path) -> UserError:
    return UserError(f"{zip_path} is password-protected: pass --password PASSWORD (or set {AGEDB_PASSWORD_ENV}). "
                     f"The AgeDB authors give the password on request: see {AGEDB_SITE}")


def _is_junk(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return "__MACOSX/" in name or base.startswith(".")


def unpack_agedb_zip(zip_path: str | os.PathLike, root: str | os.PathLike, password: str | None) -> Path:
    """Unpack the ``.jpg`` files of the AgeDB zip into ``<root>/AgeDB`` (whatever folder they are
    in inside the zip). ZipCrypto passwords are supported (Python's ``zipfile``); AES-encrypted zips
    must be extracted with another tool and given with ``--folder``."""
    zip_path, image_dir = Path(zip_path), Path(root) / AGEDB_IMAGE_DIR
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise UserError(f"{zip_path} does not exist; give the path of the AgeDB zip you obtained from "
                        f"its authors ({AGEDB_SITE})") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f"{zip_path} is not a readable zip ({err}); download it again") from None
    with archive:
        members = [m for m in archive.infolist()
                   if not m.is_dir() and m.filename.lower().endswith(".jpg") and not _is_junk(m.filename)]
        if not members:
            raise UserError(f"{zip_path} holds no .jpg files; is it the AgeDB zip?")
        encrypted = any(m.flag_bits & 0x1 for m in members)
        if encrypted and not password:
            raise _agedb_password_error(zip_path)
        pwd = password.encode("utf-8") if (encrypted and password) else None
        image_dir.mkdir(parents=True, exist_ok=True)
        for member in tqdm(members, desc=f"unpacking {zip_path.name}", unit="file"):
            name = member.filename.rsplit("/", 1)[-1]
            try:
                data = archive.read(member, pwd=pwd)
            except RuntimeError as err:
                if "password" in str(err).lower():
                    raise UserError(f"wrong password for {zip_path}; check it (it is case-sensitive) or ask "
                                    f"the AgeDB authors ({AGEDB_SITE})") from None
                raise
            except NotImplementedError as err:
                raise UserError(f"{zip_path} uses a compression or encryption Python cannot read ({err}); "
                                f"extract it with 7-Zip or unzip and pass the folder with --folder") from None
            except (zipfile.BadZipFile, zlib.error) as err:
                # ZipCrypto checks one byte of the password, so a wrong one passes 1 time in 256 and
                # fails here, at the CRC.
                raise UserError(f"cannot read {member.filename} from {zip_path} ({err}): the password is "
                                f"wrong or the zip is damaged") from None
            (image_dir / name).write_bytes(data)
    (image_dir / MARKER).write_text("unpacked\n")
    logger.info("unpacked %d images into %s", len(members), image_dir)
    return image_dir


def copy_agedb_folder(folder: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Copy the ``.jpg`` files of an extracted AgeDB folder into ``<root>/AgeDB``."""
    folder, image_dir = Path(folder), Path(root) / AGEDB_IMAGE_DIR
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give the folder that holds AgeDB's id_name_age_gender.jpg files")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg") and not n.startswith("."))
    if not names:
        raise UserError(f"{folder} holds no .jpg files; give the folder that holds AgeDB's images")
    if folder.resolve() != image_dir.resolve():
        image_dir.mkdir(parents=True, exist_ok=True)
        for name in tqdm(names, desc=f"copying {folder}", unit="file"):
            shutil.copyfile(folder / name, image_dir / name)
    (image_dir / MARKER).write_text("copied\n")
    logger.info("%d images in %s", len(names), image_dir)
    return image_dir


# --------------------------------------------------------------------------------------------
# Commands


def _common_options(parser: argparse.ArgumentParser, benchmark: AgeBenchmark) -> None:
    parser.add_argument("--root", default=benchmark.default_root,
                        help=f"data root: images and {benchmark.split_file} go here (default: %(default)s)")
    parser.add_argument("--rebuild-split", action="store_true",
                        help=f"build {benchmark.split_file} from the raw metadata by the DIR procedure (SPEC 6) "
                             f"instead of downloading the authors' published file")
    parser.add_argument("--split-url", default=benchmark.split_url,
                        help="where the published split file is downloaded from (default: %(default)s)")
    parser.add_argument("--max-per-age", type=int, default=benchmark.max_per_age,
                        help="with --rebuild-split: cap of val (and of test) images per age; the benchmark "
                             "uses %(default)s, another value gives an unofficial split")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="with --rebuild-split: seed of the val/test draw; the benchmark uses %(default)s")
    parser.add_argument("--verify-only", action="store_true",
                        help="only check the prepared root: files exist, ages in range, rows per split "
                             "beside the published totals; exit status 1 when a file or age is wrong")


def _get_split(args, root: Path, benchmark: AgeBenchmark, rebuild) -> Path:
    split_path = root / benchmark.split_file
    if args.rebuild_split:
        df = make_balanced_split(rebuild(), args.max_per_age, args.seed)
        write_age_split(df, split_path)
    elif split_path.is_file():
        # A split file already there may be a rebuilt one the user wants to keep; verification
        # flags it when its counts differ from the published ones.
        logger.info("using the existing %s (delete it to download the published one)", split_path)
    else:
        official = args.split_url == benchmark.split_url
        download(args.split_url, split_path, expected_size=benchmark.split_size if official else None,
                 progress=False)
    return split_path


def prepare_imdb_wiki_main(argv: list[str]) -> int:
    """``python -m ranksim.data.prepare imdb_wiki``: see the module docstring and data/README.md."""
    parser = argparse.ArgumentParser(
        prog="python -m ranksim.data.prepare imdb_wiki",
        description="Download the IMDB-WIKI face crops (imdb_crop.tar, about 7 GB, and wiki_crop.tar, "
                    "about 1 GB; resumable), extract them, get the IMDB-WIKI-DIR split file imdb_wiki.csv, "
                    "and verify the result.")
    _common_options(parser, IMDB_WIKI)
    parser.add_argument("--url-base", default=IMDB_WIKI_URL_BASE,
                        help="folder URL holding imdb_crop.tar and wiki_crop.tar (a mirror, or a file:// "
                             "folder where you put tars downloaded by hand) (default: %(default)s)")
    parser.add_argument("--keep-archives", action="store_true",
                        help="keep the .tar files after extraction (deleted by default to save 8 GB)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    split_path = root / IMDB_WIKI.split_file
    if args.verify_only:
        return _verify_cli(root, split_path, IMDB_WIKI)
    root.mkdir(parents=True, exist_ok=True)
    for db in ("imdb", "wiki"):
        _fetch_imdb_wiki_images(root, db, args.url_base, args.keep_archives)

    def rebuild() -> pd.DataFrame:
        return pd.concat([read_imdb_wiki_mat(root / f"{db}_crop" / f"{db}.mat", db) for db in ("imdb", "wiki")],
                         ignore_index=True)

    split_path = _get_split(args, root, IMDB_WIKI, rebuild)
    return _verify_cli(root, split_path, IMDB_WIKI)


def prepare_agedb_main(argv: list[str]) -> int:
    """``python -m ranksim.data.prepare agedb``: see the module docstring and data/README.md."""
    parser = argparse.ArgumentParser(
        prog="python -m ranksim.data.prepare agedb",
        description=f"Unpack the AgeDB images you obtained from the AgeDB authors ({AGEDB_SITE}; the zip "
                    f"needs a password they give on request) into ROOT/AgeDB, get the AgeDB-DIR split file "
                    f"agedb.csv, and verify the result.")
    _common_options(parser, AGEDB)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--zip", help="the AgeDB zip file (not needed once ROOT/AgeDB is unpacked)")
    source.add_argument("--folder", help="an already extracted folder of AgeDB .jpg files, copied to ROOT/AgeDB")
    parser.add_argument("--password", default=os.environ.get(AGEDB_PASSWORD_ENV),
                        help=f"password of the zip (default: the environment variable {AGEDB_PASSWORD_ENV}, "
                             f"which keeps it out of the shell history)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    split_path = root / AGEDB.split_file
    if args.verify_only:
        return _verify_cli(root, split_path, AGEDB)
    image_dir = root / AGEDB_IMAGE_DIR
    if (image_dir / MARKER).is_file():
        logger.info("%s already unpacked (delete it to unpack again)", image_dir)
    elif args.zip:
        unpack_agedb_zip(args.zip, root, args.password)
    elif args.folder:
        copy_agedb_folder(args.folder, root)
    elif not (image_dir.is_dir() and any(n.lower().endswith(".jpg") for n in os.listdir(image_dir))):
        raise UserError(f"no AgeDB images in {image_dir}: pass --zip AgeDB.zip --password PASSWORD or --folder "
                        f"DIR. Request the zip and its password from the AgeDB authors: {AGEDB_SITE}")
    split_path = _get_split(args, root, AGEDB, lambda: agedb_metadata(root))
    return _verify_cli(root, split_path, AGEDB)
