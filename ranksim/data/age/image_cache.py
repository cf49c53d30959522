"""Age-image loading: the SPEC 6 transforms, and an optional one-time uint8 cache of resized images.

**Plain path.** :func:`load_image` opens a JPEG as RGB; :func:`plain_train_transform` and
:func:`plain_eval_transform` are the SPEC 6 torchvision pipelines, written once here for every
reader.

**Cache.** Both pipelines start with ``Resize((S, S))``. The cache stores exactly that step's
output for every image of a split file, as ``uint8``, so reading it loses nothing: the rest of the
pipeline (:func:`cached_train_transform`, :func:`cached_eval_transform`) reproduces the torchvision
steps on the uint8 tensor, bit for bit, drawing from torch's global RNG in the same order as
torchvision (crop row, crop column, flip). Decoding a JPEG and resizing it is most of the cost of
the plain path; the cache skips both.

Files (``default_cache_path``): ``<root>/cache/images_u8.npy``, a ``.npy`` array of shape
``(N, S, S, 3)`` read as a memory map, and ``images_u8.json`` beside it, which records the image
size and the paths in split-file order. The JSON is written last, after the array is complete and
renamed into place, so an interrupted build never leaves a cache that opens. At S = 224 an image
takes 147 KiB: about 2.4 GiB for AgeDB-DIR and 31 GiB for IMDB-WIKI-DIR.

Build it with ``python -m ranksim.data.prepare cache --root DIR`` (:func:`build_cache_main`).
A cache only knows paths: rebuild it when images are replaced in place.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms
from tqdm import tqdm

from ranksim.data.download import sha256_of
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

IMG_SIZE = 224          # SPEC 6: every face is resized to 224x224
CROP_PADDING = 16       # SPEC 6: RandomCrop(224, padding=16)
MEAN = STD = (0.5, 0.5, 0.5)
CACHE_FORMAT = "ranksim-image-cache"
CACHE_VERSION = 1
SPLIT_FILE_NAMES = ("agedb.csv", "imdb_wiki.csv", "synthetic.csv")  # detected by the cache command
SPOT_CHECKS = 8         # images decoded again after a build and compared with the cache


# --------------------------------------------------------------------------------------------
# Plain path


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an RGB PIL image; a missing or unreadable file is a :class:`UserError`
    that names it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() loads the pixels, so truncation shows here
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist; prepare the dataset again or fix the split file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"image {path} is damaged or not an image ({err}); replace it (prepare the dataset "
                        f"again) or remove its row from the split file") from None


def _resize(size: int) -> transforms.Resize:
    # torchvision's default: bilinear, antialiased; on PIL images this is PIL's own resize.
    return transforms.Resize((size, size))


def plain_train_transform(image_size: int = IMG_SIZE, crop_padding: int = CROP_PADDING) -> transforms.Compose:
    """SPEC 6 training transform of a PIL image: resize, padded random crop, flip, to [-1, 1]."""
    return transforms.Compose([
        _resize(image_size),
        transforms.RandomCrop(image_size, padding=crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def plain_eval_transform(image_size: int = IMG_SIZE) -> transforms.Compose:
    """SPEC 6 validation and test transform of a PIL image: resize, to [-1, 1]."""
    return transforms.Compose([_resize(image_size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def resize_to_array(img: Image.Image, image_size: int = IMG_SIZE) -> np.ndarray:
    """The first step of both transforms, as the cache stores it: ``(S, S, 3)`` uint8."""
    return np.asarray(_resize(image_size)(img), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Cached path


def _check_chw_u8(img: torch.Tensor) -> None:
    if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        dtype = img.dtype if isinstance(img, torch.Tensor) else None
        raise ValueError(f"expected a uint8 tensor of shape (3, H, W), got {shape} {dtype}")


def _to_normalised_float(img: torch.Tensor) -> torch.Tensor:
    # The same float operations as ToTensor (x / 255) and Normalize ((x - 0.5) / 0.5), so the result
    # is bit-identical to the plain path.
    return img.to(torch.float32).div_(255).sub_(MEAN[0]).div_(STD[0])


def crop_flip_u8(img: torch.Tensor, top: int, left: int, flip: bool, padding: int = CROP_PADDING) -> torch.Tensor:
    """``RandomCrop(padding=p)`` with its offsets given, then an optional horizontal flip, on uint8.

    The input ``(3, H, W)`` is thought of as zero-padded by ``padding`` on every side, and the
    ``(H, W)`` window at ``(top, left)`` of that padded image is returned, without building it: a
    zero tensor receives the overlapping part of the input.
    """
    _, h, w = img.shape
    out = torch.zeros_like(img)
    r0, c0 = top - padding, left - padding          # window origin in input coordinates
    rs, re = max(0, r0), min(h, r0 + h)
    cs, ce = max(0, c0), min(w, c0 + w)
    if rs < re and cs < ce:
        out[:, rs - r0:re - r0, cs - c0:ce - c0] = img[:, rs:re, cs:ce]
    return out.flip(-1) if flip else out


def cached_train_transform(img_u8_chw: torch.Tensor, crop_padding: int = CROP_PADDING) -> torch.Tensor:
    """The training transform after the resize, on a cached ``(3, S, S)`` uint8 image.

    Draws ``torch.randint(0, 2p + 1)`` for the row, then for the column, then ``torch.rand(1) <
    0.5`` for the flip, from torch's global RNG, as torchvision's RandomCrop and
    RandomHorizontalFlip do: under the same seed it returns what :func:`plain_train_transform`
    returns for the image the cache entry came from.

    Returns:
        float32 ``(3, S, S)`` in [-1, 1].
    """
    _check_chw_u8(img_u8_chw)
    span = 2 * crop_padding + 1
    top = int(torch.randint(0, span, size=(1,)).item())
    left = int(torch.randint(0, span, size=(1,)).item())
    flip = bool(torch.rand(1) < 0.5)
    return _to_normalised_float(crop_flip_u8(img_u8_chw, top, left, flip, crop_padding))


def cached_eval_transform(img_u8_chw: torch.Tensor) -> torch.Tensor:
    """The evaluation transform after the resize: float32 ``(3, S, S)`` in [-1, 1]."""
    _check_chw_u8(img_u8_chw)
    return _to_normalised_float(img_u8_chw)


# --------------------------------------------------------------------------------------------
# Cache files


def default_cache_path(root: str | os.PathLike) -> Path:
    """Where the cache of a data root lives: ``<root>/cache/images_u8.npy`` (one per root; its
    sidecar records the image size)."""
    return Path(root) / "cache" / "images_u8.npy"


def sidecar_path(cache_path: str | os.PathLike) -> Path:
    return Path(cache_path).with_suffix(".json")


def _stale(cache_path: Path, root_hint: str, why: str) -> UserError:
    return UserError(f"image cache {cache_path} is stale ({why}): rebuild it with python -m "
                     f"ranksim.data.prepare cache --root {root_hint}, or delete it to read the JPEGs")


def _root_hint(cache_path: Path) -> str:
    return str(cache_path.parent.parent) if cache_path.parent.name == "cache" else "ROOT"


class ImageCache:
    """Read access to a built cache. Open it with :meth:`open`.

    The memory map is opened lazily, once per process: an ``ImageCache`` can be handed to
    DataLoader workers (fork or spawn) and each opens its own map on first use.
    """

    def __init__(self, cache_path: Path, paths: list[str], size: int):
        self.cache_path = Path(cache_path)
        self.paths = paths
        self.size = size
        self._index = {p: i for i, p in enumerate(paths)}
        self._array: np.ndarray | None = None
        self._pid: int | None = None

    @classmethod
    def open(cls, cache_path: str | os.PathLike, split_df: pd.DataFrame) -> "ImageCache":
        """Open the cache at ``cache_path`` for the rows of ``split_df`` (a ``path`` column).

        Raises:
            UserError: the cache is absent, incomplete, or lacks a path of ``split_df`` ("stale").
        """
        cache_path = Path(cache_path)
        hint = _root_hint(cache_path)
        meta_path = sidecar_path(cache_path)
        if not cache_path.is_file() or not meta_path.is_file():
            raise UserError(f"no complete image cache at {cache_path}: build it with python -m "
                            f"ranksim.data.prepare cache --root {hint}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            paths, size = list(meta["paths"]), int(meta["size"])
            ok = meta.get("format") == CACHE_FORMAT and meta.get("version") == CACHE_VERSION
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise _stale(cache_path, hint, f"{meta_path.name} is unreadable or from another version")
        try:
            array = np.load(cache_path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise _stale(cache_path, hint, f"cannot map it: {err}") from None
        if array.dtype != np.uint8 or array.shape != (len(paths), size, size, 3):
            raise _stale(cache_path, hint, f"array {array.shape} {array.dtype} does not match "
                                           f"{len(paths)} images of {size} px")
        del array
        cache = cls(cache_path, paths, size)
        wanted = split_df["path"].tolist()
        missing = [p for p in wanted if p not in cache._index]
        if missing:
            raise _stale(cache_path, hint, f"{len(missing)} of the split file's {len(wanted)} images are not "
                                           f"in it, e.g. {missing[0]}")
        return cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"], state["_pid"] = None, None  # each process maps the file itself
        return state

    def index_of(self, relpath: str) -> int:
        """Row of ``relpath`` (as written in the split file)."""
        try:
            return self._index[relpath]
        except KeyError:
            raise _stale(self.cache_path, _root_hint(self.cache_path), f"{relpath} is not in it") from None

    def _map(self) -> np.ndarray:
        if self._array is None or self._pid != os.getpid():
            self._array = np.load(self.cache_path, mmap_mode="r")
            self._pid = os.getpid()
        return self._array

    def get(self, i: int) -> torch.Tensor:
        """Image ``i`` as a uint8 tensor ``(3, S, S)`` (a copy, safe to modify)."""
        return torch.from_numpy(np.array(self._map()[i])).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# Building


_worker: dict = {}


def _init_worker(tmp_path: str, root: str, size: int) -> None:
    # Pool workers write their rows straight into the shared file: no image crosses a pipe.
    _worker.update(array=np.load(tmp_path, mmap_mode="r+"), root=Path(root), size=size)


def _fill(job: tuple[int, str]) -> int:
    i, rel = job
    _worker["array"][i] = resize_to_array(load_image(_worker["root"] / rel), _worker["size"])
    return i


def build_cache(root: str | os.PathLike, split_df: pd.DataFrame, cache_path: str | os.PathLike | None = None,
                workers: int | None = None, image_size: int = IMG_SIZE,
                split_file: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Decode and resize every image of ``split_df`` (in its order) into a new cache; return its path.

    Args:
        root: data root; ``split_df.path`` is relative to it.
        split_df: the split file's rows (column ``path``); duplicate paths are stored once.
        cache_path: default :func:`default_cache_path` of ``root``.
        workers: processes decoding images (default: up to 4, one per CPU); 1 decodes in this process.
        image_size: side of the stored images (SPEC 6: 224).
        split_file: recorded in the sidecar (name and sha256) for the record.
        progress: show a tqdm bar.

    Raises:
        UserError: an image is missing or damaged (named), or the disk is too small.
    """
    root = Path(root)
    cache_path = Path(cache_path) if cache_path is not None else default_cache_path(root)
    meta_path = sidecar_path(cache_path)
    paths = list(dict.fromkeys(split_df["path"].tolist()))
    if not paths:
        raise UserError("the split file lists no images; nothing to cache")
    workers = max(1, min(4, os.cpu_count() or 1)) if workers is None else max(1, int(workers))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    need = len(paths) * image_size * image_size * 3
    free = shutil.disk_usage(cache_path.parent).free + (cache_path.stat().st_size if cache_path.exists() else 0)
    if need > free:
        raise UserError(f"the cache needs {need / 2**30:.1f} GiB but {cache_path.parent} has {free / 2**30:.1f} GiB "
                        f"free; free some space or train from the JPEGs (data.use_cache=false)")
    # The old sidecar goes first: from here until the new one is written nothing looks complete.
    # The old array goes too, so that a disk with room for one cache can rebuild it.
    meta_path.unlink(missing_ok=True)
    cache_path.unlink(missing_ok=True)
    tmp = cache_path.with_name(cache_path.stem + ".tmp.npy")
    start = time.perf_counter()
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(len(paths), image_size, image_size, 3))
        jobs = list(enumerate(paths))
        with tqdm(total=len(paths), desc="caching images", unit="img", disable=not progress) as bar:
            if workers == 1:
                for i, rel in jobs:
                    array[i] = resize_to_array(load_image(root / rel), image_size)
                    bar.update()
            else:
                del array  # the workers map the file themselves
                context = multiprocessing.get_context()
                with context.Pool(workers, _init_worker, (str(tmp), str(root), image_size)) as pool:
                    for _ in pool.imap_unordered(_fill, jobs, chunksize=64):
                        bar.update()
                array = np.load(tmp, mmap_mode="r+")
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, cache_path)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "size": image_size, "count": len(paths),
            "dtype": "uint8", "layout": "NHWC", "resize": "torchvision Resize default (PIL bilinear, antialiased)",
            "split_file": None if split_file is None else {"name": Path(split_file).name,
                                                           "sha256": sha256_of(Path(split_file))},
            "build_seconds": round(seconds, 1), "paths": paths}
    meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
    meta_tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(meta_tmp, meta_path)
    logger.info("cached %d images in %s (%.0f s)", len(paths), cache_path, seconds)
    return cache_path


def check_cache(root: str | os.PathLike, split_df: pd.DataFrame, cache_path: str | os.PathLike,
                samples: int = SPOT_CHECKS, seed: int = 0) -> ImageCache:
    """Open the cache against ``split_df`` and compare ``samples`` random entries with freshly
    decoded images; a difference is a :class:`UserError`."""
    cache = ImageCache.open(cache_path, split_df)
    picks = random.Random(seed).sample(range(len(cache)), min(samples, len(cache)))
    for i in picks:
        fresh = resize_to_array(load_image(Path(root) / cache.paths[i]), cache.size)
        if not np.array_equal(fresh, cache.get(i).permute(1, 2, 0).numpy()):
            raise _stale(Path(cache_path), str(root), f"{cache.paths[i]} differs from its cached copy")
    return cache


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
    from ranksim.data.prepare_age import read_age_split

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
