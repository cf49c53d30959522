"""ResNet regressors for age: the paper's ResNet-50 (SPEC 7) and a narrow one for the quick start.

Both return ``(prediction (B, 1), features (B, D))`` through :class:`RegressionHead`, which holds
FDS. They are trained from scratch with the DIR authors' initialisation: conv weights
``N(0, sqrt(2 / (k * k * out_channels)))``, BatchNorm weight 1 and bias 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import BasicBlock

from ranksim.methods.fds import FDS
from ranksim.models.head import RegressionHead


def init_from_scratch(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetRegressor(nn.Module):
    """An encoder that maps ``(B, 3, H, W)`` to ``(B, D)`` features, then the regression head."""

    def __init__(self, encoder: nn.Module, feature_dim: int, fds: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.head = RegressionHead(feature_dim, fds)
        init_from_scratch(self.encoder)

    @property
    def fds(self) -> FDS | None:
        """The head's FDS module, or ``None``: the training loop's one handle on FDS."""
        return self.head.fds

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None, epoch: int | None = None):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return self.head(self.encoder(images), targets, epoch)


def resnet50_regressor(fds: nn.Module | None = None) -> ResNetRegressor:
    """torchvision's ResNet-50 topology, no pretrained weights, 2048-d pooled features."""
    encoder = resnet50(weights=None)
    encoder.fc = nn.Identity()
    return ResNetRegressor(encoder, 2048, fds)


def small_resnet_regressor(width: int = 16, fds: nn.Module | None = None) -> ResNetRegressor:
    """A CIFAR-style ResNet (3x3 stem, three stages of one BasicBlock, widths w, 2w, 4w).

    Small enough to train on a CPU in under a minute on 32 px images; used by the quick start and the
    tests, where ResNet-50 would take hours.
    """
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    channels = width
    for stage in range(3):
        out = width * 2**stage
        stride = 1 if stage == 0 else 2
        downsample = None
        if stride != 1 or channels != out:
            downsample = nn.Sequential(nn.Conv2d(channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        layers.append(BasicBlock(channels, out, stride=stride, downsample=downsample))
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return ResNetRegressor(nn.Sequential(*layers), channels, fds)
