"""Age-dataset preparation (SPEC 6) on miniature inputs in the real formats, and the downloader.

Generated inputs: ``imdb.mat`` / ``wiki.mat`` written with ``scipy.io.savemat`` in the layout of
the real files (a 1x1 struct with 1xN fields, strings in cell arrays), tars holding them as the
IMDB-WIKI site ships them, an AgeDB zip encrypted with ZipCrypto. The real AgeDB-DIR split file is
read from ``data/agedb-dir`` or ``$RANKSIM_TEST_DATA/agedb-dir`` when it is there
(``conftest.real_split_dir``).
"""

from __future__ import annotations

import http.server
import io
import logging
import random
import struct
import tarfile
import threading
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from ranksim.data.age.agedb import (AGEDB_PASSWORD_ENV, AGEDB_SITE, agedb_metadata, copy_agedb_folder,
                                    unpack_agedb_zip)
from ranksim.data.age.benchmarks import AGEDB
from ranksim.data.age.imdb_wiki import imdb_wiki_age, read_imdb_wiki_mat
from ranksim.data.age.prepare import prepare_agedb_main, prepare_imdb_wiki_main
from ranksim.data.age.rebuild_split import make_balanced_split
from ranksim.data.age.split_file import read_age_split, write_age_split
from ranksim.data.age.verify import verify_age_split
from ranksim.data.download import download
from ranksim.errors import UserError

from conftest import needs_real_split, real_split_dir

REAL_AGEDB_DIR = real_split_dir("agedb-dir")
REAL_AGEDB_CSV = REAL_AGEDB_DIR / "agedb.csv" if REAL_AGEDB_DIR else None


