"""Small backbones built from a task's input shape, and classifier heads.

``featurizer(input_shape)`` picks a small CNN for images up to 64 pixels, a
1-D CNN for signals, an MLP for flat vectors, and torchvision's ResNet for
larger images (weights are never downloaded; a local checkpoint can be
loaded). Every featurizer exposes ``n_outputs``, the width of its feature vector.
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


def small_cnn(channels: int, width: int = 64, size: int = 16) -> Featurizer:
    """Conv blocks with batch norm, then global average pooling (for <= 64 px).

    Three blocks for 16-pixel images; one more stride-2 block per doubling of
    ``size`` beyond 16, so every size pools the same 4 x 4 grid whose units see
    the same fraction of the image (on 32-pixel shapes this doubles ERM's
    accuracy at equal steps: a global shape needs more than local texture).
    """
    extra = max(0, math.ceil(math.log2(max(size, 16) / 16)))
    deeper = [layer for _ in range(extra) for layer in (
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())]
    return Featurizer(
        nn.Conv2d(channels, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(),
        nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        *deeper, nn.AdaptiveAvgPool2d(1), nn.Flatten(), n_outputs=width)


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


def resnet(depth: int, weights: str | None = None) -> Featurizer:
    """torchvision's ResNet-18/50 without its head; never downloads anything.

    ``weights`` is the path of a local checkpoint (e.g. torchvision's
    ``resnet50-*.pth`` ImageNet file the user fetched): a state dict, or a dict
    holding one under ``state_dict`` or ``model``; ``module.`` prefixes and the
    ``fc`` head are dropped, every other key must match.
    """
    import torchvision

    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    n_outputs = net.fc.in_features
    net.fc = nn.Identity()
    if weights is not None:
        load_weights(net, weights)
    return Featurizer(net, n_outputs=n_outputs)


def load_weights(net: nn.Module, path: str) -> None:
    """Load a local checkpoint into ``net`` (head keys ``fc.*`` ignored); errors name the file."""
    from pathlib import Path

    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"weights file '{file}' does not exist; give the path of a local "
                          f"checkpoint (xbench never downloads weights)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"weights file '{file}' could not be read ({type(exc).__name__}); "
                          f"give a torch.save'd state dict") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape
        first = str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(f"weights file '{file}' does not fit this network ({first}); is it "
                          f"the right ResNet depth?") from None
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys or result.unexpected_keys)[:3]
        raise ConfigError(f"weights file '{file}' does not fit this network: "
                          f"{len(result.missing_keys)} missing and {len(result.unexpected_keys)} "
                          f"unexpected keys (e.g. {bad}); is it the right ResNet depth?")


def featurizer(input_shape: tuple[int, ...], arch: str = "auto",
               weights: str | None = None, width: int | None = None) -> Featurizer:
    """A feature extractor suited to ``input_shape`` (or the named ``arch``).

    ``weights``: a local checkpoint for a ResNet (see ``resnet``); methods pass
    a task's wishes on as ``featurizer(info.input_shape, **info.backbone)``.
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
    if weights is not None and not arch.startswith("resnet"):
        raise ConfigError(f"weights '{weights}' given for arch '{arch}'; only resnet18 and "
                          f"resnet50 load checkpoints (set arch = \"resnet50\")")
    if arch == "cnn":
        return small_cnn(input_shape[0], size=max(input_shape[1:]), **sized)
    if arch == "cnn1d":
        return small_cnn1d(input_shape[0], **sized)
    if arch == "mlp":
        return mlp(math.prod(input_shape), **sized)
    return resnet(int(arch.removeprefix("resnet")), weights)


def classifier(n_features: int, num_classes: int) -> nn.Linear:
    """A linear classification head."""
    return nn.Linear(n_features, num_classes)
