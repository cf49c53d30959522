"""The training and evaluation loop (SPEC 8), used by ``train.py`` and ``evaluate.py``.

One code path for every dataset and method: the config says which loss, re-weighting, LDS, FDS,
RankSim and RRT stage apply. Functions return dicts of metrics; the entry points only parse,
build and call.

Order within an epoch, as in the authors' code: train (validating every
``schedule.val_every_iters`` iterations when set), then the FDS statistics pass, then the
epoch-end validation, then checkpoints. Every epoch re-seeds the global RNG, the sampler and
RankSim's de-duplication from ``(seed, epoch)``, so that a run resumed from ``last.pt`` sees the
same batches, augmentations and choices as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from ranksim.config import Config, config_from_dict, to_dict
from ranksim.data.build import DataBundle, build_data
from ranksim.errors import UserError
from ranksim.losses import get_loss
from ranksim.metrics import per_label_errors, shot_metrics, shot_metrics_sts_b
from ranksim.models import build_model
from ranksim.regularizer import batchwise_ranking_regularizer
from ranksim.runs import append_jsonl, load_checkpoint, load_state_strict, save_atomic

logger = logging.getLogger("ranksim.engine")


class TrainingDiverged(UserError):
    """The loss became NaN, infinite or larger than ``logging.max_loss``."""


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but CUDA is not available; use device=cpu or device=auto")
    return device


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(inputs, device: torch.device):
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(x, device) for x in inputs)
    return inputs.to(device, non_blocking=True)


def make_loader(cfg: Config, dataset, data: DataBundle, shuffle: bool, generator: torch.Generator | None = None,
                batch_size: int | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size or cfg.optim.batch_size,
                      sampler=RandomSampler(dataset, generator=generator) if shuffle else None,
                      num_workers=cfg.data.num_workers, collate_fn=data.collate, generator=generator,
                      pin_memory=torch.cuda.is_available(), drop_last=False)


def selection_metric(cfg: Config) -> str:
    if cfg.schedule.select_by != "auto":
        return cfg.schedule.select_by
    return "mse" if cfg.method.loss in ("mse", "focal_mse") else "mae"


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, target_scale: float = 1.0,
            progress: bool = False, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels over a loader, in label units, as float64 ``(N,)`` arrays."""
    model.eval()
    preds, labels = [], []
    for inputs, targets, _ in tqdm(loader, desc=desc, leave=False, disable=not progress):
        pred, _ = model(to_device(inputs, device))
        preds.append(pred.float().cpu().reshape(-1) * target_scale)
        labels.append(targets.reshape(-1))
    return torch.cat(preds).double().numpy(), torch.cat(labels).double().numpy()


def region_metrics(preds: np.ndarray, labels: np.ndarray, data: DataBundle, cfg: Config) -> dict:
    if data.binning == "sts_b":
        return shot_metrics_sts_b(preds, labels)
    return shot_metrics(preds, labels, data.train_labels)


def evaluate(model: nn.Module, loader: DataLoader, data: DataBundle, cfg: Config, device: torch.device,
             desc: str = "eval") -> tuple[dict, np.ndarray, np.ndarray]:
    preds, labels = predict(model, loader, device, data.target_scale, cfg.logging.progress, desc)
    return region_metrics(preds, labels, data, cfg), preds, labels


# ---------------------------------------------------------------------------------------------
# Training state


@dataclass
class TrainState:
    """What ``last.pt`` holds besides the model and optimizer; enough to resume exactly."""

    epoch: int = 0                 # the next epoch to run
    global_step: int = 0
    best_metric: float = math.inf
    best_epoch: int = -1
    validations: int = 0
    bad_validations: int = 0       # consecutive validations without improvement (patience)
    stopped_early: bool = False
    history: list = field(default_factory=list)


def build_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


def load_rrt_stage1(model: nn.Module, cfg: Config) -> None:
    """RRT stage 2: the stage-1 encoder (and FDS statistics), a fresh regressor, frozen encoder."""
    source = Path(cfg.method.rrt.stage1)
    checkpoint = load_checkpoint(source)
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith("head.linear.")}
    fresh = {k: v for k, v in model.state_dict().items() if k.startswith("head.linear.")}
    load_state_strict(model, {**state, **fresh}, source)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("head.linear.")
    logger.info("RRT: loaded the stage-1 encoder from %s; training only the regressor", source)


