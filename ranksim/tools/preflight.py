"""Preflight of a reproduce script: check the data, run every row briefly for real, project the time.

``scripts/reproduce_table.sh DATASET --preflight`` (and the reproduce_*.sh wrappers) call
:func:`run_preflight`. Before any GPU-day is spent it:

1. checks the prepared data of the table's rows (:func:`check_data`): split counts and hashes
   against the published split, a sample of images that decode, the image cache, GloVe for STS-B.
   Each problem is one line saying what to run;
2. runs each row with its own config (model, image size, batch size, precision, workers, device)
   for ``iters`` training iterations in each of two epochs, so that the FDS statistics update
   (end of epoch 0) and its smoothing (epoch 1) both run, then a validation each epoch and a test,
   both on a subset of ``eval_batches`` batches. An RRT row loads its stage-1 row's preflight
   checkpoint. Everything is written in a scratch folder, removed at the end unless ``keep``;
3. measures training iterations per second after warm-up, validation throughput, the FDS pass,
   the loader on its own and peak GPU memory, and projects each row's full time and the table's
   with :func:`row_seconds`, the arithmetic that ``scripts/gpu_check_report.py`` also uses;
4. prints one line per row and the total, and writes the same as JSON beside the scratch folder.

This module imports torch only inside the functions that train, so that the projection arithmetic
(:func:`row_seconds`, :func:`duration`) can be used by the GPU report without it.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import platform
import random
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("ranksim.tools.preflight")

WARMUP_ITERS = 2          # training iterations of each epoch left out of the rate (worker start-up, kernel selection)
IMAGES_SAMPLED = 32       # images decoded by the data check
# Flag a row whose loader alone is less than this many times as fast as training with loading: it
# then sets the pace (the threshold of scripts/gpu_check_report.py's bottleneck verdict).
LOADER_HEADROOM = 1.3


# --------------------------------------------------------------------------------------------
# Projection arithmetic (shared with scripts/gpu_check_report.py)


def row_seconds(sizes: dict, train_rate: float, eval_rate: float, train_passes: float, forward_passes: float,
                val_passes: float = 1.0) -> float:
    """Wall time of one row: per epoch, ``train_passes`` training passes at ``train_rate`` plus
    ``forward_passes`` forward-only passes over train and ``val_passes`` over val at ``eval_rate``
    (samples per second); then one test pass. ``sizes`` holds train, val, test and epochs."""
    per_epoch = (train_passes * sizes["train"] / train_rate
                 + forward_passes * sizes["train"] / eval_rate + val_passes * sizes["val"] / eval_rate)
    return sizes["epochs"] * per_epoch + sizes["test"] / eval_rate


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def row_schedule(cfg, train_size: int) -> tuple[float, float]:
    """``(epochs, validations per epoch)`` of a full run of ``cfg`` on ``train_size`` samples.

    With ``schedule.val_every_iters`` (STS-B) validation runs every N iterations rather than once
    per epoch, and ``schedule.max_validations`` ends the run early; an early stop by patience
    cannot be foreseen, so the projection is an upper bound for such rows.
    """
    s = cfg.schedule
    epochs = float(s.epochs)
    if not s.val_every_iters:
        return epochs, 1.0
    iters_per_epoch = math.ceil(train_size / cfg.optim.batch_size)
    per_epoch = iters_per_epoch / s.val_every_iters
    if s.max_validations:
        epochs = min(epochs, s.max_validations / per_epoch)
    return epochs, per_epoch


def project_row(sizes: dict, rates: dict, fds: bool) -> dict:
    """Projected seconds of one full row from its measured ``rates`` (samples/s of training and of
    evaluation), with the arithmetic written out. The FDS statistics pass is a forward pass over
    the training set, at the evaluation rate."""
    train_rate, eval_rate = rates["train"], rates["eval"]
    seconds = row_seconds(sizes, train_rate, eval_rate, 1, 1 if fds else 0, sizes["val_passes"])
    n, v, t, e = sizes["train"], sizes["val"], sizes["test"], sizes["epochs"]
    terms = [f"{n:,}/{train_rate:.1f}"] + ([f"{n:,}/{eval_rate:.1f}"] if fds else [])
    vp = sizes["val_passes"]
    terms.append(f"{v:,}/{eval_rate:.1f}" if vp == 1 else f"{vp:.2f}×{v:,}/{eval_rate:.1f}")
    epochs = f"{e:g}" if e == int(e) else f"{e:.1f}"
    return {"seconds": seconds, "formula": f"({' + '.join(terms)}) × {epochs} + {t:,}/{eval_rate:.1f} = {seconds:,.0f} s"}


# --------------------------------------------------------------------------------------------
# 1. Data check


@dataclass
class DataCheck:
    """Problems stop the preflight before any row runs; warnings (a split that differs from the
    published one, no image cache) are reported and the rows still run."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)