def tiny_jpeg(seed: int = 0, side: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# read_age_split


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_age_split_types_and_order(tmp_path):
    csv_path = write(tmp_path / "s.csv", "age,path,split\n31,AgeDB/1_A_31_f.jpg,train\n\n"
                                         "5,AgeDB/2_Zoë_5_m.jpg,val\n7,AgeDB/3_B_7_m.jpg,test\n")
    df = read_age_split(csv_path)
    assert list(df.columns) == ["age", "path", "split"]
    assert df["age"].dtype == np.int64
    assert df["age"].tolist() == [31, 5, 7]
    assert df["path"].tolist()[1] == "AgeDB/2_Zoë_5_m.jpg"
    assert df["split"].tolist() == ["train", "val", "test"]


@pytest.mark.parametrize("body, line, words", [
    ("age,path,split\n31,a.jpg,train\n32,b.jpg\n", 3, "2 fields"),          # missing column
    ("age,path,split\n31,a.jpg,train\n3x,b.jpg,val\n", 3, "'3x' is not an integer"),
    ("age,path,split\n31.5,a.jpg,train\n", 2, "'31.5' is not an integer"),
    ("age,path,split\n31,a.jpg,dev\n", 2, "'dev' is not one of"),          # unknown split name
    ("age,path,split\n31,,train\n", 2, "path is empty"),
    ("age,file,split\n31,a.jpg,train\n", 1, "lacks path"),
])
def test_read_age_split_malformed_row_names_file_and_line(tmp_path, body, line, words):
    csv_path = write(tmp_path / "bad.csv", body)
    with pytest.raises(UserError) as err:
        read_age_split(csv_path)
    assert f"{csv_path}, line {line}:" in str(err.value)
    assert words in str(err.value)


def test_read_age_split_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_age_split(tmp_path / "nope.csv")
    with pytest.raises(UserError) as err:
        read_age_split(tmp_path / "agedb.csv")
    assert f"python -m ranksim.data.prepare agedb --root {tmp_path}" in str(err.value) and "DATASET" not in str(err.value)


@pytest.mark.parametrize("age, line", [(-5, 3), (121, 3)])
def test_read_age_split_age_outside_the_range_names_file_and_line(tmp_path, age, line):
    """A negative age passed the reader before and broke np.bincount in the label histogram."""
    csv_path = write(tmp_path / "s.csv", f"age,path,split\n0,a.jpg,train\n{age},b.jpg,train\n120,c.jpg,val\n")
    with pytest.raises(UserError) as err:
        read_age_split(csv_path, age_range=(0, 120))
    assert f"{csv_path}, line {line}: age {age} is outside 0..120" in str(err.value)
    assert read_age_split(csv_path)["age"].tolist() == [0, age, 120], "no range given: every integer age is read"


def test_verify_only_without_a_split_file_names_the_command(tmp_path):
    for main, name in ((prepare_agedb_main, "agedb"), (prepare_imdb_wiki_main, "imdb_wiki")):
        with pytest.raises(UserError) as err:
            main(["--root", str(tmp_path / "absent"), "--verify-only"])
        assert f"python -m ranksim.data.prepare {name} --root {tmp_path / 'absent'}'" in str(err.value)
        assert "DATASET" not in str(err.value)
    assert not (tmp_path / "absent").exists()


# ------------------------------------------------------------------------------------------
# IMDB-WIKI metadata


def reference_age(taken: int, dob: float) -> int:
    """The DIR authors' definition, one face at a time."""
    birth = datetime.fromordinal(max(int(dob) - 366, 1))
    return taken - birth.year - (1 if birth.month >= 7 else 0)


def test_imdb_wiki_age_matches_the_datetime_definition():
    rng = np.random.default_rng(0)
    # Random dates from year 1 to 2200, plus the clamp (dob < 367) and month edges.
    dob = np.concatenate([rng.uniform(1, 803_000, 3000),
                          [0.0, 1.0, 366.9, 367.0, 714_780.0, 714_961.0, 714_962.0, 715_145.99]])
    taken = rng.integers(1900, 2016, len(dob))
    expected = [reference_age(int(t), float(d)) for t, d in zip(taken, dob, strict=True)]
    np.testing.assert_array_equal(imdb_wiki_age(dob, taken), expected)
    assert np.isnan(imdb_wiki_age([np.nan], [2000])[0])


def matlab_datenum(year: int, month: int, day: int) -> float:
    return datetime(year, month, day).toordinal() + 366.0


def cell(strings) -> np.ndarray:
    strings = list(strings)
    out = np.empty((1, len(strings)), dtype=object)
    out[0, :] = list(strings)
    return out


def write_imdb_wiki_mat(path: Path, db: str, faces: list[dict]) -> None:
    """A ``{db}.mat`` with the real structure: struct ``db`` (1x1) whose fields are 1xN rows."""
    n = len(faces)
    fields = ["dob", "photo_taken", "full_path", "gender", "name", "face_location", "face_score",
              "second_face_score"] + (["celeb_names", "celeb_id"] if db == "imdb" else [])
    record = np.empty((1, 1), dtype=[(f, object) for f in fields])
    record[0, 0]["dob"] = np.array([[f["dob"] for f in faces]], dtype=np.float64)
    record[0, 0]["photo_taken"] = np.array([[f["taken"] for f in faces]], dtype=np.uint16)
    record[0, 0]["full_path"] = cell(f["path"] for f in faces)
    record[0, 0]["gender"] = np.array([[1.0] * n])
    record[0, 0]["name"] = cell(f"Person {i}" for i in range(n))
    locations = np.empty((1, n), dtype=object)
    for i in range(n):
        locations[0, i] = np.array([[10.0, 10.0, 60.0, 60.0]])
    record[0, 0]["face_location"] = locations
    record[0, 0]["face_score"] = np.array([[f["score"] for f in faces]], dtype=np.float64)
    record[0, 0]["second_face_score"] = np.array([[f["second"] for f in faces]], dtype=np.float64)
    if db == "imdb":
        record[0, 0]["celeb_names"] = cell(["Person"])
        record[0, 0]["celeb_id"] = np.array([[1] * n])
    scipy.io.savemat(path, {db: record})


def face(path, born, taken, score=3.0, second=np.nan):
    return {"path": path, "dob": matlab_datenum(*born), "taken": taken, "score": score, "second": second}


def test_read_imdb_wiki_mat_applies_the_spec_filters(tmp_path):
    faces = [
        face("00/keep_june.jpg", (1960, 6, 30), 1990),                  # 30
        face("00/keep_july.jpg", (1960, 7, 1), 1990),                   # 29: born July or later
        face("01/keep_score1.jpg", (2000, 1, 1), 2010, score=1.0),      # score exactly 1 kept
        face("01/no_face.jpg", (1970, 1, 1), 2000, score=-np.inf),
        face("01/weak_face.jpg", (1970, 1, 1), 2000, score=0.99),
        face("02/two_faces.jpg", (1970, 1, 1), 2000, second=1.5),
        face("02/second_zero.jpg", (1970, 1, 1), 2000, second=0.0),     # 30, kept
        face("02/negative_age.jpg", (2005, 1, 1), 2000),
        face("02/age_200.jpg", (1800, 1, 1), 2000),                     # 200, kept
        face("02/age_201.jpg", (1799, 1, 1), 2000),
    ]
    mat = tmp_path / "imdb.mat"
    write_imdb_wiki_mat(mat, "imdb", faces)
    raw = scipy.io.loadmat(mat)["imdb"][0, 0]
    assert raw["full_path"].shape == (1, len(faces)) and raw["full_path"][0][0][0] == "00/keep_june.jpg"

    df = read_imdb_wiki_mat(mat, "imdb")
    assert df["path"].tolist() == ["imdb_crop/00/keep_june.jpg", "imdb_crop/00/keep_july.jpg",
                                   "imdb_crop/01/keep_score1.jpg", "imdb_crop/02/second_zero.jpg",
                                   "imdb_crop/02/age_200.jpg"]
    assert df["age"].tolist() == [30, 29, 10, 30, 200]


def test_read_imdb_wiki_mat_wrong_struct(tmp_path):
    mat = tmp_path / "wiki.mat"
    scipy.io.savemat(mat, {"other": np.zeros(3)})
    with pytest.raises(UserError, match="does not hold the IMDB-WIKI struct 'wiki'"):
        read_imdb_wiki_mat(mat, "wiki")


# ------------------------------------------------------------------------------------------
# Balanced split


def dir_reference_split(meta: pd.DataFrame, max_size: int, seed: int) -> dict:
    """The DIR authors' procedure written out plainly: seed once, shuffle the paths of each age
    0..120 in turn, take val then test; everything else is train."""
    random.seed(seed)
    assigned = {}
    for value in range(121):
        paths = list(meta.loc[meta["age"] == value, "path"])
        random.shuffle(paths)
        size = min(len(paths) // 3, max_size)
        assigned.update({p: "val" for p in paths[:size]})
        assigned.update({p: "test" for p in paths[size:2 * size]})
    return {p: assigned.get(p, "train") for p in meta["path"]}


def synthetic_meta(seed: int = 1) -> pd.DataFrame:
    # Per-age counts covering the edge cases: 0, 1, 2, 3 (one each), below and above the cap, an
    # age at the top of the balanced range and ages past it (train only).
    counts = {0: 2, 1: 3, 2: 1, 5: 7, 20: 95, 40: 400, 120: 9, 121: 50, 150: 4}
    rows = [(age, f"x/{age}_{k}.jpg") for age, n in counts.items() for k in range(n)]
    random.Random(seed).shuffle(rows)  # interleave the ages, as real metadata is
    return pd.DataFrame(rows, columns=["age", "path"])


def test_balanced_split_follows_spec6():
    meta = synthetic_meta()
    cap = 30
    out = make_balanced_split(meta, max_per_age=cap, seed=666)
    assert out["path"].tolist() == meta["path"].tolist()          # rows and order kept
    for age, group in out.groupby("age"):
        n = len(group)
        k = min(n // 3, cap) if age <= 120 else 0
        counts = group["split"].value_counts()
        assert counts.get("val", 0) == k and counts.get("test", 0) == k, age
        assert counts.get("train", 0) == n - 2 * k, age
    assert not out["path"].duplicated().any()                     # one split per image: no overlap
    assert out.loc[out["age"] == 40, "split"].value_counts()["val"] == 30   # the cap binds


def test_balanced_split_is_the_dir_procedure_and_seed_stable():
    meta = synthetic_meta()
    out = make_balanced_split(meta, max_per_age=30, seed=666)
    assert dict(zip(out["path"], out["split"], strict=True)) == dir_reference_split(meta, 30, 666)
    again = make_balanced_split(meta.copy(), max_per_age=30, seed=666)
    assert out.equals(again)
    other = make_balanced_split(meta, max_per_age=30, seed=667)
    assert (other["split"].value_counts() == out["split"].value_counts()).all()
    assert not other["split"].equals(out["split"])               # the seed matters


def test_balanced_split_rejects_duplicate_paths():
    meta = pd.DataFrame({"age": [1, 2], "path": ["a.jpg", "a.jpg"]})
    with pytest.raises(ValueError, match="a.jpg"):
        make_balanced_split(meta, 30)


# ------------------------------------------------------------------------------------------
# IMDB-WIKI command, end to end on file:// URLs


def make_imdb_wiki_tars(src: Path) -> pd.DataFrame:
    """imdb_crop.tar and wiki_crop.tar as the site ships them; returns the faces kept by SPEC 6."""
    jpeg = tiny_jpeg()
    kept = []
    for db, n in (("imdb", 30), ("wiki", 12)):
        faces = []
        for i in range(n):
            born_year = 1950 + i % 5          # five ages per photo year, so some ages get val/test
            f = face(f"{i % 3:02d}/nm{i:07d}_rm1_{born_year}-3-1_2000.jpg", (born_year, 3, 1), 2000,
                     score=-np.inf if i % 7 == 6 else 2.0)
            faces.append(f)
            if i % 7 != 6:
                kept.append((2000 - born_year, f"{db}_crop/{f['path']}"))
        folder = src / f"{db}_crop"
        for f in faces:
            (folder / f["path"]).parent.mkdir(parents=True, exist_ok=True)
            (folder / f["path"]).write_bytes(jpeg)
        write_imdb_wiki_mat(folder / f"{db}.mat", db, faces)
        with tarfile.open(src / f"{db}_crop.tar", "w") as tar:
            tar.add(folder, arcname=f"{db}_crop")
    return pd.DataFrame(kept, columns=["age", "path"])


def test_imdb_wiki_command_rebuilds_the_split_from_the_tars(tmp_path, caplog):
    src = tmp_path / "mirror"
    src.mkdir()
    kept = make_imdb_wiki_tars(src)
    root = tmp_path / "imdb_wiki"
    argv = ["--root", str(root), "--url-base", src.as_uri(), "--rebuild-split"]
    with caplog.at_level(logging.WARNING):
        assert prepare_imdb_wiki_main(argv) == 0
    assert "differ from the DIR paper" in caplog.text           # 36 images are not 191,509
    assert (root / "imdb_crop" / "imdb.mat").is_file() and (root / "wiki_crop" / "wiki.mat").is_file()
    assert not (root / "imdb_crop.tar").exists()                # archives deleted after extraction
    split = read_age_split(root / "imdb_wiki.csv")
    expected = make_balanced_split(kept, max_per_age=150, seed=666)
    pd.testing.assert_frame_equal(split, expected)
    # A second run finds everything extracted and downloads nothing (the mirror is gone).
    for tar in src.glob("*.tar"):
        tar.unlink()
    assert prepare_imdb_wiki_main(argv) == 0


def test_imdb_wiki_command_downloads_the_published_split(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    kept = make_imdb_wiki_tars(src)
    published = make_balanced_split(kept, max_per_age=150, seed=666)
    write_age_split(published, src / "imdb_wiki.csv")
    root = tmp_path / "imdb_wiki"
    argv = ["--root", str(root), "--url-base", src.as_uri(), "--split-url", (src / "imdb_wiki.csv").as_uri()]
    assert prepare_imdb_wiki_main(argv) == 0
    assert (root / "imdb_wiki.csv").read_bytes() == (src / "imdb_wiki.csv").read_bytes()


# ------------------------------------------------------------------------------------------
# AgeDB command, with a ZipCrypto-encrypted zip


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


def zipcrypto_zip(path: Path, files: dict[str, bytes], password: bytes) -> None:
    """A zip of stored (uncompressed) entries encrypted with traditional PKWARE encryption
    (APPNOTE 6.1), which Python's zipfile can read but not write."""
    table = _crc_table()

    def crc_byte(crc: int, b: int) -> int:
        return table[(crc ^ b) & 0xFF] ^ (crc >> 8)

    def update(keys: list[int], b: int) -> None:
        keys[0] = crc_byte(keys[0], b)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = crc_byte(keys[2], keys[1] >> 24)

    out, central = bytearray(), bytearray()
    rng = random.Random(0)
    for name, data in files.items():
        keys = [0x12345678, 0x23456789, 0x34567890]
        for b in password:
            update(keys, b)
        crc = zlib.crc32(data)
        header = bytes(rng.randrange(256) for _ in range(11)) + bytes([crc >> 24])
        encrypted = bytearray()
        for b in header + data:
            k = (keys[2] | 2) & 0xFFFF
            encrypted.append(b ^ (((k * (k ^ 1)) >> 8) & 0xFF))
            update(keys, b)
        raw_name = name.encode()
        offset = len(out)
        common = struct.pack("<HHHHHIIIHH", 20, 0x1, 0, 0, 0x21, crc, len(encrypted), len(data), len(raw_name), 0)
        out += struct.pack("<I", 0x04034B50) + common + raw_name + encrypted
        central += (struct.pack("<IH", 0x02014B50, 20) + common + struct.pack("<HHHII", 0, 0, 0, 0, offset)
                    + raw_name)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(files), len(files), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def agedb_files(n_per_age: dict[int, int]) -> dict[str, bytes]:
    jpeg = tiny_jpeg(1)
    files, k = {}, 0
    for age, n in n_per_age.items():
        for _ in range(n):
            files[f"AgeDB/{k}_Some_Name_{age}_{'mf'[k % 2]}.jpg"] = jpeg
            k += 1
    return files


def test_agedb_zip_round_trip_and_rebuilt_split(tmp_path, monkeypatch):
    monkeypatch.delenv(AGEDB_PASSWORD_ENV, raising=False)
    files = agedb_files({3: 4, 30: 10, 61: 100, 101: 2})
    zpath = tmp_path / "AgeDB.zip"
    zipcrypto_zip(zpath, files, b"s3cret")
    root = tmp_path / "agedb"
    assert prepare_agedb_main(["--root", str(root), "--zip", str(zpath), "--password", "s3cret",
                                  "--rebuild-split"]) == 0
    assert (root / "AgeDB" / "0_Some_Name_3_m.jpg").read_bytes() == files["AgeDB/0_Some_Name_3_m.jpg"]
    split = read_age_split(root / "agedb.csv")
    assert sorted(split["path"]) == sorted(files)
    counts = split.groupby(["age", "split"]).size().unstack(fill_value=0)
    assert counts.loc[61, "val"] == 30 and counts.loc[61, "test"] == 30 and counts.loc[61, "train"] == 40
    assert counts.loc[30, "val"] == 3 and counts.loc[3, "val"] == 1 and counts.loc[101, "train"] == 2


def test_agedb_zip_without_password_says_where_to_request_it(tmp_path, monkeypatch):
    monkeypatch.delenv(AGEDB_PASSWORD_ENV, raising=False)
    zpath = tmp_path / "AgeDB.zip"
    zipcrypto_zip(zpath, agedb_files({30: 2}), b"s3cret")
    with pytest.raises(UserError) as err:
        prepare_agedb_main(["--root", str(tmp_path / "agedb"), "--zip", str(zpath)])
    message = str(err.value)
    assert "password-protected" in message and "--password" in message and AGEDB_SITE in message


def test_agedb_zip_wrong_password(tmp_path):
    zpath = tmp_path / "AgeDB.zip"
    zipcrypto_zip(zpath, agedb_files({30: 2}), b"s3cret")
    with pytest.raises(UserError, match="password is wrong|wrong password"):
        unpack_agedb_zip(zpath, tmp_path / "agedb", "not-it")


def test_agedb_without_images_explains_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(AGEDB_PASSWORD_ENV, raising=False)
    with pytest.raises(UserError, match="Request the zip and its password"):
        prepare_agedb_main(["--root", str(tmp_path / "agedb")])


def test_agedb_folder_with_a_misnamed_file(tmp_path):
    folder = tmp_path / "extracted"
    folder.mkdir()
    (folder / "1_Name_30_m.jpg").write_bytes(tiny_jpeg())
    (folder / "holiday.jpg").write_bytes(tiny_jpeg())
    copy_agedb_folder(folder, tmp_path / "agedb")
    with pytest.raises(UserError, match="holiday.jpg"):
        agedb_metadata(tmp_path / "agedb")


# ------------------------------------------------------------------------------------------
# The real AgeDB-DIR split file


@needs_real_split("agedb-dir")
def test_real_agedb_split_verifies_and_follows_the_procedure(tmp_path, caplog):
    df = read_age_split(REAL_AGEDB_CSV)
    assert df["split"].value_counts().to_dict() == {"train": 12_208, "val": 2_140, "test": 2_140}
    # Its val and test sets are the DIR procedure's: min(n // 3, 30) per age, n over all splits.
    per_age = df.groupby("age")["split"].value_counts().unstack(fill_value=0)
    k = np.minimum(per_age.sum(axis=1) // 3, 30)
    assert (per_age["val"] == k).all() and (per_age["test"] == k).all()

    root = tmp_path / "agedb"
    (root / "AgeDB").mkdir(parents=True)
    jpeg = tiny_jpeg()
    for rel in df["path"]:
        (root / rel).write_bytes(jpeg)
    (root / "agedb.csv").write_bytes(REAL_AGEDB_CSV.read_bytes())
    report = verify_age_split(root, root / "agedb.csv", AGEDB)
    assert report.ok and report.counts_match and (report.age_min, report.age_max) == (1, 101)

    gone = sorted(df["path"].sample(2, random_state=0))
    for rel in gone:
        (root / rel).unlink()
    with caplog.at_level(logging.ERROR):
        assert prepare_agedb_main(["--root", str(root), "--verify-only"]) == 1
    assert "2 image(s) listed in agedb.csv are missing" in caplog.text
    for rel in gone:
        assert rel in caplog.text


def test_verify_reports_bad_ages_and_duplicates(tmp_path):
    (tmp_path / "AgeDB").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "AgeDB" / name).write_bytes(b"x")
    (tmp_path / "AgeDB" / "empty.jpg").touch()
    df = pd.DataFrame({"age": [30, 130, 30, 30], "path": ["AgeDB/a.jpg", "AgeDB/b.jpg", "AgeDB/a.jpg",
                                                          "AgeDB/empty.jpg"], "split": ["train"] * 4})
    report = verify_age_split(tmp_path, df, AGEDB)
    assert not report.ok
    assert report.bad_ages == [("AgeDB/b.jpg", 130)]
    assert report.duplicates == ["AgeDB/a.jpg"] and report.empty == ["AgeDB/empty.jpg"] and not report.missing


# ------------------------------------------------------------------------------------------
# Downloader, against a local HTTP server


PAYLOAD = bytes(np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8))


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /file; honours Range unless the server says not to, and can cut the body."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.headers.get("Range"))
        if self.path != "/file":
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and self.server.ranges:
            start, status = int(rng.split("=")[1].rstrip("-")), 206
            if start >= len(PAYLOAD):  # as real servers answer a range past the end
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = PAYLOAD[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        self.wfile.write(body[:self.server.cut] if self.server.cut else body)
        self.server.cut = None

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.ranges, httpd.cut = [], True, None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/file"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_a_partial_file(tmp_path, server):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:100_000])
    download(server.url, dest, expected_size=len(PAYLOAD), progress=False)
    assert server.requests == ["bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    download(server.url, dest, expected_size=len(PAYLOAD), progress=False)   # present: no request
    assert len(server.requests) == 1


def test_download_finishes_a_complete_part_file(tmp_path, server):
    # Interrupted between the last byte and the rename: the server answers 416 to the range.
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download(server.url, dest, expected_size=len(PAYLOAD), progress=False)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"] and dest.read_bytes() == PAYLOAD


def test_download_cut_connection_keeps_the_part_and_resumes(tmp_path, server):
    dest = tmp_path / "data.bin"
    server.cut = 120_000
    with pytest.raises(UserError, match="stopped .* Run this command again to resume"):
        download(server.url, dest, progress=False)
    assert (tmp_path / "data.bin.part").stat().st_size == 120_000 and not dest.exists()
    download(server.url, dest, progress=False)
    assert server.requests[-1] == "bytes=120000-" and dest.read_bytes() == PAYLOAD


def test_download_restarts_when_the_server_ignores_ranges(tmp_path, server):
    server.ranges = False
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"garbage" * 10)
    download(server.url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_rejects_a_wrong_size(tmp_path, server):
    dest = tmp_path / "data.bin"
    with pytest.raises(UserError, match="300,000 bytes but 299,999 are expected"):
        download(server.url, dest, expected_size=len(PAYLOAD) - 1, progress=False)
    dest.write_bytes(b"short")
    with pytest.raises(UserError, match="5 bytes but 300,000 are expected"):
        download(server.url, dest, expected_size=len(PAYLOAD), progress=False)


def test_download_http_error_and_unreachable_network(tmp_path, server):
    dest = tmp_path / "data.bin"
    with pytest.raises(UserError, match="HTTP 404"):
        download(server.url.replace("/file", "/missing"), dest, progress=False)
    closed = http.server.HTTPServer(("127.0.0.1", 0), Handler)   # bound, then closed: nothing listens
    port = closed.server_address[1]
    closed.server_close()
    url = f"http://127.0.0.1:{port}/imdb_crop.tar"
    with pytest.raises(UserError) as err:
        download(url, dest, progress=False, timeout=5)
    message = str(err.value)
    assert f"cannot reach {url}" in message and f"place it at {dest}" in message


def test_download_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "out" / "dst.bin", expected_size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
