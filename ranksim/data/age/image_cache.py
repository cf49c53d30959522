"""The optional one-time uint8 cache of resized age images: building, checking and opening it.

Both SPEC 6 pipelines (:mod:`~ranksim.data.age.transforms`) start with ``Resize((S, S))``. The
cache stores exactly that step's output for every image of a split file, as ``uint8``, so reading
it loses nothing: the cached transforms reproduce the rest of the pipeline bit for bit. Decoding a
JPEG and resizing it is most of the cost of the plain path; the cache skips both.

Files (``default_cache_path``): ``<root>/cache/images_u8.npy``, a ``.npy`` array of shape
``(N, S, S, 3)`` read as a memory map, and ``images_u8.json`` beside it, which records the image
size and the paths in split-file order. The JSON is written last, after the array is complete and
renamed into place, so an interrupted build never leaves a cache that opens. At S = 224 an image
takes 147 KiB: about 2.4 GiB for AgeDB-DIR and 31 GiB for IMDB-WIKI-DIR.

Build it with ``python -m ranksim.data.prepare cache --root DIR``
(:func:`ranksim.data.age.prepare.build_cache_main`). A cache only knows paths: rebuild it when
images are replaced in place.
"""

from __future__ import annotations

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
from tqdm import tqdm

from ranksim.data.age.transforms import IMG_SIZE, load_image, resize_to_array
from ranksim.data.files import sha256_of
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

CACHE_FORMAT = "ranksim-image-cache"
CACHE_VERSION = 1
SPOT_CHECKS = 8         # images decoded again after a build and compared with the cache


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
