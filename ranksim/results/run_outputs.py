"""Reading a finished run back: its model and data, its outputs over a split, saved features, and
the per-label and rank-correlation plots.

``evaluate.py --per-label --plots --save-features --compare`` only parses its options and calls
the functions here and the measures of :mod:`ranksim.evaluation.diagnostics`.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ranksim.data.build import build_data
from ranksim.data.files import atomic_write
from ranksim.engine.build import select_device
from ranksim.engine.checkpoint import config_of_checkpoint
from ranksim.engine.inference import predict
from ranksim.engine.runs import load_checkpoint, load_state_strict
from ranksim.errors import UserError
from ranksim.evaluation.diagnostics import per_label_mean, rank_similarity_correlation
from ranksim.evaluation.metrics import per_label_errors
from ranksim.models import build_model

logger = logging.getLogger("ranksim.analysis")


# ---------------------------------------------------------------------------------------------
# Model outputs over a split, and the features file


@dataclass
class SplitOutputs:
    """What a model gives over one split, in dataset order."""

    preds: np.ndarray                  # (N,) float64, label units
    labels: np.ndarray                 # (N,) float64
    features: np.ndarray | None = None  # (N, D) float32 (float16 when read from a float16 file)


def model_outputs(model: nn.Module, dataset, data, cfg, device: torch.device, with_features: bool = False,
                  desc: str = "eval") -> SplitOutputs:
    """Predictions, labels and (optionally) features of ``model`` over ``dataset``, in dataset order.

    The predictions come from :func:`ranksim.engine.inference.predict` itself, so they are exactly the ones
    of the evaluation metrics and ``results.json``; the features are what the model returns beside
    them (the encoder output before the regressor; FDS does not smooth in eval mode).
    """
    if not with_features:
        return SplitOutputs(*predict(model, dataset, data, cfg, device, desc))
    preds, labels, features = predict(model, dataset, data, cfg, device, desc, with_features=True)
    return SplitOutputs(preds, labels, features.numpy())


FEATURES_DTYPES = ("float32", "float16")


def save_features(path: Path, outputs: SplitOutputs, split: str, checkpoint_id: dict,
                  dtype: str = "float32") -> Path:
    """Write ``features_<split>.npz``: features (``dtype``), labels, preds, and which checkpoint made them.

    ``checkpoint_id`` (``{'checkpoint': name, 'epoch': int, 'step': int}``) lets a later
    :func:`load_features` tell whether the file still belongs to the checkpoint. Written to a
    temporary file and renamed.
    """
    if dtype not in FEATURES_DTYPES:
        raise ValueError(f"dtype must be one of {FEATURES_DTYPES}, got {dtype!r}")
    path = Path(path)
    atomic_write(path, lambda f: np.savez(
        f, features=outputs.features.astype(dtype), labels=outputs.labels, preds=outputs.preds,
        split=np.array(split), checkpoint=np.array(str(checkpoint_id.get("checkpoint"))),
        epoch=np.array(-1 if checkpoint_id.get("epoch") is None else checkpoint_id["epoch"]),
        step=np.array(-1 if checkpoint_id.get("step") is None else checkpoint_id["step"])))
    return path


def load_features(path: Path, split: str, checkpoint_id: dict,
                  split_labels: np.ndarray | None = None) -> SplitOutputs | None:
    """The outputs stored in ``path`` if it was made by this checkpoint on this split, else ``None``.

    A file of another split, checkpoint, epoch or step, or whose labels differ from
    ``split_labels`` (the split changed), is stale: it is logged and ignored.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        logger.warning("ignoring %s: cannot read it (%s)", path, err)
        return None
    expected = {"split": split, "checkpoint": str(checkpoint_id.get("checkpoint")),
                "epoch": -1 if checkpoint_id.get("epoch") is None else checkpoint_id["epoch"],
                "step": -1 if checkpoint_id.get("step") is None else checkpoint_id["step"]}
    missing = {"features", "labels", "preds", *expected} - set(stored)
    if missing:
        logger.warning("ignoring %s: it lacks %s", path, ", ".join(sorted(missing)))
        return None
    found = {k: stored[k].item() for k in expected}
    if found != expected:
        logger.info("not reusing %s: it was made by %s, this is %s; recomputing", path, found, expected)
        return None
    if split_labels is not None and not np.array_equal(np.asarray(split_labels, np.float64).reshape(-1),
                                                       stored["labels"]):
        logger.info("not reusing %s: its labels differ from the %s split's; recomputing", path, split)
        return None
    logger.info("reusing the features in %s", path)
    return SplitOutputs(stored["preds"], stored["labels"], stored["features"])