def check_data(configs: list) -> DataCheck:
    """Check each distinct data source among ``configs`` once (the rows of a table share one)."""
    from ranksim.errors import UserError

    result, seen = DataCheck(), set()
    for cfg in configs:
        d = cfg.data
        key = (d.dataset, str(d.root), d.split_file, d.glove_dir, d.image_size, d.use_cache)
        if key in seen:
            continue
        seen.add(key)
        result.checked.append(f"{d.dataset} at {d.root}")
        try:
            if d.dataset == "sts_b":
                _check_sts_b(cfg, result)
            else:
                _check_age(cfg, result)
        except UserError as err:  # an unreadable split file, say: its message says what to do
            result.problems.append(str(err))
    return result


def _check_age(cfg, result: DataCheck) -> None:
    from ranksim.data.age.benchmarks import BENCHMARKS, AgeBenchmark
    from ranksim.data.age.image_cache import check_cache, default_cache_path
    from ranksim.data.age.split_file import read_age_split
    from ranksim.data.age.synthetic import NUM_LABELS
    from ranksim.data.age.transforms import load_image
    from ranksim.data.age.verify import _listing, verify_age_split
    from ranksim.data.build import PREPARE_HINT, generate_synthetic_once, split_file_path
    from ranksim.errors import UserError
    from ranksim.data.files import sha256_of

    d, root = cfg.data, Path(cfg.data.root)
    # The synthetic data is generated on first use: delete its folder to have it generated again.
    prepare = PREPARE_HINT.get(d.dataset, "rm -r {root} (it is generated again)").format(root=root)
    if d.dataset == "synthetic":
        generate_synthetic_once(root, d.synthetic)
    split_file = split_file_path(cfg)
    if not root.is_dir() or not split_file.is_file():
        missing = root if not root.is_dir() else split_file
        result.problems.append(f"{missing} does not exist: prepare the data with '{prepare}' or set data.root=PATH")
        return
    # The synthetic data has no published split to compare with, only its files and ages to check.
    benchmark = BENCHMARKS.get(d.dataset) or AgeBenchmark(name=d.dataset, title=d.dataset, split_url="", split_size=None,
                                                          age_range=(0, NUM_LABELS - 1))
    report = verify_age_split(root, split_file, benchmark)
    if benchmark.published:
        if not report.counts_match:
            ours = " / ".join(f"{report.counts[s]:,}" for s in ("train", "val", "test"))
            theirs = " / ".join(f"{report.published[s]:,}" for s in ("train", "val", "test"))
            result.warnings.append(f"{split_file}: {ours} train/val/test rows, the {report.published_source} has "
                                   f"{theirs}; results will not compare with the paper (download the published "
                                   f"split with '{prepare}')")
        if benchmark.split_sha256 and sha256_of(split_file) != benchmark.split_sha256:
            result.warnings.append(f"{split_file} differs from the published split file (SHA-256); results will "
                                   f"not compare with the paper (download it with '{prepare}')")
    if report.missing or report.empty:
        result.problems.append(f"{len(report.missing)} image(s) missing and {len(report.empty)} empty under "
                               f"{root} ({_listing(report.missing + report.empty, 3)}): extract the images "
                               f"again with '{prepare}'")
    if report.bad_ages or report.duplicates:
        result.problems.append(f"{split_file} has {len(report.bad_ages)} age(s) out of range and "
                               f"{len(report.duplicates)} duplicated path(s): prepare it again with '{prepare}'")
    table = read_age_split(split_file)
    picks = random.Random(0).sample(range(len(table)), min(IMAGES_SAMPLED, len(table)))
    bad = []
    for i in picks:
        path = root / table["path"].iloc[i]
        if path.is_file():  # a missing file is reported above
            try:
                load_image(path)
            except UserError:
                bad.append(table["path"].iloc[i])
    if bad:
        result.problems.append(f"{len(bad)} of {len(picks)} sampled images do not decode ({_listing(bad, 3)}): "
                               f"extract the images again with '{prepare}'")
    cache_path = default_cache_path(root)
    if d.use_cache and not cache_path.exists():
        result.warnings.append(f"no image cache at {cache_path}: every image is decoded on each pass, several times "
                               f"slower; build it with 'python -m ranksim.data.prepare cache --root {root}'")
    elif d.use_cache:
        try:
            check_cache(root, table, cache_path)
        except UserError as err:
            result.problems.append(f"image cache {cache_path}: {err}")


