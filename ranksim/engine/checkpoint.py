"""The state a run resumes from: what ``last.pt`` holds beside the model and optimiser, the checks
that a run folder may be resumed, and the RRT stage-1 encoder that stage 2 starts from."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ranksim.config import Config, config_from_dict
from ranksim.data.files import sha256_of
from ranksim.engine.identity import RESULTS_VERSION, read_identity, version_mismatch
from ranksim.engine.runs import checkpoint_file, load_checkpoint, load_state_strict
from ranksim.errors import UserError

logger = logging.getLogger("ranksim.engine")


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
    val_history: list = field(default_factory=list)  # every validation's select_by value (stop rule)


def load_rrt_stage1(model: nn.Module, cfg: Config, trust_checkpoint: bool = False) -> dict:
    """RRT stage 2: the stage-1 encoder (and FDS statistics), a fresh regressor, frozen encoder.

    ``trust_checkpoint`` (train.py --trust-checkpoint) allows full unpickling of the stage-1 file.
    Returns which file was loaded and its SHA-256, which the run keeps in ``stage1.json`` so that
    the reproduce scripts can tell when stage 1 was trained again after this run loaded it.
    """
    source = Path(cfg.method.rrt.stage1)
    checkpoint = load_checkpoint(source, trust=trust_checkpoint)
    path = checkpoint_file(source).resolve()
    loaded = {"checkpoint": str(path), "sha256": sha256_of(path)}
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith("head.linear.")}
    fresh = {k: v for k, v in model.state_dict().items() if k.startswith("head.linear.")}
    load_state_strict(model, {**state, **fresh}, source)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("head.linear.")
    logger.info("RRT: loaded the stage-1 encoder from %s; training only the regressor", source)
    return loaded


def check_resumable(run_dir: Path, data: str | None) -> None:
    """Refuse to continue a run of older code, or on other data: its two halves would not be one run."""
    identity = read_identity(run_dir)
    mismatch = version_mismatch(identity)
    if mismatch:
        raise UserError(f"{run_dir} was {mismatch} and this code is version {RESULTS_VERSION}; a resumed run "
                        "would mix the two, so start it again in a new folder")
    if identity.data and data and identity.data != data:
        raise UserError(f"{run_dir} was started on other data (split fingerprint {identity.data}, now {data}); "
                        "resume it on the data it started with, or start a new run")


def drop_records_after(path: Path, validations: int) -> None:
    """Keep the first ``validations`` lines of ``metrics.jsonl``: those of the checkpoint resumed from.

    A run killed after a validation but before its next ``last.pt`` wrote lines that the resumed
    run writes again; without this they would appear twice.
    """
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > validations:
        logger.info("%s: dropping %d validation line(s) written after the checkpoint", path, len(lines) - validations)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(lines[:validations]))
        os.replace(tmp, path)


def config_of_checkpoint(checkpoint: dict, source) -> Config:
    try:
        return config_from_dict(checkpoint["config"], f"config stored in {source}")
    except KeyError:
        raise UserError(f"{source} holds no config; it was not written by this repository's train.py") from None