def dataset_labels(dataset) -> np.ndarray | None:
    """The labels of a split's dataset without loading its inputs, when the dataset exposes them."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = getattr(getattr(dataset, "split", None), "labels", None)
    return None if labels is None else np.asarray(labels, dtype=np.float64).reshape(-1)


# ---------------------------------------------------------------------------------------------
# Loading runs for evaluation and comparison


@dataclass
class LoadedRun:
    """One run's model and data, ready to evaluate."""

    target: Path             # what the user gave: a run folder or a .pt file
    run_dir: Path
    checkpoint: dict
    cfg: object              # ranksim.config.Config
    data: object             # ranksim.data.build.DataBundle
    model: nn.Module
    device: torch.device

    @property
    def label(self) -> str:
        """The run's name in legends: its config title, else its config name."""
        return self.cfg.title or self.cfg.name

    @property
    def checkpoint_id(self) -> dict:
        return {"checkpoint": self.checkpoint_path.name, "epoch": self.checkpoint.get("epoch"),
                "step": self.checkpoint.get("step")}

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file, as ``ranksim.engine.runs.load_checkpoint`` resolves the target."""
        if not self.target.is_dir():
            return self.target
        folder = self.target / "checkpoints" if (self.target / "checkpoints").is_dir() else self.target
        return folder / "best.pt"

    def outputs(self, split: str, with_features: bool = False, reuse: Path | None = None) -> SplitOutputs:
        """Model outputs over ``split``; with ``reuse``, read them from that features file when it matches."""
        dataset = getattr(self.data, split)
        if reuse is not None:
            stored = load_features(reuse, split, self.checkpoint_id, dataset_labels(dataset))
            if stored is not None:
                return stored
        return model_outputs(self.model, dataset, self.data, self.cfg, self.device, with_features, split)


def run_dir_of(target: Path) -> Path:
    """The run folder of a run folder or of a checkpoint ``RUN/checkpoints/x.pt``."""
    target = Path(target)
    return target if target.is_dir() else target.resolve().parent.parent


def load_run(target: Path, device_name: str | None = None, data_root: str | None = None,
             expect_dataset: str | None = None, trust: bool = False) -> LoadedRun:
    """Checkpoint, config (the one stored in the checkpoint), data and model of a run.

    Raises ``UserError`` for a missing or foreign checkpoint, a checkpoint that does not match its
    config, and, with ``expect_dataset``, a run of another dataset (checked before any data is read).
    """

    target = Path(target)
    checkpoint = load_checkpoint(target, trust=trust)  # weights_only unless --trust-checkpoint
    cfg = config_of_checkpoint(checkpoint, target)
    if expect_dataset is not None and cfg.data.dataset != expect_dataset:
        raise UserError(f"{target} is a {cfg.data.dataset} run but the evaluated run is {expect_dataset}; "
                        "--compare needs runs of the same dataset")
    if data_root:
        cfg.data.root = data_root
    device = select_device(device_name or cfg.device)
    data = build_data(cfg)
    model = build_model(cfg, data.binning, data.vocab_size, data.embeddings).to(device)
    load_state_strict(model, checkpoint["model"], target)
    return LoadedRun(target, run_dir_of(target), checkpoint, cfg, data, model, device)


def load_compare_run(target: Path, reference: LoadedRun, split: str, device_name: str | None = None,
                     data_root: str | None = None, trust: bool = False) -> LoadedRun:
    """A run to draw beside ``reference``: finished enough to have a best checkpoint, same dataset and split."""
    target = Path(target)
    if not target.exists():
        raise UserError(f"--compare {target}: no such run folder or checkpoint")
    if target.is_dir() and not (target / "checkpoints" / "best.pt").is_file() and not (target / "best.pt").is_file():
        raise UserError(f"--compare {target}: no results to compare (no checkpoints/best.pt); "
                        "give a run folder whose training has validated at least once")
    if target.is_dir() and not (target / "results.json").is_file():
        logger.warning("%s has not finished (no results.json); comparing its current best.pt", target)
    run = load_run(target, device_name, data_root, expect_dataset=reference.cfg.data.dataset, trust=trust)
    ours, theirs = dataset_labels(getattr(run.data, split)), dataset_labels(getattr(reference.data, split))
    if ours is not None and theirs is not None and not np.array_equal(ours, theirs):
        raise UserError(f"--compare {target}: its {split} split differs from that of {reference.target} "
                        f"({len(ours)} vs {len(theirs)} samples, or other labels); compare runs on the same data")
    return run


def legend_labels(runs: list[LoadedRun]) -> list[str]:
    """Each run's title (or name); runs that would share one get their folder name added."""
    labels = [run.label for run in runs]
    return [f"{label} ({run.run_dir.name})" if labels.count(label) > 1 else label for label, run in zip(labels, runs)]


# ---------------------------------------------------------------------------------------------
# Plots


def write_plots(plot_dir: Path, curves: dict[str, SplitOutputs], train_labels: np.ndarray, binning: str,
                split: str) -> list[Path]:
    """The figures of ``evaluate.py --plots`` as PNGs in ``plot_dir``; returns their paths.

    ``curves`` maps a legend label to that run's outputs on ``split`` (the evaluated run first);
    every run needs its features for ``rank_correlation.png``.

    - ``label_histogram.png``: training labels per bin, shot regions shaded.
    - ``per_label_mae.png``, ``per_label_mse.png``: error per label bin, one curve per run.
    - ``rank_correlation.png``: mean per label bin of :func:`rank_similarity_correlation`, one
      curve per run.
    """
    import matplotlib.pyplot as plt

    from ranksim.evaluation.plots import label_histogram_figure, per_label_error_figure, rank_correlation_figure

    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    errors = {name: per_label_errors(o.preds, o.labels, binning=binning) for name, o in curves.items()}
    correlations = {name: per_label_mean(rank_similarity_correlation(o.features, o.labels), o.labels, binning)
                    for name, o in curves.items()}
    figures = {"label_histogram.png": label_histogram_figure(train_labels, binning)}
    for metric in ("mae", "mse"):
        figures[f"per_label_{metric}.png"] = per_label_error_figure(errors, train_labels, binning, metric,
                                                                    title=f"Per-label {metric.upper()} ({split} split)")
    figures["rank_correlation.png"] = rank_correlation_figure(correlations, train_labels, binning, split)
    written = []
    for name, fig in figures.items():
        atomic_write(plot_dir / name, lambda fh, fig=fig: fig.savefig(fh, dpi=120, format="png"))
        plt.close(fig)
        written.append(plot_dir / name)
    return written
