"""Training-step throughput: our pipeline against a reproduction of the authors' recipe.

    python benchmarks/bench_train.py                        # CPU: narrow ResNet, 32 px, small batches
    python benchmarks/bench_train.py --device cuda --output bench_train_gpu.md   # ResNet-50, 224 px, batch 64 and 256
    python benchmarks/bench_train.py --device cuda --sides ours ours_compiled --batch-sizes 256  # does compile help?

Every side trains the same architecture with FDS (calibrating from filled statistics) and RankSim
(gamma 100, lambda 2) on the same synthetic on-device batches (random images, AgeDB-like integer
ages), with L1 loss and Adam, for a fixed number of steps after a warm-up. The sides (``SIDES``,
chosen with ``--sides``):

- **ours**: ``ranksim``'s model with its FDS head, the vectorised RankSim, ``precision``
  autocast (bf16 on CUDA by default, fp32 on CPU) and channels_last on CUDA;
- **ours_compiled**: the same, with the model wrapped by ``torch.compile`` (``model.compile``);
  its warm-up includes the compilation, whose time is reported;
- **authors** (the baseline every ratio is taken against): fp32, FDS calibration by a loop over
  the labels of the batch and RankSim by a loop over labels (de-duplication) and rows (one
  blackbox ranking per row), as in benchmarks/bench_ops.py.

``--sides ours ours_conr`` compares our step with ConR off and on (SPEC 9.2: one extra forward pass
of the 2B augmented views, without FDS smoothing, plus the ConR term with beta 4).

A new side is a class with ``__init__(args, device)`` and ``step(images, targets)``, added to
``SIDES``. Data loading is excluded on purpose (benchmarks/bench_loading.py and bench_epoch.py
measure it), so the numbers are what the model step allows. Prints images/s, peak GPU memory and
the ratio to the baseline, writes the table to ``--output`` and the raw figures to ``--json`` (both
rewritten after every batch size, so a run stopped by a time limit keeps what it measured). The
sides alternate step by step within each batch size, so that load from elsewhere hits all alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ops import agedb_like_ages, loop_ranksim, loop_smooth  # noqa: E402

from ranksim.methods.fds import FDS  # noqa: E402
from ranksim.models.resnet import resnet50_regressor, small_resnet_regressor  # noqa: E402
from ranksim.methods.conr import conr_loss  # noqa: E402
from ranksim.methods.regularizer import batchwise_ranking_regularizer  # noqa: E402

GAMMA, LAMBDA = 100.0, 2.0
BASELINE = "authors"


def build(model_name: str, fds: FDS | None, width: int):
    return resnet50_regressor(fds) if model_name == "resnet50" else small_resnet_regressor(width, fds)


def filled_fds(dim: int, device: torch.device, faithful: bool = False) -> FDS:
    """An FDS whose statistics are filled, so that calibration really runs (epoch 1 onwards)."""
    fds = FDS(dim, bucket_num=100, bucket_start=3, faithful=faithful).to(device)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4000, dim, generator=g).abs()
    ages = agedb_like_ages(4000, np.random.default_rng(0)).float()
    for epoch in range(2):
        fds.update_last_epoch_stats(epoch)
        fds.update_running_stats(feats.to(device) * (1 + 0.1 * epoch), ages.to(device), epoch)
    fds.update_last_epoch_stats(2)
    return fds


class Ours:
    """ranksim's training step: FDS head, vectorised RankSim, autocast, channels_last on CUDA."""

    compile = False

    def __init__(self, args, device):
        self.model = build(args.model, filled_fds(args.dim, device), args.width).to(device)
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.forward = torch.compile(self.model) if self.compile else self.model
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(0)

    def step(self, images, targets):
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            pred, features = self.forward(images, targets, epoch=3)
        loss = F.l1_loss(pred.float(), targets) + GAMMA * batchwise_ranking_regularizer(
            features.float(), targets, LAMBDA, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


class OursCompiled(Ours):
    """``Ours`` with ``torch.compile`` on the model, as ``model.compile=true`` does in training."""

    compile = True


class AuthorsRecipe:
    """fp32, the authors' per-label FDS calibration loop and per-row RankSim loop."""

    def __init__(self, args, device):
        self.model = build(args.model, None, args.width).to(device)
        self.fds = filled_fds(args.dim, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)

    def step(self, images, targets):
        features = self.model.encoder(images)
        smoothed = loop_smooth(self.fds, features, targets.reshape(-1))
        pred = self.model.head.linear(smoothed)
        loss = F.l1_loss(pred, targets) + GAMMA * loop_ranksim(smoothed, targets, LAMBDA)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class OursConR(Ours):
    """Our step with ConR: the same step plus the extra pass of 2B views and beta * ConR."""

    def step(self, images, targets):
        views = torch.cat([images.flip(3), images.flip(2)])  # stand-ins for two random augmentations
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            pred, features = self.forward(images, targets, epoch=3)
            view_pred, view_features = self.forward(views)
        loss = (F.l1_loss(pred.float(), targets)
                + GAMMA * batchwise_ranking_regularizer(features.float(), targets, LAMBDA, generator=self.generator)
                + 4.0 * conr_loss(view_features.float(), targets.repeat(2, 1), view_pred.detach().float()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


SIDES = {"ours": Ours, "ours_compiled": OursCompiled, BASELINE: AuthorsRecipe, "ours_conr": OursConR}
DESCRIPTIONS = {
    "ours": "ours ({precision}{cl})",
    "ours_compiled": "ours + torch.compile ({precision}{cl})",
    BASELINE: "authors' recipe (fp32, per-label FDS, per-row RankSim)",
    "ours_conr": "ours + ConR, extra pass of 2B views ({precision}{cl})",
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, device: torch.device, batch: int) -> dict:
    """``{side: {images_per_s, peak_gib, warmup_s}}`` for one batch size."""
    rng = np.random.default_rng(batch)
    images = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
    targets = agedb_like_ages(batch, rng).float().reshape(-1, 1).to(device)
    result = {}
    sides = {name: SIDES[name](args, device) for name in args.sides}
    warmup = {}
    for name, side in sides.items():
        sync(device)
        start = time.perf_counter()
        for _ in range(args.warmup):
            side.step(images, targets)
        sync(device)
        warmup[name] = time.perf_counter() - start
    elapsed = {name: 0.0 for name in sides}
    for _ in range(args.steps):
        for name, side in sides.items():
            sync(device)
            start = time.perf_counter()
            side.step(images, targets)
            sync(device)
            elapsed[name] += time.perf_counter() - start
    for name, side in sides.items():
        memory = None
        if device.type == "cuda":  # peak of one more step of this side alone (the others' weights stay resident)
            torch.cuda.reset_peak_memory_stats(device)
            side.step(images, targets)
            sync(device)
            memory = torch.cuda.max_memory_allocated(device) / 2**30
        result[name] = {"images_per_s": batch * args.steps / elapsed[name], "peak_gib": memory,
                        "warmup_s": warmup[name]}
    del sides
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def table_lines(rows: list[dict]) -> list[str]:
    """Markdown rows, one per (batch, side); the ratio is to the baseline of the same batch size."""
    lines = ["| batch | side | img/s | vs authors | peak GiB | warm-up s |", "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        base = next((b for b in rows if b["batch"] == r["batch"] and b["side"] == BASELINE), None)
        ratio = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        gib = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['batch']} | {r['side']} | {r['images_per_s']:.1f} | {ratio} | {gib} | {r['warmup_s']:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument("--model", choices=("resnet50", "resnet_small"), help="default: resnet50 on CUDA, resnet_small on CPU")
    parser.add_argument("--image-size", type=int, help="default: 224 on CUDA, 32 on CPU")
    parser.add_argument("--width", type=int, default=16, help="resnet_small first-stage width")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 64 256 on CUDA, 64 128 on CPU")
    parser.add_argument("--steps", type=int, help="timed steps per side (default: 30 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    parser.add_argument("--sides", nargs="+", choices=tuple(SIDES), default=["ours", BASELINE],
                        help="what to compare (default: %(default)s); ratios are to 'authors' when it runs")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="our side's autocast (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--output", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--json", type=Path, help="also write the raw figures (JSON) to this file")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    args.model = args.model or ("resnet50" if cuda else "resnet_small")
    args.image_size = args.image_size or (224 if cuda else 32)
    args.batch_sizes = args.batch_sizes or ([64, 256] if cuda else [64, 128])
    args.steps = args.steps or (30 if cuda else 5)
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    args.dim = 2048 if args.model == "resnet50" else 4 * args.width
    if cuda:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    cl = ", channels_last" if cuda else ""
    described = "; ".join(f"{s}: {DESCRIPTIONS[s].format(precision=args.precision, cl=cl)}" for s in args.sides)
    header = [f"# Training-step throughput on {name}",
              f"model {args.model} at {args.image_size} px, FDS + RankSim, {args.warmup} warm-up and "
              f"{args.steps} timed steps per side; {described}", ""]
    record = {"device": name, "cuda": cuda, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if cuda else None, "model": args.model,
              "image_size": args.image_size, "steps": args.steps, "warmup": args.warmup,
              "precision": args.precision, "channels_last": cuda, "sides": args.sides,
              "batch_sizes": args.batch_sizes, "rows": [], "complete": False}

    def write() -> None:
        if args.output:
            args.output.write_text("\n".join(header + table_lines(record["rows"])) + "\n")
        if args.json:
            args.json.write_text(json.dumps(record, indent=1))

    print("\n".join(header), flush=True)
    write()
    for batch in args.batch_sizes:
        result = measure(args, device, batch)
        record["rows"] += [{"batch": batch, "side": side, **values} for side, values in result.items()]
        write()
        print("\n".join(table_lines([r for r in record["rows"] if r["batch"] == batch])), flush=True)
    record["complete"] = True
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
