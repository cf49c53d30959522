"""End-to-end training rate WITH data loading: one timed epoch of a real config on synthetic JPEGs.

    python benchmarks/bench_epoch.py --json epoch.json                  # GPU: 8000 JPEGs of 224 px, ResNet-50
    python benchmarks/bench_epoch.py --tiny --json epoch.json           # CPU smoke size: seconds, not a measurement

Where benchmarks/bench_train.py times the model step on batches already on the device, this
times what ``train.py`` does, through the same objects (:class:`ranksim.engine.loop.Trainer`, its
DataLoader with workers, the uint8 image cache):

1. **Data.** ``--images`` photograph-like JPEGs (benchmarks/bench_loading.py's generator) of
   ``--jpeg-size`` px are written in parallel into a temporary AgeDB-shaped data root, with
   AgeDB-like ages (benchmarks/bench_ops.py) and the DIR balanced val/test split
   (:func:`~ranksim.data.age.rebuild_split.make_balanced_split`, its per-age cap scaled from AgeDB-DIR's
   30 to the pool), written as ``agedb.csv``; then the uint8 cache is built
   (:func:`~ranksim.data.age.image_cache.build_cache`), as ``prepare cache`` does.
2. **Per recipe** (``--recipes``): the config (default ``configs/agedb/sqinv_ranksim.yaml``) with
   overrides (data root, ``data.max_train_samples``, ``schedule.epochs=2``, no TensorBoard) is
   built into a Trainer, then
   - epoch 0 is run as a warm-up (worker start, allocator, kernel selection) and timed apart;
   - epoch 1 is the timed epoch, with the GPU's utilisation sampled every ``--sample-every``
     seconds meanwhile (NVML through ``torch.cuda.utilization``, else ``nvidia-smi``) and the
     host's CPU busy share over the epoch (``/proc/stat``);
   - the training DataLoader is iterated alone once more (no model): if loading alone is barely
     faster than training, loading is the bottleneck;
   - evaluation (``ranksim.engine.inference.predict``, a fresh loader each time as in validation) is timed over the
     un-augmented training set and over val: the forward-only rate of validation, the FDS
     statistics pass and RRT stage 2.

Recipes: ``paper`` is the config as written (fp32, what the paper-table scripts run); ``fast`` adds
``precision=bf16 model.channels_last=true``. The raw figures go to ``--json``, rewritten after every
phase, so a run stopped by a time limit keeps what it measured. The data root is deleted at the end
unless ``--data-root`` names one to keep.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loading import make_jpegs  # noqa: E402
from bench_ops import agedb_like_ages  # noqa: E402

from ranksim.config import load_config  # noqa: E402
from ranksim.data.age.image_cache import build_cache  # noqa: E402
from ranksim.data.age.rebuild_split import make_balanced_split  # noqa: E402
from ranksim.data.age.split_file import write_age_split  # noqa: E402

logger = logging.getLogger("bench_epoch")

REPO = Path(__file__).resolve().parents[1]
AGEDB_IMAGES, AGEDB_VAL_CAP = 16_488, 30    # AgeDB-DIR: all images, and its val/test cap per age (SPEC 6)
RECIPES = {"paper": [], "fast": ["precision=bf16", "model.channels_last=true"]}
# The smoke size: a narrow ResNet on 16 px images, so that the whole path runs on a CPU in seconds.
TINY_OVERRIDES = ["model.name=resnet_small", "model.width=4", "data.image_size=16", "data.crop_padding=1",
                  "optim.batch_size=32"]
CHUNK = 200                                  # JPEGs per generation job


# --------------------------------------------------------------------------------------------
# Data


def _write_chunk(job: tuple[str, int, int, int]) -> list[str]:
    root, part, count, side = job
    folder = Path(root) / f"p{part:03d}"
    (folder / "img").mkdir(parents=True, exist_ok=True)
    return [f"p{part:03d}/{rel}" for rel in make_jpegs(folder, count, side, seed=part)]


def make_dataset(root: Path, images: int, side: int, image_size: int, workers: int, seed: int = 0) -> dict:
    """Write an AgeDB-shaped data root (JPEGs, ``agedb.csv``, the uint8 cache); return timings."""
    start = time.perf_counter()
    jobs = [(str(root), part, min(CHUNK, images - first), side)
            for part, first in enumerate(range(0, images, CHUNK))]
    if workers > 1:
        with multiprocessing.get_context().Pool(workers) as pool:
            paths = [p for chunk in pool.map(_write_chunk, jobs) for p in chunk]
    else:
        paths = [p for job in jobs for p in _write_chunk(job)]
    generate_s = time.perf_counter() - start
    ages = agedb_like_ages(images, np.random.default_rng(seed)).numpy().astype(np.int64)
    cap = max(1, round(AGEDB_VAL_CAP * images / AGEDB_IMAGES))
    table = make_balanced_split(pd.DataFrame({"age": ages, "path": paths}), cap, seed)
    write_age_split(table, root / "agedb.csv")
    start = time.perf_counter()
    build_cache(root, table, workers=workers, image_size=image_size, progress=False)
    cache_s = time.perf_counter() - start
    counts = table["split"].value_counts().to_dict()
    jpeg_kib = sum((root / p).stat().st_size for p in paths[:50]) / min(50, len(paths)) / 1024
    return {"images": images, "jpeg_size": side, "jpeg_kib": jpeg_kib, "val_cap_per_age": cap,
            "split": {k: int(counts.get(k, 0)) for k in ("train", "val", "test")},
            "generate_s": generate_s, "cache_build_s": cache_s, "cache_workers": workers}


# --------------------------------------------------------------------------------------------
# Utilisation


def gpu_utilization_reader(device: torch.device):
    """A function returning the GPU's current utilisation in percent, and its source; ``(None,
    reason)`` when none works (CPU, no NVML, no nvidia-smi)."""
    if device.type != "cuda":
        return None, "no GPU"
    try:
        torch.cuda.utilization(device)
        return (lambda: float(torch.cuda.utilization(device))), "NVML (torch.cuda.utilization)"
    except Exception as err:  # pynvml missing or NVML unavailable: fall back to the CLI
        why = f"{type(err).__name__}: {err}"
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible):  # nvidia-smi counts all GPUs; CUDA counts the visible ones (an index or a UUID)
        index = visible[index]
    command = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

    def smi() -> float:
        return float(subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout.split()[0])
    try:
        smi()
        return smi, "nvidia-smi"
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None, f"unavailable (NVML: {why}; nvidia-smi failed)"


class Sampler(threading.Thread):
    """Calls ``read`` every ``every`` seconds until stopped; keeps the values."""

    def __init__(self, read, every: float):
        super().__init__(daemon=True)
        self.read, self.every, self.values = read, every, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.values.append(self.read())
            except Exception:  # a failed sample is skipped, not fatal to the measurement
                pass
            self._stop_event.wait(self.every)

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join(timeout=10)
        return self.values


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all host CPUs from /proc/stat; ``None`` off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def summarise(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values, dtype=float)
    return {"samples": len(v), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "below_50_share": float((v < 50).mean())}


# --------------------------------------------------------------------------------------------
# Measurement


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_recipe(cfg, device: torch.device, run_dir: Path, sample_every: float, record: dict, write) -> None:
    """Fill ``record`` phase by phase (``write()`` after each), for one config."""
    from ranksim.engine.inference import predict
    from ranksim.engine.loop import Trainer

    start = time.perf_counter()
    trainer = Trainer(cfg, run_dir, device, writer=None)
    record["build_s"] = time.perf_counter() - start
    n_train = len(trainer.data.train)
    record.update(train_samples=n_train, val_samples=len(trainer.data.val), batch_size=cfg.optim.batch_size,
                  num_workers=cfg.data.num_workers, precision=cfg.precision,
                  channels_last=cfg.model.channels_last, model=cfg.model.name, image_size=cfg.data.image_size,
                  cache=trainer.data.train.cache is not None)
    write()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    sync(device)
    start = time.perf_counter()
    losses = trainer.train_epoch(0)
    sync(device)
    record["warmup_epoch"] = {"seconds": time.perf_counter() - start, "loss": losses["loss"]}
    write()

    read, source = gpu_utilization_reader(device)
    record["gpu_util_source"] = source
    sampler = Sampler(read, sample_every) if read else None
    cpu_before = cpu_times()
    if sampler:
        sampler.start()
    sync(device)
    start = time.perf_counter()
    losses = trainer.train_epoch(1)
    sync(device)
    seconds = time.perf_counter() - start
    util = sampler.stop() if sampler else []
    cpu_after = cpu_times()
    cpu_busy = None
    if cpu_before and cpu_after and cpu_after[1] > cpu_before[1]:
        cpu_busy = 100.0 * (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
    record["timed_epoch"] = {"seconds": seconds, "images": n_train, "images_per_s": n_train / seconds,
                             "loss": losses["loss"], "gpu_util": summarise(util), "gpu_util_samples": util,
                             "host_cpu_busy_pct": cpu_busy,
                             "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    write()

    start = time.perf_counter()
    seen = sum(len(batch[1]) for batch in trainer.train_loader)
    seconds = time.perf_counter() - start
    record["loader_only"] = {"seconds": seconds, "images": seen, "images_per_s": seen / seconds}
    write()

    for name, dataset in (("eval_train", trainer.data.train_plain), ("eval_val", trainer.data.val)):
        sync(device)
        start = time.perf_counter()
        predict(trainer.model, dataset, trainer.data, cfg, device, desc=name)
        sync(device)
        seconds = time.perf_counter() - start
        record[name] = {"seconds": seconds, "images": len(dataset), "images_per_s": len(dataset) / seconds}
        write()
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke size for a CPU: 160 JPEGs of 32 px, narrow ResNet at 16 px, 64 training images")
    parser.add_argument("--config", type=Path, default=REPO / "configs/agedb/sqinv_ranksim.yaml",
                        help="the config whose epoch is timed (default: %(default)s)")
    parser.add_argument("--images", type=int, help="JPEGs generated (default: 8000; --tiny 160)")
    parser.add_argument("--jpeg-size", type=int, help="their side in pixels (default: 224; --tiny 32)")
    parser.add_argument("--train-samples", type=int,
                        help="data.max_train_samples: training images per epoch (default: 5000; --tiny 64)")
    parser.add_argument("--workers", type=int,
                        help="data.num_workers (default: the config's, at most the CPU count; --tiny 2)")
    parser.add_argument("--recipes", nargs="+", choices=tuple(RECIPES),
                        help="default: paper fast on CUDA, paper on CPU")
    parser.add_argument("--sample-every", type=float, default=0.2, help="seconds between GPU utilisation samples")
    parser.add_argument("--data-root", type=Path, help="where to write the data (kept); default: a temporary folder, deleted")
    parser.add_argument("--json", type=Path, help="write the raw figures (JSON) here")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides, for every recipe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    images = args.images or (160 if args.tiny else 8000)
    jpeg_size = args.jpeg_size or (32 if args.tiny else 224)
    train_samples = args.train_samples or (64 if args.tiny else 5000)
    recipes = args.recipes or (["paper", "fast"] if cuda and not args.tiny else ["paper"])
    cpus = os.cpu_count() or 1
    base = load_config(args.config, (TINY_OVERRIDES if args.tiny else []) + list(args.overrides))
    workers = args.workers if args.workers is not None else (2 if args.tiny else min(base.data.num_workers, cpus))

    record = {"device": torch.cuda.get_device_name(device) if cuda else f"CPU ({cpus} logical CPUs)",
              "cuda": cuda, "tiny": args.tiny, "config": str(Path(args.config).resolve().relative_to(REPO))
              if Path(args.config).resolve().is_relative_to(REPO) else str(args.config),
              "torch": torch.__version__, "cpus": cpus, "data": None, "recipes": {}, "complete": False}

    def write() -> None:
        if args.json:
            args.json.write_text(json.dumps(record, indent=1))

    keep = args.data_root is not None
    work = Path(tempfile.mkdtemp(prefix="ranksim-bench-epoch-"))
    root = args.data_root or work / "agedb-synth"
    try:
        root.mkdir(parents=True, exist_ok=True)
        logger.info("generating %d JPEGs of %d px in %s", images, jpeg_size, root)
        record["data"] = make_dataset(root, images, jpeg_size, base.data.image_size, workers=min(cpus, 16))
        write()
        for name in recipes:
            overrides = (TINY_OVERRIDES if args.tiny else []) + list(args.overrides) + RECIPES[name] + [
                f"data.root={root}", f"data.max_train_samples={train_samples}", f"data.num_workers={workers}",
                "schedule.epochs=2", "schedule.milestones=[1]", "logging.tensorboard=false",
                "logging.progress=false", f"device={device.type}"]
            cfg = load_config(args.config, overrides)
            record["recipes"][name] = {"overrides": RECIPES[name]}
            logger.info("recipe %s: %s", name, " ".join(RECIPES[name]) or "the config as written")
            measure_recipe(cfg, device, work / f"run-{name}", args.sample_every, record["recipes"][name], write)
            epoch = record["recipes"][name]["timed_epoch"]
            logger.info("recipe %s: %.1f img/s with loading (loader alone %.1f img/s)", name,
                        epoch["images_per_s"], record["recipes"][name]["loader_only"]["images_per_s"])
        record["complete"] = True
        write()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
