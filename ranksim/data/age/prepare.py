"""The age preparation commands (dispatched by ``python -m ranksim.data.prepare``).

- ``imdb_wiki --root DIR``: download ``imdb_crop.tar`` and ``wiki_crop.tar`` from the IMDB-WIKI
  site (resumable), extract them, and download the DIR authors' split file ``imdb_wiki.csv``;
  ``--rebuild-split`` rebuilds it from ``imdb.mat`` / ``wiki.mat`` instead.
- ``agedb --root DIR --zip AgeDB.zip --password PW`` (or ``--folder DIR``): unpack the AgeDB zip
  that its authors give on request, and download ``agedb.csv`` (or ``--rebuild-split`` it from the
  file names ``id_name_age_gender.jpg``).
- ``cache --root DIR``: build and check the one-time uint8 image cache of a prepared root
  (:mod:`~ranksim.data.age.image_cache`).

``imdb_wiki`` and ``agedb`` end with :func:`~ranksim.data.age.verify.verify_age_split` (also alone
with ``--verify-only``): every path exists, every age is an integer in range, and the rows per
split are printed beside the published totals.

Layout of a prepared root (paths in the split file are relative to it)::

    data/imdb-wiki-dir/imdb_crop/00/nm..._1968.jpg   data/agedb-dir/AgeDB/0_MariaCallas_35_f.jpg
    data/imdb-wiki-dir/wiki_crop/00/..._2009.jpg     data/agedb-dir/agedb.csv
    data/imdb-wiki-dir/imdb_wiki.csv
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd

from ranksim.data.age.agedb import (AGEDB_IMAGE_DIR, AGEDB_PASSWORD_ENV, AGEDB_SITE, agedb_metadata,
                                    copy_agedb_folder, unpack_agedb_zip)
from ranksim.data.age.benchmarks import AGEDB, IMDB_WIKI, AgeBenchmark
from ranksim.data.age.image_cache import SPOT_CHECKS, build_cache, check_cache, default_cache_path
from ranksim.data.age.imdb_wiki import IMDB_WIKI_URL_BASE, fetch_imdb_wiki_images, read_imdb_wiki_mat
from ranksim.data.age.rebuild_split import SEED, make_balanced_split
from ranksim.data.age.split_file import read_age_split, write_age_split
from ranksim.data.age.transforms import IMG_SIZE
from ranksim.data.age.verify import verify_cli
from ranksim.data.download import download
from ranksim.data.files import MARKER, sha256_of
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

SPLIT_FILE_NAMES = ("agedb.csv", "imdb_wiki.csv", "synthetic.csv")  # detected by the cache command


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
        if official:
            check_published_split(split_path, benchmark)
    return split_path


def check_published_split(path: Path, benchmark: AgeBenchmark) -> None:
    """Check a freshly downloaded published split file: its SHA-256 when known, else its rows per
    split against the published counts. A file that fails is moved to ``<name>.rejected`` (it was
    just downloaded by this command) so that a rerun downloads it afresh."""
    digest = sha256_of(path)
    problem = None
    if benchmark.split_sha256 is not None:
        if digest != benchmark.split_sha256:
            problem = f"its SHA-256 is {digest[:16]}..., the published file's {benchmark.split_sha256[:16]}..."
    else:
        counts = read_age_split(path)["split"].value_counts().to_dict()
        if any(counts.get(s, 0) != n for s, n in benchmark.published.items()):
            problem = (f"its rows per split ({', '.join(f'{s} {counts.get(s, 0):,}' for s in benchmark.published)}) "
                       f"differ from the {benchmark.published_source}'s "
                       f"({', '.join(f'{s} {n:,}' for s, n in benchmark.published.items())})")
    if problem:
        rejected = path.with_name(path.name + ".rejected")
        os.replace(path, rejected)
        raise UserError(f"the downloaded {path.name} is not the published split: {problem}; it was moved to "
                        f"{rejected}. Run the command again, or give the file with --split-url")
    logger.info("%s checked against the published split (sha256 %s)", path, digest)


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
        return verify_cli(root, split_path, IMDB_WIKI)
    root.mkdir(parents=True, exist_ok=True)
    for db in ("imdb", "wiki"):
        fetch_imdb_wiki_images(root, db, args.url_base, args.keep_archives)

    def rebuild() -> pd.DataFrame:
        return pd.concat([read_imdb_wiki_mat(root / f"{db}_crop" / f"{db}.mat", db) for db in ("imdb", "wiki")],
                         ignore_index=True)

    split_path = _get_split(args, root, IMDB_WIKI, rebuild)
    return verify_cli(root, split_path, IMDB_WIKI)


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
        return verify_cli(root, split_path, AGEDB)
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
    return verify_cli(root, split_path, AGEDB)


def _detect_split_file(root: Path) -> Path:
    found = [root / n for n in SPLIT_FILE_NAMES if (root / n).is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no split file ({', '.join(SPLIT_FILE_NAMES)}) in {root}; prepare the dataset "
                        f"first or pass --split-file")
    raise UserError(f"several split files in {root} ({', '.join(p.name for p in found)}); choose one with --split-file")


def build_cache_main(argv: list[str]) -> int:
    """``python -m ranksim.data.prepare cache``: build and check the image cache of a data root."""
    parser = argparse.ArgumentParser(
        prog="python -m ranksim.data.prepare cache",
        description="Decode and resize every image of an age split file once into a uint8 memory-mapped "
                    "file (ROOT/cache/images_u8.npy), which training then reads instead of the JPEGs when "
                    "data.use_cache is true. Lossless: it stores the output of the first transform step. "
                    "Needs S*S*3 bytes per image (147 KiB at 224 px: 2.4 GiB for AgeDB-DIR, 31 GiB for "
                    "IMDB-WIKI-DIR).")
    parser.add_argument("--root", required=True, help="data root of a prepared age dataset")
    parser.add_argument("--split-file", help="split file whose images to cache (default: the one of "
                                             f"{', '.join(SPLIT_FILE_NAMES)} found in ROOT)")
    parser.add_argument("--cache-path", help="where to write it (default: ROOT/cache/images_u8.npy, where "
                                             "training looks)")
    parser.add_argument("--image-size", type=int, default=IMG_SIZE,
                        help="side of the stored images; must equal data.image_size (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: up to 4, one per CPU core)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist; prepare the dataset first (see data/README.md)")
    split_file = Path(args.split_file) if args.split_file else _detect_split_file(root)
    split_df = read_age_split(split_file)
    cache_path = Path(args.cache_path) if args.cache_path else default_cache_path(root)
    build_cache(root, split_df, cache_path, workers=args.workers, image_size=args.image_size, split_file=split_file)
    cache = check_cache(root, split_df, cache_path)
    size = cache_path.stat().st_size
    print(f"cache     {cache_path}\nimages    {len(cache):,} of {args.image_size}x{args.image_size} px "
          f"(split file {split_file.name})\nsize      {size / 2**30:.2f} GiB\nchecked   paths against the split "
          f"file, {min(SPOT_CHECKS, len(cache))} images against their JPEGs")
    return 0
