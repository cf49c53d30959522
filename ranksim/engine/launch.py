"""One run from start (or resume) to its test results: the entry that ``train.py`` calls.

It builds the :class:`~ranksim.engine.loop.Trainer` before the run folder exists, records what the
run is (:mod:`ranksim.engine.identity`), opens TensorBoard, fits, tests ``best.pt`` and logs the
run's hyperparameters beside its final metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch

from ranksim.config import Config, get_key
from ranksim.distributed import is_main_process
from ranksim.engine.checkpoint import check_resumable, drop_records_after
from ranksim.engine.identity import STAGE1_FILE, TRAINED, data_fingerprint, write_identity
from ranksim.engine.loop import Trainer
from ranksim.engine.runs import load_checkpoint

logger = logging.getLogger("ranksim.engine")


def run_training(cfg: Config, run_dir: Path | Callable[[], Path], device: torch.device,
                 resume: bool = False, trust_checkpoint: bool = False) -> dict:
    """Train (or resume) the run in ``run_dir``, test its best checkpoint, return the results.

    ``run_dir`` may also be a function that creates the run folder and returns it. It is called
    once the data and model are built, so a run that fails before (a missing data folder, a bad
    split file, a missing RRT stage 1) leaves no folder behind.

    ``trust_checkpoint`` (train.py --trust-checkpoint) lets ``last.pt`` and the RRT stage-1
    checkpoint be read with full unpickling; otherwise they are read with ``weights_only=True``.
    """
    trainer = Trainer(cfg, None, device, trust_checkpoint=trust_checkpoint)
    if callable(run_dir):
        run_dir = run_dir()
    data = data_fingerprint(cfg)
    purge_step = None
    if resume:
        last = run_dir / "checkpoints" / "last.pt"
        trainer.restore(load_checkpoint(last, trust=trust_checkpoint), last)
        check_resumable(run_dir, data)
        purge_step = trainer.state.global_step
        if is_main_process():
            drop_records_after(run_dir / "metrics.jsonl", trainer.state.validations)
    writer = None
    if cfg.logging.tensorboard and is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: the events that a killed run logged after its last checkpoint are dropped,
        # so that TensorBoard shows each step once after a resume.
        writer = SummaryWriter(str(run_dir), purge_step=purge_step)
    trainer.run_dir, trainer.writer = run_dir, writer
    if not resume and is_main_process():
        write_identity(run_dir, TRAINED, data)
        if trainer.rrt_stage1:
            (run_dir / STAGE1_FILE).write_text(json.dumps(trainer.rrt_stage1, indent=2))
    try:
        if resume:
            logger.info("resuming %s at epoch %d", run_dir, trainer.state.epoch)
        trainer.fit()
        results = trainer.test()
        if writer is not None:
            _log_hparams(writer, cfg, results)
        return results
    finally:
        if writer is not None:
            writer.close()


# The hparams every run logs, and the config key each one shows: a swept key of logging.hparams
# replaces the short name, so that the HParams tab does not list one value twice.
HPARAM_KEYS = {"reweight": "method.reweight", "lds": "method.lds.enabled", "fds": "method.fds.enabled",
               "ranksim": "method.ranksim.enabled", "rrt": "method.rrt.enabled", "loss": "method.loss",
               "lr": "optim.lr", "batch_size": "optim.batch_size", "ranksim_gamma": "method.ranksim.gamma",
               "conr_weight": "method.conr.weight", "bmse_variant": "method.bmse.variant"}


def _log_hparams(writer, cfg: Config, results: dict) -> None:
    m = cfg.method
    hparams = {"reweight": m.reweight, "lds": m.lds.enabled, "fds": m.fds.enabled, "ranksim": m.ranksim.enabled,
               "rrt": m.rrt.enabled, "loss": m.loss, "lr": cfg.optim.lr, "batch_size": cfg.optim.batch_size,
               "ranksim_gamma": m.ranksim.gamma if m.ranksim.enabled else 0.0,
               "conr_weight": m.conr.weight if m.conr.enabled else 0.0,
               "bmse_variant": m.bmse.variant if m.loss == "bmse" else "none"}
    hparams = {name: value for name, value in hparams.items() if HPARAM_KEYS[name] not in cfg.logging.hparams}
    for key in cfg.logging.hparams:  # the swept keys of scripts/sweep.py; lists are shown as text
        value = get_key(cfg, key)
        hparams[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    final = {f"hparam/{region}_{name}": v for region, values in results["metrics"].items() if values
             for name, v in values.items() if name in ("mae", "mse", "gm", "pearson") and v is not None}
    writer.add_hparams(hparams, final, run_name=".")