class Trainer:
    """Holds the model, data and optimizer of one run and runs its epochs."""

    def __init__(self, cfg: Config, run_dir: Path, device: torch.device, writer=None):
        self.cfg, self.run_dir, self.device, self.writer = cfg, run_dir, device, writer
        seed_everything(cfg.seed)
        self.data = build_data(cfg)
        self.model = build_model(cfg, self.data.binning, self.data.vocab_size, self.data.embeddings).to(device)
        if cfg.model.channels_last and device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.method.rrt.enabled:
            load_rrt_stage1(self.model, cfg)
        self.fds = getattr(getattr(self.model, "head", None), "fds", None)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg, trainable)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, cfg.schedule.milestones,
                                                              cfg.schedule.lr_gamma)
        m = cfg.method
        params = {"huber": {"beta": m.huber_beta},
                  "focal_l1": {"activate": m.focal_activate, "beta": m.focal_beta, "gamma": m.focal_gamma},
                  "focal_mse": {"activate": m.focal_activate, "beta": m.focal_beta, "gamma": m.focal_gamma}}
        self.loss_fn = get_loss(m.loss, **params.get(m.loss, {}))
        self.select_by = selection_metric(cfg)
        # In RRT stage 2 the encoder is frozen, so RankSim (a loss on its features) cannot change
        # anything: it was applied in stage 1, which is what "RRT + RankSim" means.
        self.use_ranksim = m.ranksim.enabled and not m.rrt.enabled
        if m.ranksim.enabled and m.rrt.enabled:
            logger.info("RRT stage 2: RankSim was applied in stage 1; the frozen encoder needs no regularizer")
        self.state = TrainState()
        self.sampler_generator = torch.Generator()
        self.ranksim_generator = torch.Generator(device=device)
        self.train_loader = make_loader(cfg, self.data.train, self.data, shuffle=True, generator=self.sampler_generator)
        self.val_loader = make_loader(cfg, self.data.val, self.data, shuffle=False)

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "state": vars(self.state).copy(),
                "config": to_dict(self.cfg)}

    def restore(self, checkpoint: dict, source: Path) -> None:
        load_state_strict(self.model, checkpoint["model"], source)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.state = TrainState(**checkpoint["state"])

    # -- one epoch --------------------------------------------------------------------------------

    def set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.method.rrt.enabled and not self.cfg.method.faithful:
            # A frozen encoder should give fixed features; the authors leave BatchNorm in train mode.
            self.model.eval()
            self.model.head.train()

    def train_epoch(self, epoch: int) -> dict:
        cfg, device = self.cfg, self.device
        seed = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        self.sampler_generator.manual_seed(seed)
        self.ranksim_generator.manual_seed(seed)
        self.set_train_mode()
        sums = {"loss": 0.0, "task_loss": 0.0, "ranksim_loss": 0.0}
        seen = 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False, disable=not cfg.logging.progress)
        for step, (inputs, targets, weights) in enumerate(bar):
            inputs, targets, weights = to_device(inputs, device), targets.to(device), weights.to(device)
            if cfg.model.channels_last and device.type == "cuda" and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            pred, features = self.model(inputs, targets, epoch)
            task_loss = self.loss_fn(pred, targets / self.data.target_scale, weights)
            loss = task_loss
            ranksim_loss = torch.zeros((), device=device)
            if self.use_ranksim:
                ranksim_loss = batchwise_ranking_regularizer(features, targets, cfg.method.ranksim.interpolation_lambda,
                                                             generator=self.ranksim_generator)
                loss = task_loss + cfg.method.ranksim.gamma * ranksim_loss
            value = loss.item()
            if not math.isfinite(value) or abs(value) > cfg.logging.max_loss:
                raise TrainingDiverged(
                    f"the loss is {value:.4g} at epoch {epoch}, step {step}; training stopped. "
                    f"checkpoints/last.pt keeps the last good epoch. Lower optim.lr or set optim.grad_clip")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            n = targets.shape[0]
            seen += n
            sums["loss"] += value * n
            sums["task_loss"] += task_loss.item() * n
            sums["ranksim_loss"] += ranksim_loss.item() * n
            self.state.global_step += 1
            if self.writer is not None and self.state.global_step % cfg.logging.log_every_iters == 0:
                self.writer.add_scalar("train/loss", value, self.state.global_step)
                self.writer.add_scalar("train/task_loss", task_loss.item(), self.state.global_step)
                if self.use_ranksim:
                    self.writer.add_scalar("train/ranksim_loss", ranksim_loss.item(), self.state.global_step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.state.global_step)
            bar.set_postfix(loss=f"{value:.3f}")
            if cfg.schedule.val_every_iters and self.state.global_step % cfg.schedule.val_every_iters == 0:
                self.validate(epoch, {k: v / seen for k, v in sums.items()})
                self.set_train_mode()
                if self.should_stop():
                    break
        return {k: v / max(seen, 1) for k, v in sums.items()}

    @torch.no_grad()
    def update_fds(self, epoch: int) -> None:
        """End-of-epoch FDS statistics over the whole training set (SPEC 4).

        Fixed mode: eval mode on un-augmented images. Faithful mode (quirk 3): train mode on the
        augmented training loader, as the authors do, which also updates BatchNorm's buffers.
        """
        if self.fds is None or epoch < self.cfg.method.fds.start_update:
            return
        faithful = self.cfg.method.faithful
        if faithful:
            self.set_train_mode()
            loader = self.train_loader
        else:
            self.model.eval()
            loader = make_loader(self.cfg, self.data.train_plain, self.data, shuffle=False)
        features, labels = [], []
        for inputs, targets, _ in tqdm(loader, desc="FDS statistics", leave=False, disable=not self.cfg.logging.progress):
            targets = targets.to(self.device)
            _, feats = self.model(to_device(inputs, self.device), targets, epoch)
            features.append(feats.float())
            labels.append(targets)
        self.fds.update_last_epoch_stats(epoch)
        self.fds.update_running_stats(torch.cat(features), torch.cat(labels), epoch)

    # -- validation and checkpoints ---------------------------------------------------------------

    def validate(self, epoch: int, train_metrics: dict) -> dict:
        cfg, st = self.cfg, self.state
        metrics, preds, labels = evaluate(self.model, self.val_loader, self.data, cfg, self.device, "val")
        st.validations += 1
        value = metrics["all"][self.select_by]
        improved = value < st.best_metric
        if improved:
            st.best_metric, st.best_epoch, st.bad_validations = value, epoch, 0
            save_atomic({"model": self.model.state_dict(), "config": to_dict(cfg), "epoch": epoch,
                         "step": st.global_step, "val": metrics}, self.run_dir / "checkpoints" / "best.pt")
        else:
            st.bad_validations += 1
            if cfg.schedule.plateau_lr_factor != 1.0:
                for group in self.optimizer.param_groups:
                    group["lr"] *= cfg.schedule.plateau_lr_factor
        record = {"epoch": epoch, "step": st.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                  "train": train_metrics, "val": metrics, "best": improved}
        append_jsonl(self.run_dir / "metrics.jsonl", record)
        logger.info("epoch %d step %d: train loss %.4f | val %s all %.4f (many %s, medium %s, few %s)%s",
                    epoch, st.global_step, train_metrics["loss"], self.select_by, value,
                    *(_fmt(metrics[r][self.select_by] if metrics[r] else None) for r in ("many", "medium", "few")),
                    " *best*" if improved else "")
        if self.writer is not None:
            for region, values in metrics.items():
                for name, v in (values or {}).items():
                    if v is not None and name != "count":
                        self.writer.add_scalar(f"val_{region}/{name}", v, st.global_step)
            for name, v in train_metrics.items():
                self.writer.add_scalar(f"train_epoch/{name}", v, epoch)
            self.writer.add_figure("val/per_label_error", _per_label_figure(preds, labels, self.data), st.global_step)
        return metrics

    def should_stop(self) -> bool:
        s, st = self.cfg.schedule, self.state
        if s.patience and st.bad_validations >= s.patience:
            logger.info("stopping: %d validations without improvement", st.bad_validations)
            st.stopped_early = True
        if s.max_validations and st.validations >= s.max_validations:
            logger.info("stopping: reached %d validations", st.validations)
            st.stopped_early = True
        return st.stopped_early

    def fit(self) -> None:
        cfg, st = self.cfg, self.state
        if self.writer is not None and st.epoch == 0:
            self.writer.add_figure("data/train_label_histogram", _histogram_figure(self.data), 0)
        while st.epoch < cfg.schedule.epochs and not st.stopped_early:
            epoch = st.epoch
            start = time.time()
            train_metrics = self.train_epoch(epoch)
            self.update_fds(epoch)
            if not cfg.schedule.val_every_iters and not st.stopped_early:
                self.validate(epoch, train_metrics)
                self.should_stop()
            self.scheduler.step()
            st.epoch = epoch + 1
            save_atomic(self.checkpoint(), self.run_dir / "checkpoints" / "last.pt")
            logger.debug("epoch %d took %.1fs", epoch, time.time() - start)

    def test(self) -> dict:
        """Test metrics of ``best.pt``, written to ``results.json`` in the layout of ``shot_metrics``."""
        best_path = self.run_dir / "checkpoints" / "best.pt"
        best = load_checkpoint(best_path)
        load_state_strict(self.model, best["model"], best_path)
        test_loader = make_loader(self.cfg, self.data.test, self.data, shuffle=False)
        metrics, _, _ = evaluate(self.model, test_loader, self.data, self.cfg, self.device, "test")
        results = {"name": self.cfg.name, "split": "test", "best_epoch": best["epoch"],
                   "select_by": self.select_by, "metrics": metrics}
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=2))
        return results


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _histogram_figure(data: DataBundle):
    from ranksim.plots import label_histogram_figure
    return label_histogram_figure(data.train_labels, data.binning)