def _check_sts_b(cfg, result: DataCheck) -> None:
    from ranksim.data.build import PREPARE_HINT
    from ranksim.data.sts_b.dataset import load_sts_b
    from ranksim.data.sts_b.published import RANKSIM_SOURCE, matches_published
    from ranksim.data.sts_b.split_files import SPLIT_FILES
    from ranksim.errors import UserError

    d, root = cfg.data, Path(cfg.data.root)
    prepare = PREPARE_HINT["sts_b"].format(root=root)
    missing = [name for name in SPLIT_FILES.values() if not (root / name).is_file()]
    if missing:
        result.problems.append(f"{', '.join(missing)} not in {root}: prepare the split with '{prepare}'")
        return
    differ = [name for name in SPLIT_FILES.values() if not matches_published(root / name, RANKSIM_SOURCE.files[name])]
    if differ:
        result.warnings.append(f"{', '.join(differ)} in {root} differ from the RankSim paper's split (size or "
                               f"SHA-256); results will not compare with the paper (download it with '{prepare}')")
    if not d.glove_dir:
        result.warnings.append("data.glove_dir is empty: the BiLSTM learns its own embeddings instead of GloVe")
        return
    try:  # reads and indexes the splits and the cached GloVe matrix, exactly as a row does
        load_sts_b(root, glove_dir=d.glove_dir, max_seq_len=d.max_seq_len, max_vocab=d.max_vocab,
                   tokenizer=d.tokenizer)
    except (UserError, ValueError, OSError) as err:
        result.problems.append(f"GloVe for STS-B: {err}")


# --------------------------------------------------------------------------------------------
# 2-3. One row, briefly, measured


@dataclass
class RowPlan:
    name: str
    config: Path
    overrides: list[str]
    stage1: str | None = None     # the row whose preflight checkpoint this RRT row loads
    error: str | None = None      # why the row cannot run at all (its config does not load)


class _FewBatches:
    """The first ``limit`` batches of each pass over ``loader``, with the time at which each one
    had been trained on (the next one asked for), so that the training rate leaves out warm-up."""

    def __init__(self, loader, limit: int, synchronize):
        self.loader, self.limit, self.synchronize = loader, limit, synchronize
        self.epochs: list[list[float]] = []
        self.samples: list[int] = []

    def __len__(self) -> int:
        return min(self.limit, len(self.loader))

    def __iter__(self):
        marks = [time.perf_counter()]
        self.epochs.append(marks)
        for step, batch in enumerate(self.loader):
            if step >= self.limit:
                break
            self.samples.append(len(batch[1]))
            yield batch
            self.synchronize()
            marks.append(time.perf_counter())


def _subset(dataset, count: int):
    from torch.utils.data import Subset
    return Subset(dataset, range(min(count, len(dataset))))


def _rate(marks: list[float], samples: list[int], skip: int) -> float | None:
    """Samples per second over the iterations after the first ``skip``."""
    if len(marks) - 1 <= skip:
        return None
    seconds = marks[-1] - marks[skip]
    return sum(samples[skip:len(marks) - 1]) / seconds if seconds > 0 else None


