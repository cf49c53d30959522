"""Images per second per CPU core of the age training transform: JPEG path vs uint8 cache.

    python benchmarks/bench_loading.py [--images 200] [--side 500] [--repeats 3]

Generates ``--images`` JPEGs of ``--side`` x ``--side`` pixels (smooth random shapes plus noise,
so that they compress like photographs rather than like pure noise) in a temporary folder, builds
the cache with one process (timed separately), then times single-threaded
(``torch.set_num_threads(1)``), in this process:

- plain:  ``load_image`` (JPEG decode) + ``plain_train_transform()`` (resize, padded crop, flip,
  to tensor, normalise), as the reader does without a cache;
- cache:  ``ImageCache.get`` + ``cached_train_transform``, as the reader does with one.

Each path runs over all images ``--repeats`` times after one warm-up pass; the best pass counts, so
the page cache is warm for both (the cache file is far smaller per image than a training set's
JPEGs are slow to decode, and a real epoch reads it sequentially enough for the OS to keep up).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranksim.data.age.image_cache import ImageCache, build_cache  # noqa: E402
from ranksim.data.age.transforms import cached_train_transform, load_image, plain_train_transform  # noqa: E402


def make_jpegs(folder: Path, count: int, side: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        img = Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = (int(v) for v in rng.integers(0, side, 2))
            w, h = (int(v) for v in rng.integers(side // 10, side // 2, 2))
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        img = img.filter(ImageFilter.GaussianBlur(3))
        noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 8, (side, side, 3)).astype(np.int16)
        rel = f"img/{k:05d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / rel, quality=90)
        paths.append(rel)
    return paths


def best_rate(run, count: int, repeats: int) -> float:
    run()  # warm-up: page cache, allocator, lazy imports
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="number of generated JPEGs (default: %(default)s)")
    parser.add_argument("--side", type=int, default=500, help="their width and height in pixels (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes per path, the best one kept (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="bench_loading_") as tmp:
        root = Path(tmp)
        (root / "img").mkdir()
        paths = make_jpegs(root, args.images, args.side)
        jpeg_kib = sum((root / p).stat().st_size for p in paths) / len(paths) / 1024
        df = pd.DataFrame({"age": np.zeros(len(paths), dtype=np.int64), "path": paths, "split": "train"})

        start = time.perf_counter()
        cache_path = build_cache(root, df, workers=1)
        build_s = time.perf_counter() - start
        cache = ImageCache.open(cache_path, df)

        plain = plain_train_transform()
        files = [root / p for p in paths]

        def run_plain():
            for f in files:
                plain(load_image(f))

        def run_cache():
            for i in range(len(cache)):
                cached_train_transform(cache.get(i))

        plain_rate = best_rate(run_plain, len(paths), args.repeats)
        cache_rate = best_rate(run_cache, len(paths), args.repeats)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__}, 1 thread")
    print(f"{len(paths)} JPEGs of {args.side}x{args.side} px ({jpeg_kib:.0f} KiB each), "
          f"training transform, best of {args.repeats} passes\n")
    print(f"{'path':<34} {'images/s/core':>14} {'ms/image':>9}")
    print(f"{'plain (JPEG decode + transform)':<34} {plain_rate:>14,.0f} {1000 / plain_rate:>9.2f}")
    print(f"{'cache (memmap + uint8 transform)':<34} {cache_rate:>14,.0f} {1000 / cache_rate:>9.2f}")
    print(f"{'speed-up':<34} {cache_rate / plain_rate:>13.1f}x")
    print(f"\none-time cache build, 1 process: {build_s:.2f} s ({len(paths) / build_s:,.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