def _per_label_figure(preds, labels, data: DataBundle):
    from ranksim.plots import per_label_error_figure
    return per_label_error_figure({"val": per_label_errors(preds, labels, binning=data.binning)},
                                  data.train_labels, data.binning)


def run_training(cfg: Config, run_dir: Path, device: torch.device, resume: bool = False) -> dict:
    """Train (or resume) the run in ``run_dir``, test its best checkpoint, return the results."""
    writer = None
    if cfg.logging.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir))
    try:
        trainer = Trainer(cfg, run_dir, device, writer)
        if resume:
            last = run_dir / "checkpoints" / "last.pt"
            trainer.restore(load_checkpoint(last), last)
            logger.info("resuming %s at epoch %d", run_dir, trainer.state.epoch)
        trainer.fit()
        results = trainer.test()
        if writer is not None:
            _log_hparams(writer, cfg, results)
        return results
    finally:
        if writer is not None:
            writer.close()


def _log_hparams(writer, cfg: Config, results: dict) -> None:
    m = cfg.method
    hparams = {"reweight": m.reweight, "lds": m.lds.enabled, "fds": m.fds.enabled, "ranksim": m.ranksim.enabled,
               "rrt": m.rrt.enabled, "loss": m.loss, "lr": cfg.optim.lr, "batch_size": cfg.optim.batch_size,
               "ranksim_gamma": m.ranksim.gamma if m.ranksim.enabled else 0.0}
    final = {f"hparam/{region}_{name}": v for region, values in results["metrics"].items() if values
             for name, v in values.items() if name in ("mae", "mse", "gm", "pearson") and v is not None}
    writer.add_hparams(hparams, final, run_name=".")


def config_of_checkpoint(checkpoint: dict, source) -> Config:
    try:
        return config_from_dict(checkpoint["config"], f"config stored in {source}")
    except KeyError:
        raise UserError(f"{source} holds no config; it was not written by this repository's train.py") from None