def _loader_rate(loader, workers: int, iters: int) -> float | None:
    """Samples per second of ``loader`` alone in steady state.

    The workers start together and their first batches arrive almost at once, which would
    overstate the rate; so ``3 × workers`` batches are read (at least ``iters``) and the first
    ``workers`` of them are left out.
    """
    marks, samples = [time.perf_counter()], []
    wanted = min(max(iters, 3 * workers), len(loader))
    for step, batch in enumerate(loader):
        marks.append(time.perf_counter())
        samples.append(len(batch[1]))
        if step + 1 >= wanted:
            break
    if len(samples) < 2:
        return None
    return _rate(marks, samples, min(max(workers, 1), len(samples) - 2) + 1)


def _eval_rate(trainer, dataset, synchronize) -> float | None:
    """Forward-only samples per second over ``dataset`` as validation runs it (a fresh loader,
    eval mode, the config's precision), after the first batch. A split of one batch is timed
    from the loader's start, warm-up included: an over-estimate of the time rather than no
    projection at all."""
    import torch

    from ranksim.engine.build import make_loader
    from ranksim.engine.inference import autocast, to_device

    trainer.model.eval()
    marks, samples = [time.perf_counter()], []
    with torch.no_grad():
        for inputs, targets, _ in make_loader(trainer.cfg, dataset, trainer.data):
            with autocast(trainer.cfg, trainer.device):
                trainer.model(to_device(inputs, trainer.device))
            synchronize()
            marks.append(time.perf_counter())
            samples.append(len(targets))
    return _rate(marks, samples, 1 if len(samples) > 1 else 0)


