"""Predictions and metrics of a model over a dataset, as validation, testing and ``evaluate.py``
compute them (SPEC 5, 8)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ranksim.config import Config
from ranksim.data.build import DataBundle
from ranksim.distributed import gather_shards, is_main_process
from ranksim.engine.build import sharded_loader
from ranksim.evaluation.metrics import shot_metrics, shot_metrics_sts_b


def to_device(inputs, device: torch.device):
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(x, device) for x in inputs)
    return inputs.to(device, non_blocking=True)


def autocast(cfg: Config, device: torch.device):
    """Mixed-precision context of ``cfg.precision`` (a no-op for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def selection_metric(cfg: Config) -> str:
    if cfg.schedule.select_by != "auto":
        return cfg.schedule.select_by
    return "mse" if cfg.method.loss in ("mse", "focal_mse", "bmse") else "mae"


@torch.no_grad()
def predict(model: nn.Module, dataset, data: DataBundle, cfg: Config, device: torch.device,
            desc: str = "eval", with_features: bool = False):
    """Predictions (float64) and labels (in the dataset's float32) over ``dataset``, ``(N,)`` arrays.

    With ``with_features``, also the features the model returns beside its predictions (the
    encoder output; FDS does not smooth in eval mode), a float32 CPU tensor ``(N, D)``.

    Labels keep their float32 values: widening float32(2.6) to float64 gives 2.5999999, which
    falls in STS-B bin 25 instead of 26 (ranksim.methods.binning compares in the labels' own precision).

    Under DDP each process predicts its shard and the shards are gathered back into dataset
    order, so every process gets the single-process arrays.
    """
    model.eval()
    preds, labels, features = [], [], []
    loader = sharded_loader(cfg, dataset, data)
    for inputs, targets, _ in tqdm(loader, desc=desc, leave=False, disable=not (cfg.logging.progress and is_main_process())):
        with autocast(cfg, device):
            pred, feature = model(to_device(inputs, device))
        preds.append(pred.float().reshape(-1) * data.target_scale)
        labels.append(targets.to(device).reshape(-1).float())
        if with_features:
            features.append(feature.detach().flatten(1).float())
    preds = gather_shards(torch.cat(preds), len(dataset)).double().cpu().numpy()
    labels = gather_shards(torch.cat(labels), len(dataset)).cpu().numpy()
    if not with_features:
        return preds, labels
    return preds, labels, gather_shards(torch.cat(features), len(dataset)).cpu()


def region_metrics(preds: np.ndarray, labels: np.ndarray, data: DataBundle, cfg: Config) -> dict:
    if data.binning == "sts_b":
        return shot_metrics_sts_b(preds, labels)
    return shot_metrics(preds, labels, data.train_labels)


def evaluate(model: nn.Module, dataset, data: DataBundle, cfg: Config, device: torch.device,
             desc: str = "eval") -> tuple[dict, np.ndarray, np.ndarray]:
    preds, labels = predict(model, dataset, data, cfg, device, desc)
    return region_metrics(preds, labels, data, cfg), preds, labels
