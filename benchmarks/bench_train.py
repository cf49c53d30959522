"""Training-step throughput: our pipeline against a reproduction of the authors' recipe.

    python benchmarks/bench_train.py                        # CPU: narrow ResNet, 32 px, small batches
    python benchmarks/bench_train.py --device cuda --output bench_train_gpu.md   # ResNet-50, 224 px, batch 64 and 256

Both sides train the same architecture with FDS (calibrating from filled statistics) and RankSim
(gamma 100, lambda 2) on the same synthetic on-device batches (random images, AgeDB-like integer
ages), with L1 loss and Adam, for a fixed number of steps after a warm-up:

- **ours**: ``ranksim``'s model with its FDS head, the vectorised RankSim, ``precision``
  autocast (bf16 on CUDA by default, fp32 on CPU) and channels_last on CUDA;
- **authors' recipe**: fp32, FDS calibration by a loop over the labels of the batch and RankSim
  by a loop over labels (de-duplication) and rows (one blackbox ranking per row), as in
  benchmarks/bench_ops.py.

``--conr`` instead compares our step with ConR off and on (SPEC 9.2: one extra forward pass of
the 2B augmented views, without FDS smoothing, plus the ConR term with beta 4), the rest as above.

Data loading is excluded on purpose (benchmarks/bench_loading.py measures it), so the numbers are
what the model step allows. Prints images/s, peak GPU memory and the ratio, and writes the table
to ``--output`` when given. The two sides alternate step by step within each configuration, so
that load from elsewhere hits both alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ops import agedb_like_ages, loop_ranksim, loop_smooth  # noqa: E402

from ranksim.fds import FDS  # noqa: E402
from ranksim.models.resnet import resnet50_regressor, small_resnet_regressor  # noqa: E402
from ranksim.conr import conr_loss  # noqa: E402
from ranksim.regularizer import batchwise_ranking_regularizer  # noqa: E402

GAMMA, LAMBDA = 100.0, 2.0


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
    def __init__(self, args, device):
        self.model = build(args.model, filled_fds(args.dim, device), args.width).to(device)
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(0)

    def step(self, images, targets):
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            pred, features = self.model(images, targets, epoch=3)
        loss = F.l1_loss(pred.float(), targets) + GAMMA * batchwise_ranking_regularizer(
            features.float(), targets, LAMBDA, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


class AuthorsRecipe:
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
            pred, features = self.model(images, targets, epoch=3)
            view_pred, view_features = self.model(views)
        loss = (F.l1_loss(pred.float(), targets)
                + GAMMA * batchwise_ranking_regularizer(features.float(), targets, LAMBDA, generator=self.generator)
                + 4.0 * conr_loss(view_features.float(), targets.repeat(2, 1), view_pred.detach().float()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, device: torch.device, batch: int, sides: dict | None = None) -> dict:
    rng = np.random.default_rng(batch)
    images = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
    targets = agedb_like_ages(batch, rng).float().reshape(-1, 1).to(device)
    result = {}
    sides = sides or {"ours": Ours(args, device), "authors": AuthorsRecipe(args, device)}
    for side in sides.values():
        for _ in range(args.warmup):
            side.step(images, targets)
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
        if device.type == "cuda":  # peak of one more step of this side alone
            torch.cuda.reset_peak_memory_stats(device)
            side.step(images, targets)
            sync(device)
            memory = torch.cuda.max_memory_allocated(device) / 2**30
        result[name] = {"images_per_s": batch * args.steps / elapsed[name], "peak_gib": memory}
    del sides
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument("--model", choices=("resnet50", "resnet_small"), help="default: resnet50 on CUDA, resnet_small on CPU")
    parser.add_argument("--image-size", type=int, help="default: 224 on CUDA, 32 on CPU")
    parser.add_argument("--width", type=int, default=16, help="resnet_small first-stage width")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 64 256 on CUDA, 64 128 on CPU")
    parser.add_argument("--steps", type=int, help="timed steps per side (default: 30 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="our side's autocast (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--output", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--conr", action="store_true", help="compare our step with ConR off and on instead")
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
    if args.conr:
        return conr_throughput(args, device, name)
    lines = [f"# Training-step throughput on {name}",
             f"model {args.model} at {args.image_size} px, FDS + RankSim, {args.steps} timed steps per side; "
             f"ours: {args.precision}{', channels_last' if cuda else ''}; authors' recipe: fp32, per-label FDS, per-row RankSim",
             "", "| batch | ours img/s | authors img/s | ratio | ours peak GiB | authors peak GiB |",
             "|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for batch in args.batch_sizes:
        r = measure(args, device, batch)
        gib = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        line = (f"| {batch} | {r['ours']['images_per_s']:.1f} | {r['authors']['images_per_s']:.1f} | "
                f"{r['ours']['images_per_s'] / r['authors']['images_per_s']:.2f}x | "
                f"{gib(r['ours']['peak_gib'])} | {gib(r['authors']['peak_gib'])} |")
        lines.append(line)
        print(line, flush=True)
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0


def conr_throughput(args, device: torch.device, name: str) -> int:
    """Our step (FDS + RankSim) with ConR off and on: images/s of the ordinary batch."""
    lines = [f"# Training-step throughput with ConR on {name}",
             f"model {args.model} at {args.image_size} px, FDS + RankSim, {args.steps} timed steps per side, "
             f"{args.precision}; ConR on adds the forward pass of 2B views and the ConR term",
             "", "| batch | ConR off img/s | ConR on img/s | on/off |", "|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for batch in args.batch_sizes:
        r = measure(args, device, batch, {"off": Ours(args, device), "on": OursConR(args, device)})
        off, on = r["off"]["images_per_s"], r["on"]["images_per_s"]
        lines.append(f"| {batch} | {off:.1f} | {on:.1f} | {on / off:.2f}x |")
        print(lines[-1], flush=True)
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