def preflight_row(plan: RowPlan, out: Path, iters: int, eval_batches: int) -> dict:
    """Run one row briefly into ``out`` and measure it; the returned record has status "ok"."""
    import torch

    from ranksim.config import load_config
    from ranksim.engine.build import select_device
    from ranksim.engine.loop import Trainer

    cfg = load_config(plan.config, plan.overrides)
    # Two epochs, validated once each at their end, so that FDS updates (epoch 0) and smooths
    # (epoch 1); no early stop, no TensorBoard.
    for key, value in (("epochs", 2), ("val_every_iters", 0), ("patience", 0), ("max_validations", 0)):
        setattr(cfg.schedule, key, value)
    cfg.schedule.milestones = []
    cfg.logging.tensorboard = False
    cfg.logging.progress = False
    device = select_device(cfg.device)
    on_cuda = device.type == "cuda"
    synchronize = (lambda: torch.cuda.synchronize(device)) if on_cuda else (lambda: None)
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    (out / "checkpoints").mkdir(parents=True)
    started = time.perf_counter()
    trainer = Trainer(cfg, out, device)
    build_s = time.perf_counter() - started
    data = trainer.data
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    epochs, val_passes = row_schedule(load_config(plan.config, plan.overrides), sizes["train"])
    sizes.update(epochs=epochs, val_passes=val_passes)

    batch = cfg.optim.batch_size
    few = _FewBatches(trainer.train_loader, iters, synchronize)
    trainer.train_loader = few
    eval_size = eval_batches * batch
    # Validation and test on a subset; the FDS pass too (the faithful pass reads data.train, the
    # fixed one data.train_plain). The training loader was built before, over the whole set.
    trainer.data = dataclasses.replace(data, val=_subset(data.val, eval_size), test=_subset(data.test, eval_size),
                                       train=_subset(data.train, eval_size),
                                       train_plain=_subset(data.train_plain, eval_size))
    fds_seconds = []
    update_fds = trainer.update_fds

    def timed_update_fds(epoch: int) -> None:
        synchronize()
        t0 = time.perf_counter()
        update_fds(epoch)
        synchronize()
        fds_seconds.append(time.perf_counter() - t0)

    trainer.update_fds = timed_update_fds
    smoothed = []  # training batches that the FDS calibration changed: the smoothing ran
    if trainer.fds is not None:
        smooth = trainer.fds.smooth

        def counted_smooth(features, labels, epoch):
            if epoch >= trainer.fds.start_smooth:
                smoothed.append(epoch)
            return smooth(features, labels, epoch)

        trainer.fds.smooth = counted_smooth
    trainer.fit()
    results = trainer.test()
    # Measured after training, on the same subset: the rate of the forward pass that validation,
    # the FDS statistics and the test run, and of the training loader without the model.
    eval_rate = _eval_rate(trainer, trainer.data.val, synchronize)
    loader_rate = _loader_rate(few.loader, cfg.data.num_workers, iters)
    trainer.train_loader = few.loader
    marks = few.epochs[-1]
    epoch_samples = few.samples[len(few.samples) - (len(marks) - 1):]
    train_rate = _rate(marks, epoch_samples, min(WARMUP_ITERS, max(len(marks) - 2, 0)))
    fds = trainer.fds is not None
    record = {"status": "ok", "config": str(plan.config), "model": cfg.model.name, "image_size": cfg.data.image_size,
              "batch_size": batch, "precision": cfg.precision, "workers": cfg.data.num_workers, "device": str(device),
              "fds": fds, "rrt": cfg.method.rrt.enabled, "stage1": plan.stage1,
              "stage1_checkpoint": (trainer.rrt_stage1 or {}).get("checkpoint"),
              "sizes": sizes, "build_s": build_s, "iterations": len(few.samples),
              "train_samples_per_s": train_rate, "train_it_per_s": train_rate / batch if train_rate else None,
              "eval_samples_per_s": eval_rate, "loader_samples_per_s": loader_rate,
              "fds_pass_s": fds_seconds[-1] if fds and fds_seconds else None,
              "fds_pass_samples": min(eval_size, sizes["train"]) if fds else None,
              "fds_smoothed_batches": len(smoothed) if fds else None,
              "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if on_cuda else None,
              "test_mae": (results["metrics"]["all"] or {}).get("mae"),
              "loader_slower": bool(loader_rate and train_rate and loader_rate < LOADER_HEADROOM * train_rate)}
    if train_rate and eval_rate:
        # A few iterations can run on batches the workers had prefetched; a whole epoch cannot
        # go faster than its loader.
        rates = {"train": min(train_rate, loader_rate or train_rate), "eval": eval_rate}
        record["projection"] = project_row(sizes, rates, fds)
    record["seconds"] = time.perf_counter() - started
    return record


# --------------------------------------------------------------------------------------------
# 4. The table


def _fmt(value, spec: str = "{:.1f}") -> str:
    return "-" if value is None else spec.format(value)


def render(rows: dict, data: DataCheck, total: float | None, machine: str) -> list[str]:
    lines = [f"== preflight on {machine}", "", "| row | status | it/s | samples/s train / eval / loader | "
             "FDS pass s | peak GiB | projected | arithmetic |", "|---|---|---:|---|---:|---:|---:|---|"]
    for name, r in rows.items():
        if r["status"] != "ok":
            lines.append(f"| {name} | **{r['status'].upper()}**: {r.get('error', '')} | | | | | | |")
            continue
        flag = " **the loader sets the pace**" if r["loader_slower"] else ""
        p = r.get("projection") or {}
        lines.append(f"| {name} | ok | {_fmt(r['train_it_per_s'], '{:.2f}')} | {_fmt(r['train_samples_per_s'])} / "
                     f"{_fmt(r['eval_samples_per_s'])} / {_fmt(r['loader_samples_per_s'])}{flag} | "
                     f"{_fmt(r['fds_pass_s'], '{:.2f}')} | {_fmt(r['peak_gib'], '{:.2f}')} | "
                     f"{duration(p['seconds']) if p else '-'} | {p.get('formula', '-')} |")
    projected = [r["projection"]["seconds"] for r in rows.values() if r.get("projection")]
    lines += ["", f"table total, one seed: {' + '.join(f'{s:,.0f}' for s in projected) or 'nothing'} = "
              f"{sum(projected):,.0f} s = **{duration(sum(projected))}** over {len(projected)} of {len(rows)} rows "
              f"(preflight took {_fmt(total, '{:.0f}')} s)"]
    lines += [f"data warning: {w}" for w in data.warnings]
    return lines


