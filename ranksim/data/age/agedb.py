"""AgeDB: unpacking the zip its authors give on request (or copying an extracted folder), and the
ages in its file names ``id_name_age_gender.jpg``."""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ranksim.data.files import MARKER
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

AGEDB_SITE = "https://ibug.doc.ic.ac.uk/resources/agedb/"
AGEDB_PASSWORD_ENV = "AGEDB_ZIP_PASSWORD"
AGEDB_IMAGE_DIR = "AgeDB"


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
