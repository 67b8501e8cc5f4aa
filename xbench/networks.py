"""Small backbones built from a task's input shape, and classifier heads.

``featurizer(input_shape)`` picks a small CNN for images up to 64 pixels, a
1-D CNN for signals, an MLP for flat vectors, and torchvision's ResNet for
larger images (weights are never downloaded). Every featurizer exposes
``n_outputs``, the width of its feature vector.
"""

from __future__ import annotations

import math

from torch import nn

from xbench.errors import ConfigError

ARCHS = ("auto", "cnn", "cnn1d", "mlp", "resnet18", "resnet50")


class Featurizer(nn.Sequential):
    """An ``nn.Sequential`` that knows the width of its output features."""

    def __init__(self, *layers: nn.Module, n_outputs: int):
        super().__init__(*layers)
        self.n_outputs = n_outputs


def small_cnn(channels: int, width: int = 64) -> Featurizer:
    """Three conv blocks with batch norm, then global average pooling (for <= 64 px)."""
    return Featurizer(
        nn.Conv2d(channels, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(),
        nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), n_outputs=width)


def small_cnn1d(channels: int, width: int = 64) -> Featurizer:
    """The 1-D counterpart of ``small_cnn``, for signals shaped (channels, length)."""
    return Featurizer(
        nn.Conv1d(channels, width // 2, 5, padding=2), nn.BatchNorm1d(width // 2), nn.ReLU(),
        nn.Conv1d(width // 2, width, 5, stride=2, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Conv1d(width, width, 5, stride=2, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), n_outputs=width)


def mlp(n_inputs: int, width: int = 128) -> Featurizer:
    """Two hidden layers with batch norm, for flat feature vectors."""
    return Featurizer(
        nn.Flatten(), nn.Linear(n_inputs, width), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), n_outputs=width)


def resnet(depth: int) -> Featurizer:
    """torchvision's ResNet-18/50 without its head and without downloaded weights."""
    import torchvision

    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    n_outputs = net.fc.in_features
    net.fc = nn.Identity()
    return Featurizer(net, n_outputs=n_outputs)


def featurizer(input_shape: tuple[int, ...], arch: str = "auto",
               width: int | None = None) -> Featurizer:
    """A feature extractor suited to ``input_shape`` (or the named ``arch``).

    ``width`` sets the small networks' width (feature size) instead of their
    default, e.g. for a distilled student smaller than its teacher; ResNets
    ignore it.
    """
    sized = {} if width is None else {"width": int(width)}
    if arch not in ARCHS:
        raise ConfigError(f"unknown network arch '{arch}'; choose one of {', '.join(ARCHS)}")
    if arch == "auto":
        if len(input_shape) == 3:
            arch = "cnn" if max(input_shape[1:]) <= 64 else "resnet18"
        elif len(input_shape) == 2:
            arch = "cnn1d"
        else:
            arch = "mlp"
    if arch == "cnn":
        return small_cnn(input_shape[0], **sized)
    if arch == "cnn1d":
        return small_cnn1d(input_shape[0], **sized)
    if arch == "mlp":
        return mlp(math.prod(input_shape), **sized)
    return resnet(int(arch.removeprefix("resnet")))


def classifier(n_features: int, num_classes: int) -> nn.Linear:
    """A linear classification head."""
    return nn.Linear(n_features, num_classes)