def machine_description() -> str:
    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPUs)"
    return f"CPU only ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})"


def run_preflight(plans: list[RowPlan], scratch: Path, keep: bool = False, iters: int = 8,
                  eval_batches: int = 4) -> int:
    """Check the data, run each row of ``plans`` into ``scratch/<row>``, print the table, write
    ``<scratch>.json``; 0 when every row ran, 1 otherwise. ``scratch`` must not exist: it is
    created here and removed at the end unless ``keep``."""
    from ranksim.config import load_config
    from ranksim.errors import UserError

    if scratch.exists():
        raise UserError(f"{scratch} already exists; remove it or choose another folder with --preflight-dir")
    started = time.perf_counter()
    logger.info("== preflight 1/2: checking the data")
    data = check_data([load_config(p.config, p.overrides) for p in plans if not p.error])
    for line in data.warnings:
        logger.warning("data: %s", line)
    for line in data.problems:
        logger.error("data: %s", line)
    rows: dict[str, dict] = {}
    json_path = scratch.with_name(scratch.name + ".json")
    machine = machine_description()

    def write_report(complete: bool) -> dict:
        # Rewritten after every row, so that an interrupted preflight still leaves what it measured.
        report = {"machine": machine, "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "complete": complete, "iterations_per_epoch": iters, "eval_batches": eval_batches,
                  "seconds": time.perf_counter() - started, "data": vars(data), "rows": rows,
                  "table_seconds": sum(r["projection"]["seconds"] for r in rows.values() if r.get("projection"))}
        partial = json_path.with_name(json_path.name + ".tmp")
        partial.write_text(json.dumps(report, indent=1))
        os.replace(partial, json_path)
        return report

    scratch.mkdir(parents=True)
    try:
        if data.problems:
            rows = {p.name: {"status": "not run", "error": "the data check failed"} for p in plans}
        for i, plan in enumerate(plans if not data.problems else []):
            logger.info("== preflight 2/2: row %d of %d, %s", i + 1, len(plans), plan.name)
            if plan.error:
                rows[plan.name] = {"status": "failed", "error": plan.error}
                logger.error("row %s failed: %s", plan.name, plan.error)
                continue
            if plan.stage1 and rows.get(plan.stage1, {}).get("status") != "ok":
                rows[plan.name] = {"status": "not run", "error": f"its stage-1 row {plan.stage1} failed"}
                continue
            overrides = list(plan.overrides)
            if plan.stage1:
                overrides.append(f"method.rrt.stage1={scratch / plan.stage1}")
            try:
                rows[plan.name] = preflight_row(RowPlan(plan.name, plan.config, overrides, plan.stage1),
                                                scratch / plan.name, iters, eval_batches)
            except Exception as err:  # noqa: BLE001 - any failure of a row is reported, and the others run
                logger.debug("%s failed:\n%s", plan.name, traceback.format_exc())
                rows[plan.name] = {"status": "failed", "error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}
                logger.error("row %s failed: %s", plan.name, rows[plan.name]["error"])
            gc.collect()  # the row's trainer (a reference cycle through its timed FDS pass) and its loader workers
            r = rows[plan.name]
            if r["status"] == "ok":
                logger.info("   ok in %.0f s: %s it/s, projected %s", r["seconds"], _fmt(r["train_it_per_s"], "{:.2f}"),
                            duration(r["projection"]["seconds"]) if r.get("projection") else "-")
            write_report(complete=False)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    report = write_report(complete=True)
    print("\n".join(render(rows, data, report["seconds"], machine)), flush=True)
    for line in data.problems:
        print(f"data problem: {line}", flush=True)
    logger.info("== preflight report: %s%s", json_path, f"; its runs are in {scratch}" if keep else "")
    failed = [name for name, r in rows.items() if r["status"] != "ok"]
    if failed:
        logger.error("== %d row(s) did not pass the preflight: %s", len(failed), " ".join(failed))
    return 1 if failed or data.problems else 0
