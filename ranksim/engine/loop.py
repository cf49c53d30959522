"""The training loop (SPEC 8): :class:`Trainer` runs the epochs of one run.

One code path for every dataset and method: the config says which loss, re-weighting, LDS, FDS,
RankSim and RRT stage apply. What the loop builds (loaders, loss, optimiser, schedulers) is in
:mod:`ranksim.engine.build`, the state it resumes from in :mod:`ranksim.engine.checkpoint`,
prediction and metrics in :mod:`ranksim.engine.inference`, and one whole run (folder, TensorBoard,
fit, test) in :mod:`ranksim.engine.launch`.

Order within an epoch, as in the authors' code: train (validating every
``schedule.val_every_iters`` iterations when set), then the FDS statistics pass, then the
epoch-end validation, then checkpoints. Every epoch re-seeds the global RNG, the sampler and
RankSim's de-duplication from ``(seed, epoch)``, and each training sample's augmentation is drawn
from ``(seed, epoch, sample index)`` (:mod:`ranksim.data.seeding`, which also reaches persistent
loader workers), so that a run resumed from ``last.pt`` sees the same batches, augmentations and
choices as an uninterrupted one.

The milestone LR decay is stepped by :meth:`Trainer.fit` at the end of each epoch, the optional
plateau decay after each validation by :meth:`Trainer.validation_step`. ``validate()`` only
measures and records.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ranksim.config import Config, to_dict
from ranksim.data.build import DataBundle, build_data
from ranksim.data.seeding import KeyedSampler, SeededItems, ShuffledShard
from ranksim.distributed import (all_reduce_sum, barrier, broadcast_buffers, get_rank, get_world_size,
                                 is_main_process)
from ranksim.engine.build import (build_loss, build_optimizer, build_schedulers, epoch_seed, make_loader,
                                  seed_everything, sharded_loader)
from ranksim.engine.checkpoint import TrainState, load_rrt_stage1
from ranksim.engine.inference import autocast, evaluate, predict, region_metrics, selection_metric, to_device
from ranksim.engine.runs import append_jsonl, load_checkpoint, load_state_strict, save_atomic
from ranksim.errors import UserError
from ranksim.evaluation.diagnostics import FeatureDiagnostics, diagnostics_line
from ranksim.evaluation.metrics import per_label_errors
from ranksim.methods.conr import gathered_conr_loss
from ranksim.methods.regularizer import batchwise_ranking_regularizer, gathered_ranking_regularizer
from ranksim.models import build_model

logger = logging.getLogger("ranksim.engine")


# The loss terms averaged per epoch (metrics.jsonl "train") and logged to TensorBoard.
LOSS_TERMS = ("loss", "task_loss", "ranksim_loss", "conr_loss")


class TrainingDiverged(UserError):
    """The loss became NaN, infinite or larger than ``logging.max_loss``."""


def worst_of_window(history: list, patience: int) -> bool:
    """The authors' STS-B patience check (SPEC 8): the latest value is the worst of the last
    ``patience + 1``, once there are more than ``patience + 1`` values.

    With ``patience = 30``: ``len(h) > 31 and max(h[-31:]) <= h[-1]``. Unlike "``patience``
    validations without a new best", a slow drift upward with an old best far behind does not
    stop it, and a single bad value after a long plateau can.
    """
    window = patience + 1
    return len(history) > window and max(history[-window:]) <= history[-1]


class Trainer:
    """Holds the model, data and optimizer of one run and runs its epochs.

    ``self.module`` is the plain model (checkpoints, FDS); ``self.model`` is what the forward pass
    calls: the same model, or it wrapped by ``torch.compile`` and/or DistributedDataParallel.
    Only the main process writes files and TensorBoard.
    """

    def __init__(self, cfg: Config, run_dir: Path | None, device: torch.device, writer=None,
                 trust_checkpoint: bool = False):
        self.cfg, self.run_dir, self.device, self.writer = cfg, run_dir, device, writer
        self.main = is_main_process()
        seed_everything(cfg.seed)
        self.data = build_data(cfg)
        self.module = build_model(cfg, self.data.binning, self.data.vocab_size, self.data.embeddings).to(device)
        if cfg.model.channels_last and device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
        self.rrt_stage1 = load_rrt_stage1(self.module, cfg, trust_checkpoint) if cfg.method.rrt.enabled else None
        self.fds = self.module.fds
        self.model = torch.compile(self.module) if cfg.model.compile else self.module
        if get_world_size() > 1:
            self.model = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        m = cfg.method
        # -- Balanced MSE (SPEC 9.1): the loss module's noise scale gets its own optimizer group --
        self.loss_fn = build_loss(m, self.data.train_labels, self.data.binning, self.data.target_scale)
        self.bmse = self.loss_fn.to(device) if isinstance(self.loss_fn, nn.Module) else None
        groups = [{"params": trainable}]
        if self.bmse is not None:
            self.bmse.noise_sigma.requires_grad_(m.bmse.sigma_lr > 0)
            if m.bmse.sigma_lr > 0:
                groups.append({"params": [self.bmse.noise_sigma], "lr": m.bmse.sigma_lr, "weight_decay": 0.0,
                               "fixed_lr": True})
        # -- ConR (SPEC 9.2): like RankSim, a feature loss that RRT stage 2's frozen encoder cannot use --
        self.use_conr = m.conr.enabled and not m.rrt.enabled
        self.optimizer = build_optimizer(cfg, groups)
        self.scheduler, self.plateau = build_schedulers(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.select_by = selection_metric(cfg)
        # In RRT stage 2 the encoder is frozen, so RankSim (a loss on its features) cannot change
        # anything: it was applied in stage 1, which is what "RRT + RankSim" means.
        self.use_ranksim = m.ranksim.enabled and not m.rrt.enabled
        if m.ranksim.enabled and m.rrt.enabled:
            logger.info("RRT stage 2: RankSim was applied in stage 1; the frozen encoder needs no regularizer")
        self.state = TrainState()
        self.diagnostics: dict[str, FeatureDiagnostics] = {}  # per split, made at its first evaluation
        self.ranksim_generator = torch.Generator(device=device)
        # The same sampler with or without DDP: a permutation per epoch from the key of (seed,
        # epoch), split across processes; with one process it is a plain seeded shuffle. Each
        # sample's augmentation is seeded from (seed, epoch, index), whichever worker loads it.
        self.train_sampler = KeyedSampler(ShuffledShard(len(self.data.train), cfg.seed, get_rank(), get_world_size(),
                                                        stream=0, pad=True), cfg.seed, stream=0)
        train_set = self.data.train_views if self.use_conr else self.data.train
        self.train_loader = make_loader(cfg, SeededItems(train_set), self.data, sampler=self.train_sampler,
                                        persistent=True)

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> dict:
        checkpoint = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                      "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                      "plateau": self.plateau.state_dict() if self.plateau is not None else None,
                      "state": vars(self.state).copy(), "config": to_dict(self.cfg)}
        if self.bmse is not None:  # noise scale and label-density tensors (plain tensors)
            checkpoint["loss"] = self.bmse.state_dict()
        return checkpoint

    def restore(self, checkpoint: dict, source: Path) -> None:
        load_state_strict(self.module, checkpoint["model"], source)
        if self.bmse is not None:
            if "loss" not in checkpoint:
                raise UserError(f"{source} holds no Balanced MSE state (noise scale); it was not written with method.loss=bmse")
            load_state_strict(self.bmse, checkpoint["loss"], source)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        if self.plateau is not None and checkpoint.get("plateau"):
            self.plateau.load_state_dict(checkpoint["plateau"])
        self.state = TrainState(**checkpoint["state"])

    def save(self, obj: dict, name: str) -> None:
        if self.main:
            resumable = (self.run_dir / "checkpoints" / "last.pt").is_file()
            save_atomic(obj, self.run_dir / "checkpoints" / name,
                        then=f"make room, then resume with 'python train.py --resume {self.run_dir}'" if resumable
                        else "make room and run the same command again")

    def checkpoints_kept(self, epoch: int) -> str:
        """What the run folder holds to go back to while ``epoch`` is being trained."""
        folder = self.run_dir / "checkpoints" if self.run_dir is not None else None
        if folder is not None and (folder / "last.pt").is_file():
            return f"checkpoints/last.pt keeps the run as it was after epoch {epoch - 1}, the last good one"
        if folder is not None and (folder / "best.pt").is_file():
            return ("no checkpoints/last.pt was written yet (the first epoch did not end); "
                    "checkpoints/best.pt keeps the best validation so far")
        return "no checkpoint was written: the first epoch did not end"

    # -- one epoch --------------------------------------------------------------------------------

    def set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.method.rrt.enabled and not self.cfg.method.faithful:
            # A frozen encoder should give fixed features; the authors leave BatchNorm in train mode.
            self.model.eval()
            self.module.head.train()

    def ranksim_loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """RankSim on this process's batch, or on the gathered global batch (``ranksim.gather``)."""
        r = self.cfg.method.ranksim
        regularizer = gathered_ranking_regularizer if r.gather else batchwise_ranking_regularizer
        return regularizer(features.float(), targets, r.interpolation_lambda, generator=self.ranksim_generator,
                           center_features=r.center_features)

    def train_epoch(self, epoch: int) -> dict:
        cfg, device = self.cfg, self.device
        seed = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(seed + get_rank())  # augmentation and dropout differ across processes
        np.random.seed((seed + get_rank()) % 2**32)
        random.seed(seed + get_rank())
        self.train_sampler.set_epoch(epoch)
        self.ranksim_generator.manual_seed(seed)  # the same on every process: gathered RankSim agrees
        self.set_train_mode()
        sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64)  # LOSS_TERMS, times samples
        task_scale = get_world_size() if getattr(self.loss_fn, "gathers_batch", False) else 1
        seen = 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False,
                   disable=not (cfg.logging.progress and self.main))
        for step, (inputs, targets, weights) in enumerate(bar):
            inputs, targets, weights = to_device(inputs, device), targets.to(device), weights.to(device)
            if self.use_conr:
                inputs, views = inputs
            if cfg.model.channels_last and device.type == "cuda" and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast(cfg, device):
                pred, features = self.model(inputs, targets, epoch)
            task_loss = self.loss_fn(pred.float(), targets / self.data.target_scale, weights)
            loss = task_loss
            ranksim_loss = torch.zeros((), device=device)
            # A gathered term (BMC, RankSim with gather, ConR) is the global batch's loss with
            # gradients only through local predictions or features; DDP averages gradients over
            # processes, so each is scaled back up by the number of processes.
            backward_loss = task_scale * task_loss
            if self.use_ranksim:
                ranksim_loss = self.ranksim_loss(features, targets)
                loss = task_loss + cfg.method.ranksim.gamma * ranksim_loss
                world = get_world_size() if cfg.method.ranksim.gather else 1
                backward_loss = backward_loss + cfg.method.ranksim.gamma * world * ranksim_loss
            conr_term = torch.zeros((), device=device)
            if self.use_conr:  # SPEC 9.2: its own forward pass of the 2B extra views
                conr_term = self.conr_loss(views, targets, weights, epoch)
                loss = loss + cfg.method.conr.weight * conr_term
                backward_loss = backward_loss + cfg.method.conr.weight * get_world_size() * conr_term
            values = torch.stack([loss.detach(), task_loss.detach(), ranksim_loss.detach(),
                                  conr_term.detach()]).double().cpu()
            value = float(values[0])
            if not math.isfinite(value) or abs(value) > cfg.logging.max_loss:
                raise TrainingDiverged(
                    f"the loss is {value:.4g} at epoch {epoch}, step {step}; training stopped; "
                    f"{self.checkpoints_kept(epoch)}. Lower optim.lr or set optim.grad_clip")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(backward_loss).backward()
            if self.bmse is not None and get_world_size() > 1 and self.bmse.noise_sigma.grad is not None:
                # sigma lives outside the DDP model, so DDP does not average its gradient; under
                # gathered BMC every process holds task_scale times the whole batch's.
                all_reduce_sum(self.bmse.noise_sigma.grad).div_(get_world_size() * task_scale)
            if cfg.optim.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = targets.shape[0]
            seen += n
            sums += values * n
            self.state.global_step += 1
            if self.writer is not None and self.state.global_step % cfg.logging.log_every_iters == 0:
                for name, v in zip(LOSS_TERMS, values.tolist()):
                    if self.term_in_use(name):
                        self.writer.add_scalar(f"train/{name}", v, self.state.global_step)
                if self.bmse is not None:
                    self.writer.add_scalar("train/noise_sigma", self.bmse.noise_sigma.item(), self.state.global_step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.state.global_step)
            bar.set_postfix(loss=f"{value:.3f}")
            if cfg.schedule.val_every_iters and self.state.global_step % cfg.schedule.val_every_iters == 0:
                stop = self.validation_step(epoch, self.mean_losses(sums, seen))
                self.set_train_mode()
                if stop:
                    break
        return self.mean_losses(sums, seen)

    def term_in_use(self, name: str) -> bool:
        """Whether the loss term ``name`` of LOSS_TERMS is part of this run's loss (TensorBoard
        shows only those: a flat zero curve of a term that is off is noise)."""
        return (name != "ranksim_loss" or self.use_ranksim) and (name != "conr_loss" or self.use_conr)

    @staticmethod
    def mean_losses(sums: torch.Tensor, seen: int) -> dict:
        """Sample-weighted mean losses of the epoch over all processes."""
        totals = all_reduce_sum(torch.cat([sums, torch.tensor([float(seen)], dtype=torch.float64)]))
        n = len(LOSS_TERMS)
        means = (totals[:n] / totals[n].clamp(min=1)).tolist()
        return dict(zip(LOSS_TERMS, means))

    def conr_loss(self, views: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, epoch: int) -> torch.Tensor:
        """ConR on the two extra views ``(B, 2, C, H, W)`` (SPEC 9.2): one forward pass of the 2B
        images without FDS smoothing (no targets given), detached predictions in label units."""
        c, batch = self.cfg.method.conr, views.shape[0]
        views = views.transpose(0, 1).reshape(2 * batch, *views.shape[2:])  # view 1 of the batch, then view 2
        if self.cfg.model.channels_last and self.device.type == "cuda":
            views = views.contiguous(memory_format=torch.channels_last)
        with autocast(self.cfg, self.device):
            view_pred, view_features = self.model(views)
        return gathered_conr_loss(view_features.float(), targets.repeat(2, 1),
                                  view_pred.detach().float() * self.data.target_scale, weights.repeat(2, 1),
                                  threshold=c.threshold, temperature=c.temperature, push=c.push,
                                  faithful=self.cfg.method.faithful)

    @torch.no_grad()
    def update_fds(self, epoch: int) -> None:
        """End-of-epoch FDS statistics over the whole training set (SPEC 4).

        Fixed mode: eval mode on un-augmented images, in file order. Faithful mode (quirk 3): train
        mode on augmented images, as the authors do, which also updates BatchNorm's buffers; the
        authors iterate their shuffled training loader, so the training set is visited in a fresh
        seeded permutation per epoch (from ``(seed, epoch)``, so a resumed run repeats it) with
        augmentation seeded per sample. Under DDP each process takes a strided share of that
        permutation, and afterwards every process takes process 0's module buffers, so BatchNorm
        does not diverge across processes. Per-bucket sums are accumulated batch by batch (no
        N x D feature matrix is kept) and, under DDP, summed over the processes' shards, so every
        process gets the statistics of each training sample counted once.
        """
        if self.fds is None or epoch < self.cfg.method.fds.start_update:
            return
        faithful = self.cfg.method.faithful
        if faithful:
            self.set_train_mode()
            order = KeyedSampler(ShuffledShard(len(self.data.train), self.cfg.seed, get_rank(), get_world_size()),
                                 self.cfg.seed, stream=1)
            order.set_epoch(epoch)
            loader = make_loader(self.cfg, SeededItems(self.data.train), self.data, sampler=order)
        else:
            self.model.eval()
            loader = sharded_loader(self.cfg, self.data.train_plain, self.data)
        totals = None
        for inputs, targets, _ in tqdm(loader, desc="FDS statistics", leave=False,
                                       disable=not (self.cfg.logging.progress and self.main)):
            targets = targets.to(self.device)
            with autocast(self.cfg, self.device):
                _, features = self.model(to_device(inputs, self.device), targets, epoch)
            batch = self.fds.bucket_statistics(features.float(), targets)
            totals = batch if totals is None else tuple(t + b for t, b in zip(totals, batch))
        totals = tuple(all_reduce_sum(t) for t in totals)
        self.fds.update_last_epoch_stats(epoch)
        self.fds.update_from_totals(*totals, epoch)  # keeps the stale-epoch guard (RRT stage 2)
        if faithful:
            broadcast_buffers(self.module)

    # -- validation and checkpoints ---------------------------------------------------------------

    def evaluate_split(self, split: str) -> tuple[dict, np.ndarray, np.ndarray, dict | None]:
        """Metrics, predictions and labels over ``split``, and the feature diagnostics when enabled.

        The diagnostics use a subset of the split fixed at the first call, so that every
        validation of the run measures the same samples (main process only; None elsewhere).
        """
        cfg, dataset = self.cfg, getattr(self.data, split)
        if not cfg.logging.diagnostics:
            return (*evaluate(self.model, dataset, self.data, cfg, self.device, split), None)
        preds, labels, features = predict(self.model, dataset, self.data, cfg, self.device, split, with_features=True)
        diagnostics = None
        if self.main:
            if split not in self.diagnostics:
                self.diagnostics[split] = FeatureDiagnostics.for_run(labels, cfg)
            diagnostics = self.diagnostics[split](features)
        return region_metrics(preds, labels, self.data, cfg), preds, labels, diagnostics

    def validate(self, epoch: int, train_metrics: dict) -> dict:
        cfg, st = self.cfg, self.state
        metrics, preds, labels, diagnostics = self.evaluate_split("val")
        st.validations += 1
        value = metrics["all"][self.select_by]
        st.val_history.append(value)
        improved = value < st.best_metric
        if improved:
            st.best_metric, st.best_epoch, st.bad_validations = value, epoch, 0
            self.save({"model": self.module.state_dict(), "config": to_dict(cfg), "epoch": epoch,
                       "step": st.global_step, "val": metrics}, "best.pt")
        else:
            st.bad_validations += 1
        if not self.main:
            return metrics
        record = {"epoch": epoch, "step": st.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                  "train": train_metrics, "val": metrics, "best": improved}
        if diagnostics is not None:
            record["val_diagnostics"] = diagnostics
            logger.info("epoch %d val features: %s", epoch, diagnostics_line(diagnostics))
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
            for name, v in train_metrics.items():  # on the global step, as train/* and val_*/*, so that they overlay
                if self.term_in_use(name):
                    self.writer.add_scalar(f"train_epoch/{name}", v, st.global_step)
            for name, v in (diagnostics or {}).items():
                if v is not None:
                    self.writer.add_scalar(f"val_features/{name}", v, st.global_step)
            self.writer.add_figure("val/per_label_error", _per_label_figure(preds, labels, self.data), st.global_step)
        return metrics

    def validation_step(self, epoch: int, train_metrics: dict) -> bool:
        """Validate, step the plateau LR scheduler with the result, and say whether to stop."""
        metrics = self.validate(epoch, train_metrics)
        if self.plateau is not None:
            self.plateau.step(metrics["all"][self.select_by])
        return self.should_stop()

    def should_stop(self) -> bool:
        s, st = self.cfg.schedule, self.state
        if s.patience and s.stop_rule == "no_new_best" and st.bad_validations >= s.patience:
            logger.info("stopping: %d validations without improvement", st.bad_validations)
            st.stopped_early = True
        if s.patience and s.stop_rule == "worst_of_window" and worst_of_window(st.val_history, s.patience):
            logger.info("stopping: the latest validation is the worst of the last %d", s.patience + 1)
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
                self.validation_step(epoch, train_metrics)
            self.scheduler.step()
            st.epoch = epoch + 1
            self.save(self.checkpoint(), "last.pt")
            logger.debug("epoch %d took %.1fs", epoch, time.time() - start)
        barrier()  # best.pt is complete before any process reads it

    def test(self) -> dict:
        """Test metrics of ``best.pt``, written to ``results.json`` in the layout of ``shot_metrics``."""
        best_path = self.run_dir / "checkpoints" / "best.pt"
        best = load_checkpoint(best_path)
        load_state_strict(self.module, best["model"], best_path)
        metrics, preds, labels, diagnostics = self.evaluate_split("test")
        results = {"name": self.cfg.name, "split": "test", "best_epoch": best["epoch"],
                   "select_by": self.select_by, "metrics": metrics}
        if diagnostics is not None:
            results["diagnostics"] = diagnostics
        if self.main:
            (self.run_dir / "results.json").write_text(json.dumps(results, indent=2))
            if self.writer is not None:
                self.writer.add_figure("test/per_label_error", _per_label_figure(preds, labels, self.data),
                                       self.state.global_step)
        return results


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _histogram_figure(data: DataBundle):
    from ranksim.evaluation.plots import label_histogram_figure
    return label_histogram_figure(data.train_labels, data.binning)


def _per_label_figure(preds, labels, data: DataBundle):
    from ranksim.evaluation.plots import per_label_error_figure
    return per_label_error_figure({"val": per_label_errors(preds, labels, binning=data.binning)},
                                  data.train_labels, data.binning)
