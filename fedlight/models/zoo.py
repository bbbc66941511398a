"""Model registry: the paper's ConvNet and torchvision CNNs adapted to our inputs.

torchvision models are built with ``weights=None`` (random init): nothing is
downloaded, unlike the Flower port of FedDefender. torchvision is imported only
when one is built: importing it costs every client actor ~1.2 s of start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedlight.models.convnet import ConvNet

MODELS = ("convnet", "resnet18", "resnet34", "resnet50", "densenet121", "vgg16")


def _first_conv_to(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` that reads ``in_channels`` channels (random init)."""
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )


def _resnet(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision

        factory = getattr(torchvision.models, name)
        model = factory(weights=None, num_classes=num_classes)
        model.conv1 = _first_conv_to(model.conv1, in_channels)
        return model

    return build


def _densenet121(num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    model = torchvision.models.densenet121(weights=None, num_classes=num_classes)
    model.features.conv0 = _first_conv_to(model.features.conv0, in_channels)
    return model


def _vgg16(num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    model = torchvision.models.vgg16(weights=None, num_classes=num_classes)
    model.features[0] = _first_conv_to(model.features[0], in_channels)
    return model


_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "convnet": lambda num_classes, in_channels: ConvNet(num_classes, in_channels),
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "densenet121": _densenet121,
    "vgg16": _vgg16,
}


def build_model(name: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Build a randomly initialised classifier by registry name."""
    if name not in _BUILDERS:
        raise ValueError(f"model.name={name!r} is not one of {', '.join(MODELS)}")
    return _BUILDERS[name](num_classes, in_channels)
