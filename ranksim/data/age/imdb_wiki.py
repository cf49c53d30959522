"""IMDB-WIKI: downloading and extracting the face crops, and the ages in ``imdb.mat`` / ``wiki.mat``.

``imdb_crop.tar`` and ``wiki_crop.tar`` come from the IMDB-WIKI site (resumable downloads) and are
extracted into the data root; :func:`read_imdb_wiki_mat` gives the faces that SPEC 6 keeps, the
input of a rebuilt split.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ranksim.data.download import download
from ranksim.data.files import MARKER
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

MIN_FACE_SCORE = 1.0             # IMDB-WIKI face detector score a face must reach (DIR's min_score)
IMDB_WIKI_AGE_RANGE = (0, 200)   # ages IMDB-WIKI-DIR keeps (SPEC 6)

IMDB_WIKI_URL_BASE = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/"


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


def fetch_imdb_wiki_images(root: Path, db: str, url_base: str, keep_archive: bool) -> None:
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
