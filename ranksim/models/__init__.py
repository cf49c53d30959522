"""Models, built by name: ``resnet50`` (SPEC 7), ``resnet_small`` (quick start), ``bilstm`` (STS-B).

Every model maps ``(inputs, targets=None, epoch=None)`` to ``(prediction (B, 1), features (B, D))``;
``targets`` and ``epoch`` are only used by FDS in training mode. Every model exposes its FDS module
(or ``None``) as ``model.fds``.
"""

from __future__ import annotations

from torch import nn

from ranksim.config import Config
from ranksim.methods.fds import FDS

MODELS = ("resnet50", "resnet_small", "bilstm")


def feature_dim(cfg: Config) -> int:
    m = cfg.model
    return {"resnet50": 2048, "resnet_small": 4 * m.width, "bilstm": 8 * m.hidden_size}[m.name]


def build_fds(cfg: Config, binning: str) -> FDS | None:
    f = cfg.method.fds
    if not f.enabled:
        return None
    return FDS(feature_dim(cfg), bucket_num=f.bucket_num, bucket_start=f.bucket_start,
               start_update=f.start_update, start_smooth=f.start_smooth, kernel=f.kernel, ks=f.ks,
               sigma=f.sigma, momentum=f.momentum, clip_min=f.clip_min, clip_max=f.clip_max,
               binning=binning, faithful=cfg.method.faithful)


def build_model(cfg: Config, binning: str = "age", vocab_size: int = 0, embeddings=None) -> nn.Module:
    """The model named by ``cfg.model.name``; an unknown name lists the valid ones."""
    name = cfg.model.name
    fds = build_fds(cfg, binning)
    if name == "resnet50":
        from ranksim.models.resnet import resnet50_regressor
        return resnet50_regressor(fds)
    if name == "resnet_small":
        from ranksim.models.resnet import small_resnet_regressor
        return small_resnet_regressor(cfg.model.width, fds)
    if name == "bilstm":
        from ranksim.models.bilstm import BiLSTMRegressor
        return BiLSTMRegressor(vocab_size, hidden_size=cfg.model.hidden_size, num_layers=cfg.model.num_layers,
                               dropout=cfg.model.dropout, embeddings=embeddings,
                               freeze_embeddings=cfg.model.freeze_embeddings, fds=fds)
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
