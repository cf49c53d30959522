"""RankSim and the DIR benchmark methods (LDS, FDS) as one tested library.

The package is laid out by role, each layer importing only those below it (tests/test_imports.py):
``errors``, ``config`` and ``distributed`` under everything; ``methods/`` (binning, ranking,
RankSim, LDS, FDS, losses, Balanced MSE, ConR: device- and dtype-agnostic maths); ``models/``,
``data/`` and ``evaluation/`` (metrics, feature diagnostics, plots); ``engine/`` (the training
loop and what it builds); ``results/`` (finished runs read back, the tables); ``tools/`` (the
sweep runner, the checkpoint converter).

The public API, for use in one's own model and training loop (see the README's "Use it in your
own training loop"), is the names of :data:`__all__`, imported from the top of the package::

    import ranksim
    loss = task_loss + gamma * ranksim.batchwise_ranking_regularizer(features, targets, lam)

These names are stable: modules may move, the names stay. Each one is loaded on first use, so
``import ranksim`` costs nothing and a name pulls in only its own module (torch, numpy, scipy),
never the pipeline's TensorBoard, pandas or NLTK.
"""

import importlib

__version__ = "0.1.0"

# Public name -> (module, attribute there). Where the module name is a generic one (``l1``), the
# public name says what it is, as the DIR authors' own ``weighted_l1_loss`` does.
_PUBLIC = {
    # RankSim (Gong, Mori, Tung, ICML 2022)
    "batchwise_ranking_regularizer": ("ranksim.methods.regularizer", "batchwise_ranking_regularizer"),
    # Re-weighting and LDS, FDS, weighted losses (Yang et al., ICML 2021)
    "prepare_weights": ("ranksim.methods.lds", "prepare_weights"),
    "FDS": ("ranksim.methods.fds", "FDS"),
    "weighted_mse_loss": ("ranksim.methods.losses", "mse"),
    "weighted_l1_loss": ("ranksim.methods.losses", "l1"),
    "weighted_huber_loss": ("ranksim.methods.losses", "huber"),
    "weighted_focal_l1_loss": ("ranksim.methods.losses", "focal_l1"),
    "weighted_focal_mse_loss": ("ranksim.methods.losses", "focal_mse"),
    "get_loss": ("ranksim.methods.losses", "get_loss"),
    # Balanced MSE (Ren et al., CVPR 2022) and ConR (Keramati et al., ICLR 2024)
    "BalancedMSELoss": ("ranksim.methods.balanced_mse", "BalancedMSELoss"),
    "bmc_loss": ("ranksim.methods.balanced_mse", "bmc_loss"),
    "conr_loss": ("ranksim.methods.conr", "conr_loss"),
    # Shot-region metrics of the DIR benchmarks
    "shot_metrics": ("ranksim.evaluation.metrics", "shot_metrics"),
    "shot_metrics_sts_b": ("ranksim.evaluation.metrics", "shot_metrics_sts_b"),
    "shot_regions": ("ranksim.evaluation.metrics", "shot_regions"),
    "shot_regions_sts_b": ("ranksim.evaluation.metrics", "shot_regions_sts_b"),
}

# The pipeline's entry points, also importable from the top (``from ranksim import build_model,
# load_config``). Not in __all__: they need the ``train`` extra (PyYAML), and ``import *`` of the
# library must work with torch, numpy and scipy alone.
_PIPELINE = {
    "load_config": ("ranksim.config", "load_config"),
    "build_model": ("ranksim.models", "build_model"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    # PEP 562: resolve a public name on first access, then cache it as a plain module attribute.
    if name not in _PUBLIC and name not in _PIPELINE:
        raise AttributeError(f"module 'ranksim' has no attribute {name!r}")
    module, attribute = _PUBLIC.get(name) or _PIPELINE[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | set(_PIPELINE))
